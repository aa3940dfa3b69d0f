"""``kerascls predict``: the trained Keras model, a bundle, or a Ray cluster behind one CLI.

Every path writes through ``kerascls_edge`` — its listing, decoder, checkpoint journal
(``--resume``) and writers (MegaDetector JSON, CSV, Camtrap DP, ``--detections``) — so the
files are the ones ``kerascls-edge predict`` writes. Only the classifier changes:

- a bundle or ``.tflite``: the edge runtime as it is (LiteRT);
- a run directory or ``.keras`` file: :class:`KerasClassifier`, the Keras model in batches
  (the default device, every visible GPU when there are 2+, or ``--devices``: each batch is
  split over the replicas) on the pixels the device decoder makes, which is what the
  training and ``evaluate`` pipelines feed the model (``data/decode.py``);
- ``--engine ray``: :mod:`kerascls.ray_predict`, a pool of Ray actors each holding one model.

The Keras classifier itself is :mod:`kerascls.keras_classifier`, which both engines use.

Videos take the same path: ``kerascls_edge.video`` samples their frames (``--frame_every``,
``--max_frames``; unset, the bundle's or the device's defaults), the frames go through the
batches like photos (a chunk counts a video's frames, not one item), and the per-video result
and rows are the device's (``tests/test_video_keras_predict.py``).
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from kerascls.errors import UserError
from kerascls.keras_classifier import KerasClassifier, is_keras_model
from kerascls_edge.bundle import EdgeError

# -- flags and command ---------------------------------------------------------------------------

def define_flags(fv: flags.FlagValues, m: str) -> None:
    """`kerascls predict`'s flags (the kerascls-edge predict options, snake_case)."""
    def s(name, default, text, **kw):
        flags.DEFINE_string(name, default, text, flag_values=fv, module_name=m, **kw)

    def b(name, text):
        flags.DEFINE_bool(name, False, text, flag_values=fv, module_name=m)

    def i(name, default, text, lo=1):
        flags.DEFINE_integer(name, default, text, lower_bound=lo, flag_values=fv,
                             module_name=m)
    s("model", None, "Run directory or .keras file (the Keras model, batched), or a bundle "
                     "directory / .tflite file (kerascls-edge).")
    s("labels", None, "Labels file for a bare .tflite.")
    s("output", "results.json", "Results file (.json or .csv), or a folder with "
                                "--format=camtrapdp.")
    flags.DEFINE_enum("format", None, ["megadetector", "csv", "camtrapdp"],
                      "Output format; default from --output's extension (.csv or JSON).",
                      flag_values=fv, module_name=m)
    i("top_k", 5, "Classes kept per image.")
    i("threads", 1, "Interpreter threads (bundle); 1: one interpreter per decode thread, "
                    "which follow the cores (kerascls-edge predict's default).")
    i("batch_size", 64, "Images per Keras inference call (split over the --devices).")
    s("devices", "", "Keras model only: empty = every visible GPU (mirrored when 2+), "
                     "gpu, gpu:0,1, or cpu:N logical CPUs; each batch is split over them.")
    b("recursive", "Descend into folders.")
    s("detections", None, "MegaDetector output file: classify its animal boxes.")
    flags.DEFINE_float("detection_threshold", 0.2, "With --detections: classify boxes at or "
                       "above this confidence.", lower_bound=0.0, upper_bound=1.0,
                       flag_values=fv, module_name=m)
    b("resume", "Continue from the checkpoint of an interrupted run.")
    b("overwrite", "Discard an earlier checkpoint / replace an earlier output.")
    i("checkpoint_every", 100, "Write a checkpoint every N images.")
    b("keep_checkpoint", "Keep the <output>.partial checkpoint folder after success.")
    b("strict", "Treat truncated JPEGs as failures.")
    flags.DEFINE_float("frame_every", None, "Videos: seconds of video between sampled frames "
                       "(default: the bundle's, else 1.0).", lower_bound=1e-3, upper_bound=1e6,
                       flag_values=fv, module_name=m)
    flags.DEFINE_integer("max_frames", None, "Videos: most sampled frames per video "
                         "(default: the bundle's, else 32).", lower_bound=1, flag_values=fv,
                         module_name=m)
    flags.DEFINE_enum("engine", "local", ["local", "ray"], "local: this process; ray: a pool "
                      "of Ray actors (pip install 'kerascls[ray]').", flag_values=fv,
                      module_name=m)
    s("ray_address", None, "Ray cluster to join (host:port or ray://host:port); default: a "
                           "local Ray started for this run.")
    i("ray_workers", 1, "Ray actors, each holding one model.")
    flags.DEFINE_float("ray_gpus", 0.0, "GPUs per Ray actor (a Keras model on GPU workers).",
                       lower_bound=0.0, flag_values=fv, module_name=m)
    s("ray_model", None, "The model's path as the Ray workers see it (default: --model's "
                         "absolute path; a cluster's shared mount may differ).")
    flags.mark_flag_as_required("model", flag_values=fv)


def edge_argv(fl, images: Sequence[str]) -> list[str]:
    """The kerascls-edge predict command line for these flags."""
    argv = ["predict", fl.model, *images, "-o", fl.output, "--top_k", str(fl.top_k),
            "--checkpoint_every", str(fl.checkpoint_every)]
    argv += ["--format", fl.format] if fl.format else []
    argv += ["--labels", fl.labels] if fl.labels else []
    argv += ["--threads", str(fl.threads)] if fl.threads else []
    if fl.detections:
        argv += ["--detections", fl.detections, "--detection_threshold",
                 repr(fl.detection_threshold)]
    for name in ("frame_every", "max_frames"):  # unset: the device's default, whatever it is
        value = getattr(fl, name)
        argv += [f"--{name}", repr(value)] if value is not None else []
    for name in ("recursive", "resume", "overwrite", "keep_checkpoint", "strict"):
        argv += [f"--{name}"] if getattr(fl, name) else []
    return argv


class KerasBackend:
    """kerascls-edge's `predict` with the Keras model as its classifier."""

    prog = "kerascls"

    def __init__(self, batch_size: int, devices: str = "") -> None:
        self.batch_size = batch_size
        self.devices = devices

    def classifier(self, args):
        clf = KerasClassifier(args.bundle, self.batch_size, args.threads, self.devices)
        if self.devices or len(clf.devices) > 1:  # say where it runs when it is not implicit
            n = len(clf.devices)
            print(f"{self.prog}: predict: {n} replica{'s' * (n > 1)} ({', '.join(clf.devices)})",
                  file=sys.stderr)
        return clf

    def predict(self, clf, images, opts) -> dict:
        from kerascls_edge.runner import predict
        return predict(clf, images, opts)


def backend_for(fl):
    """None (the edge runtime as is), the Keras backend, or the Ray engine."""
    keras_model = is_keras_model(fl.model)
    check_devices(fl, keras_model)
    if fl.engine == "ray":
        from kerascls.ray_predict import RayBackend
        return RayBackend(keras_model=keras_model, batch_size=fl.batch_size,
                          address=fl.ray_address, workers=fl.ray_workers, gpus=fl.ray_gpus,
                          worker_model=fl.ray_model)
    return KerasBackend(fl.batch_size, fl.devices) if keras_model else None


def check_devices(fl, keras_model: bool) -> None:
    """``--devices`` parsed before any model loads; refused where it would do nothing (a
    bundle runs on LiteRT's CPU threads; each Ray actor on the GPUs ``--ray_gpus`` gives it),
    since a silently ignored device request makes a slow run look like a fast one."""
    from kerascls.training.distribute import parse_devices
    if not fl.devices:
        return
    parse_devices(fl.devices)
    if not keras_model:
        raise UserError(f"--devices={fl.devices}: only for a Keras model (a run directory or "
                        f".keras file); {fl.model} is a bundle, which runs on --threads CPU "
                        "threads")
    if fl.engine == "ray":
        raise UserError(f"--devices={fl.devices}: not with --engine ray (each actor uses the "
                        "GPUs --ray_gpus gives it)")


def run(fl, images: Sequence[str]) -> int:
    """`kerascls predict`: exit status of the edge CLI running with our backend."""
    if not images:
        raise UserError("predict needs at least one image file or folder")
    from kerascls_edge.cli import main as edge_main
    try:
        backend = backend_for(fl)
    except EdgeError as e:
        print(f"kerascls: error: {e}", file=sys.stderr)
        return 2
    return edge_main(edge_argv(fl, images), backend=backend)

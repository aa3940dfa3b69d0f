"""``kerascls predict``: the trained Keras model, a bundle, or a Ray cluster behind one CLI.

Every path writes through ``kerascls_edge`` — its listing, decoder, checkpoint journal
(``--resume``) and writers (MegaDetector JSON, CSV, Camtrap DP, ``--detections``) — so the
files are the ones ``kerascls-edge predict`` writes. Only the classifier changes:

- a bundle or ``.tflite``: the edge runtime as it is (LiteRT);
- a run directory or ``.keras`` file: :class:`KerasClassifier`, the Keras model in batches
  (``model.predict_on_batch``; GPU when present) on the pixels the device decoder makes,
  which is what the training and ``evaluate`` pipelines feed the model (``data/decode.py``);
- ``--engine ray``: :mod:`kerascls.ray_predict`, a pool of Ray actors each holding one model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from absl import flags

from kerascls_edge.bundle import EdgeError


def is_keras_model(path: str | Path) -> bool:
    """A run directory (model.keras inside) or a .keras file; else a bundle / .tflite."""
    p = Path(path)
    return p.suffix == ".keras" or (p.is_dir() and (p / "model.keras").is_file())


class KerasClassifier:
    """The `kerascls_edge.Classifier` interface over a trained Keras run.

    The spec is the run's model.json contract (what `export` would write), so decoding,
    crops, empty classes and labels match the bundle's; `predict_array` takes raw 0–255
    pixels and returns probabilities (a logits head gets its activation, a one-unit sigmoid
    head both columns, as the edge runtime reads it).
    """

    def __init__(self, model_path: str | Path, batch_size: int = 64,
                 threads: Optional[int] = None) -> None:
        from kerascls.data.decode import preprocess
        from kerascls.data.runs import task_of
        from kerascls.tflite.export import contract, load_run
        from kerascls.training.heads import probability_model
        from kerascls_edge.bundle import spec_from_json
        try:
            run = load_run(model_path)
        except FileNotFoundError as e:
            raise EdgeError(str(e)) from None
        meta = contract(run, "float32")
        self.spec = spec_from_json(run.path, meta, meta["class_names"])
        self.spec.dtype = "float32"
        self.labels = list(self.spec.labels)
        self.model = probability_model(run.model, task_of(run.config) if run.config else None)
        self.batch_size = int(batch_size)
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        self.preprocess = preprocess((self.spec.height, self.spec.width), self.spec.channels,
                                     self.spec.resize)
        units = int(self.model.output_shape[-1])
        if units != len(self.labels) and not (units == 1 and len(self.labels) == 2):
            raise EdgeError(f"{len(self.labels)} labels but the model has {units} outputs")

    def predict_array(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for raw NHWC pixels at the model's size."""
        x = np.asarray(batch, np.float32)
        x = x[None] if x.ndim == 3 else x
        outs = [np.asarray(self.model.predict_on_batch(x[i:i + self.batch_size]), np.float32)
                for i in range(0, len(x), self.batch_size)]
        y = np.concatenate(outs).reshape(len(x), -1)
        if y.shape[1] == 1 and len(self.labels) == 2:
            y = np.concatenate([1.0 - y, y], axis=1)
        return y

    def decode(self, src, regions=None, strict: bool = False):
        """The device decoder with the run's preprocessing (as `Classifier.decode`)."""
        from kerascls_edge.decode import decode
        return decode(src, self.preprocess, regions, strict)


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
    i("threads", 2, "Interpreter threads (bundle); decode threads follow the cores.")
    i("batch_size", 64, "Images per Keras inference call.")
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
    for name in ("recursive", "resume", "overwrite", "keep_checkpoint", "strict"):
        argv += [f"--{name}"] if getattr(fl, name) else []
    return argv


class KerasBackend:
    """kerascls-edge's `predict` with the Keras model as its classifier."""

    prog = "kerascls"

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def classifier(self, args):
        return KerasClassifier(args.bundle, self.batch_size, args.threads)

    def predict(self, clf, images, opts) -> dict:
        from kerascls_edge.runner import predict
        return predict(clf, images, opts)


def backend_for(fl):
    """None (the edge runtime as is), the Keras backend, or the Ray engine."""
    keras_model = is_keras_model(fl.model)
    if fl.engine == "ray":
        from kerascls.ray_predict import RayBackend
        return RayBackend(keras_model=keras_model, batch_size=fl.batch_size,
                          address=fl.ray_address, workers=fl.ray_workers, gpus=fl.ray_gpus,
                          worker_model=fl.ray_model)
    return KerasBackend(fl.batch_size) if keras_model else None


def run(fl, images: Sequence[str]) -> int:
    """`kerascls predict`: exit status of the edge CLI running with our backend."""
    if not images:
        raise ValueError("predict needs at least one image file or folder")
    from kerascls_edge.cli import main as edge_main
    try:
        backend = backend_for(fl)
    except EdgeError as e:
        print(f"kerascls: error: {e}", file=sys.stderr)
        return 2
    return edge_main(edge_argv(fl, images), backend=backend)

"""Transfer learning on a CPU: a frozen-backbone epoch today's way vs on cached features.

In one process, on camera-trap crops (the MegaDetector boxes of the shared ENA24 sample,
each box repeated with a few percent of jitter up to ``--n`` crops, so no two crops are the
same pixels), ``kerascls train`` runs with ``--freeze_backbone``:

* ``off``: ``--feature_cache off``, the backbone runs over every image in every epoch;
* ``cached``: the backbone runs once per image, the head trains on stored features;

and reports the seconds of a steady frozen epoch (the last one: decoding is cached by tf.data
and the step is traced by then; validation included) of each, their ratio, and the one-time
cost of computing the features. Then (``--finetune_epochs`` > 0) the end-to-end wall time of
a two-phase ``--epochs E --finetune_epochs F`` run with the cache, and without it.

Usage::

    python bench/transfer_cpu.py --n 3000 --arch efficientnetv2_b0 --image_size 224
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import common  # noqa: E402,F401  (bench/common.py; puts the checkout on sys.path)
import keras  # noqa: E402
import numpy as np  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap"
MD_FILES = [SHARED / "ena24_small" / "md_annotations.json"]  # MD-annotated shared images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=3000, help="crops (MD boxes repeated, jittered)")
    p.add_argument("--arch", default="efficientnetv2_b0")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="frozen epochs of each timed run")
    p.add_argument("--finetune_epochs", type=int, default=1,
                   help="fine-tuning epochs of the end-to-end runs (0: skip them)")
    p.add_argument("--augment", default="", help="--augment of every run (e.g. flip,rrc)")
    p.add_argument("--weights", default="", help="--weights (imagenet needs a download)")
    p.add_argument("--workdir", default="", help="where the crops list and runs go (tmp)")
    return p.parse_args(argv)


def jittered_md(out: Path, n: int, seed: int = 0) -> str:
    """An MD results file + labels.csv in ``out`` with ``n`` boxes: each shared MD box
    repeated, shifted and scaled by up to 5 %, clipped to the frame. Returns the md: spec."""
    rng = np.random.default_rng(seed)
    images, labels = [], ["filepath,label"]
    boxes = []
    for md_file in MD_FILES:
        md = json.loads(md_file.read_text())
        names = {r.split(",")[0]: r.split(",", 1)[1]
                 for r in (md_file.parent / "labels.csv").read_text().splitlines()[1:]}
        for im in md["images"]:
            dets = [d for d in im.get("detections") or [] if d["conf"] >= 0.2]
            if dets and im["file"] in names:
                path = str((md_file.parent / im["file"]).resolve())
                boxes += [(path, d) for d in dets]
                labels.append(f"{path},{names[im['file']]}")
    per_image: dict[str, list] = {}
    for i in range(n):
        path, det = boxes[i % len(boxes)]
        x, y, w, h = det["bbox"]
        s = 1 + rng.uniform(-0.05, 0.05, 2)
        w2, h2 = min(w * s[0], 1.0), min(h * s[1], 1.0)
        x2 = float(np.clip(x + rng.uniform(-0.05, 0.05) * w, 0, 1 - w2))
        y2 = float(np.clip(y + rng.uniform(-0.05, 0.05) * h, 0, 1 - h2))
        per_image.setdefault(path, []).append(
            {"category": det["category"], "conf": det["conf"], "bbox": [x2, y2, w2, h2]})
    images = [{"file": p, "detections": d} for p, d in per_image.items()]
    md_out = {"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
              "images": images}
    (out / "md.json").write_text(json.dumps(md_out))
    (out / "labels.csv").write_text("\n".join(labels) + "\n")
    return f"md:{out / 'md.json'}"


class EpochClock(keras.callbacks.Callback):
    """Wall seconds of every epoch (validation included) and when the fit began."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.fit_began = 0.0

    def on_train_begin(self, logs=None):
        self.fit_began = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


def timed_run(cfg, clock: EpochClock) -> dict:
    """Train ``cfg`` in this process; epoch seconds and wall time (data prep excluded)."""
    from kerascls.training import train as T
    keras.backend.clear_session()
    T._tensorboard = lambda run: [clock]  # the bench's clock in place of TensorBoard logs
    start = time.perf_counter()
    T.train(cfg, overwrite=True)
    return {"wall_s": round(time.perf_counter() - start, 1),
            "epoch_s": [round(s, 2) for s in clock.seconds]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from kerascls.config import TrainConfig
    work = Path(args.workdir or tempfile.mkdtemp(prefix="transfer_cpu_"))
    work.mkdir(parents=True, exist_ok=True)
    spec = jittered_md(work, args.n)
    base = dict(arch=args.arch, data=spec, image_size=args.image_size,
                batch_size=args.batch_size, augment=args.augment, weights=args.weights,
                allow_duplicate_files=True, calibrate=False, val_fraction=0.1,
                test_fraction=0.1, warmup_steps=10)
    frozen = {}
    for mode in ("off", "auto"):
        clock = EpochClock()
        cfg = TrainConfig(**base, epochs=args.epochs, freeze_backbone=True,
                          feature_cache=mode, output_dir=str(work / f"frozen_{mode}"))
        before = time.perf_counter()
        frozen[mode] = timed_run(cfg, clock)
        frozen[mode]["until_fit_s"] = round(clock.fit_began - before, 1)
    off, cached = frozen["off"]["epoch_s"][-1], frozen["auto"]["epoch_s"][-1]
    result = {"bench": "transfer_cpu", "arch": args.arch, "image_size": args.image_size,
              "n": args.n, "augment": args.augment or "none", "cpus": os.cpu_count(),
              "frozen_epoch_s_off": off, "frozen_epoch_s_cached": cached,
              "ratio": round(off / cached, 1),
              "cache_build_s": round(frozen["auto"]["until_fit_s"]
                                     - frozen["off"]["until_fit_s"], 1),
              "runs": frozen}
    if args.finetune_epochs:
        for mode in ("auto", "off"):
            cfg = TrainConfig(**base, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                              feature_cache=mode, output_dir=str(work / f"two_phase_{mode}"))
            result[f"two_phase_wall_s_{mode}"] = timed_run(cfg, EpochClock())["wall_s"]
    print(f"\n{args.arch} {args.image_size}px, {args.n} crops, augment={result['augment']}: "
          f"frozen epoch {off:.2f} s today's way vs {cached:.2f} s on cached features "
          f"= {result['ratio']}x (features computed once in ~{result['cache_build_s']} s)")
    if args.finetune_epochs:
        print(f"two-phase run ({args.epochs}+{args.finetune_epochs} epochs): "
              f"{result['two_phase_wall_s_auto']} s with the cache, "
              f"{result['two_phase_wall_s_off']} s without")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

"""Input pipeline speed: kerascls.data against keras.utils.image_dataset_from_directory.

Three measurements, each against a baseline run in the same process:

1. Large camera-trap JPEGs (../shared/data/camtrap/lila_mixed, laid out as one class folder
   of symlinks for the baseline): images/s from disk to batched 224×224 tensors, one epoch
   without cache, for our graph decoder (DCT-scaled), our Pillow-draft decoder (the
   ``auto`` default for large JPEGs), and Keras.
2. Fashion-MNIST written as PNG files: the same comparison on tiny images.
3. Input wait: the share of a small model's training step spent waiting for the next
   batch (time in ``next(iterator)`` over the whole step time).

Prints a table and one JSON line. ``--smoke`` runs a tiny version.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import interleaved  # noqa: E402
from kerascls.data.pipeline import PipelineOptions, encode_labels, file_dataset  # noqa: E402
from kerascls.data.sources import load_source  # noqa: E402

CAMTRAP = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap" / "lila_mixed"


def _symlink_folder(files: list[Path], root: Path) -> Path:
    """A one-class folder of symlinks: what image_dataset_from_directory reads."""
    (root / "frames").mkdir(parents=True)
    for f in files:
        (root / "frames" / f.name).symlink_to(f.resolve())
    return root


def _epoch(ds: tf.data.Dataset) -> None:
    for _ in ds:
        pass


def _candidates(folder: Path, size: int, batch: int) -> dict:
    """Our pipelines (graph and Pillow decoders) and Keras's, over one folder."""
    src = load_source(f"folder:{folder}")
    y = encode_labels(src.records, src.class_names, "multiclass")
    ours = {dec: file_dataset(src.records, y, PipelineOptions((size, size), batch, cache="none",
                                                               decoder=dec))
            for dec in ("tf", "pil")}
    theirs = keras.utils.image_dataset_from_directory(
        folder, image_size=(size, size), batch_size=batch, shuffle=False, verbose=False)
    return {"kerascls_tf": ours["tf"], "kerascls_pil": ours["pil"],
            "keras_from_directory": theirs.prefetch(tf.data.AUTOTUNE)}, len(src.records)


def bench_folder(folder: Path, size: int, batch: int, rounds: int) -> dict:
    """Images/s per pipeline (median of interleaved rounds of one epoch each)."""
    sets, n = _candidates(folder, size, batch)
    for ds in sets.values():
        _epoch(ds)  # warm-up: tracing, file cache
    runs = interleaved({k: (lambda d=ds: _epoch(d)) for k, ds in sets.items()}, rounds, 1, n)
    rates = {k: statistics.median(v) for k, v in runs.items()}
    return {"images": n, **{k: round(v, 1) for k, v in rates.items()},
            "ratio_tf": round(rates["kerascls_tf"] / rates["keras_from_directory"], 2),
            "ratio_pil": round(rates["kerascls_pil"] / rates["keras_from_directory"], 2)}


def fashion_folder(root: Path, count: int) -> Path:
    """The first ``count`` Fashion-MNIST test images as PNGs in class folders."""
    from PIL import Image

    from kerascls.data.fashion_mnist import load_fashion_mnist
    x, y = load_fashion_mnist("test")
    for i in range(count):
        d = root / f"c{y[i]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, :, :, 0]).save(d / f"{i}.png")
    return root


def input_wait(folder: Path, size: int, batch: int, steps: int) -> dict:
    """Share of training-step time spent in ``next()``, for small_cnn on cached file data."""
    from kerascls.models import create_model
    src = load_source(f"folder:{folder}")
    y = encode_labels(src.records, src.class_names, "multiclass")
    ds = file_dataset(src.records, y, PipelineOptions((size, size), batch, training=True,
                                                      augment=("flip",)))
    model = create_model("small_cnn", len(src.class_names), (size, size, 3))
    model.compile("adam", "sparse_categorical_crossentropy")
    it = iter(ds.repeat())
    model.train_on_batch(*next(it))  # compile
    for _ in range(len(src.records) // batch + 1):
        next(it)  # fill the cache: steady state is what training sees after epoch 1
    wait = total = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        xb, yb = next(it)
        t1 = time.perf_counter()
        model.train_on_batch(xb, yb)
        t2 = time.perf_counter()
        wait, total = wait + t1 - t0, total + t2 - t0
    return {"steps": steps, "wait_share": round(wait / total, 4),
            "step_ms": round(1000 * total / steps, 2)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fashion_images", type=int, default=2000)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    if a.smoke:
        a.rounds, a.fashion_images = 1, 64
    out: dict = {"tensorflow": tf.__version__, "keras": keras.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if CAMTRAP.is_dir():
            files = sorted(CAMTRAP.glob("*"))[: 6 if a.smoke else None]
            out["lila_mixed"] = bench_folder(_symlink_folder(files, tmp / "lila"), a.size,
                                             a.batch, a.rounds)
        fm = fashion_folder(tmp / "fm", a.fashion_images)
        out["fashion_mnist_png"] = bench_folder(fm, 28, 128, a.rounds)
        out["input_wait_fashion"] = input_wait(fm, 28, 128, 10 if a.smoke else 100)
    _table(out)
    print(json.dumps(out))
    return out


def _table(out: dict) -> None:
    print(f"{'data':<20}{'images':>8}{'ours tf/s':>12}{'ours pil/s':>12}{'keras/s':>10}"
          f"{'ratio tf':>10}{'ratio pil':>10}")
    for name in ("lila_mixed", "fashion_mnist_png"):
        if name in out:
            r = out[name]
            print(f"{name:<20}{r['images']:>8}{r['kerascls_tf']:>12}{r['kerascls_pil']:>12}"
                  f"{r['keras_from_directory']:>10}{r['ratio_tf']:>10}{r['ratio_pil']:>10}")
    w = out["input_wait_fashion"]
    print(f"input wait (small_cnn, Fashion-MNIST PNGs, cached): {100 * w['wait_share']:.2f}% "
          f"of a {w['step_ms']} ms step")


if __name__ == "__main__":
    main()

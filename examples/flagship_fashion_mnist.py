"""Flagship run: ResNet-18 (small stem) on Fashion-MNIST at 32×32, on any Keras backend.

The model is the registry's ``resnet18`` with the CIFAR-style stem; the data is the
Debian package's idx files (or $KERASCLS_FASHION_MNIST_DIR), padded 28 → 32. Training uses
random 4-pixel shifts and horizontal flips, SGD with Nesterov momentum, label smoothing
and a cosine schedule with warm-up. Backend-neutral, so it runs on a GPU box with JAX and
no TensorFlow:

    KERAS_BACKEND=jax python examples/flagship_fashion_mnist.py   # 60 epochs, lr 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerascls  # noqa: E402
from kerascls.data.fashion_mnist import load_fashion_mnist  # noqa: E402


def pad_to_32(x: np.ndarray) -> np.ndarray:
    return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))


def shift_and_flip(x: np.ndarray, rng: np.random.Generator, shift: int = 4) -> np.ndarray:
    """Random translations (zero fill) and horizontal flips of a uint8 batch, vectorized."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    dy, dx = rng.integers(0, 2 * shift + 1, (2, n))
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--precision", default="mixed_bfloat16")
    p.add_argument("--max_train_images", type=int, default=0, help="0 = all (smoke runs)")
    args = p.parse_args()
    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(0)
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    if args.max_train_images:
        x, y = x[:args.max_train_images], y[:args.max_train_images]
    x, xt = pad_to_32(x), pad_to_32(xt)
    model = kerascls.create_model("resnet18", 10, (32, 32, 1), stem_kind="small")
    steps = args.epochs * (len(y) // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=args.learning_rate, warmup_steps=max(steps // 30, 1))
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                                 weight_decay=5e-4),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  metrics=["accuracy"], jit_compile=True)
    rng = np.random.default_rng(0)
    onehot = np.eye(10, dtype="float32")
    times = []
    for epoch in range(args.epochs):
        xa = shift_and_flip(x, rng).astype("float32")
        start = time.perf_counter()
        model.fit(xa, onehot[y], batch_size=args.batch_size, epochs=1, shuffle=True,
                  verbose=0)
        times.append(time.perf_counter() - start)
        print(f"epoch {epoch + 1}/{args.epochs}: {times[-1]:.1f} s", flush=True)
    loss, acc = model.evaluate(xt.astype("float32"), onehot[yt], batch_size=1000, verbose=0)
    steady = np.median(times[1:] or times)
    print(json.dumps({"arch": "resnet18 (stem_kind=small)", "backend": keras.backend.backend(),
                      "epochs": args.epochs, "test_accuracy": round(float(acc), 4),
                      "test_loss": round(float(loss), 4),
                      "train_images_per_second": round(len(y) / steady, 1),
                      "total_train_seconds": round(sum(times), 1)}))


if __name__ == "__main__":
    main()

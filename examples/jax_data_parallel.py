"""Train a registry model with Keras' JAX data parallelism (``keras.distribution.DataParallel``).

The model code is backend-neutral, so the same ``create_model`` runs on a GPU box that has
JAX but no TensorFlow. The batch is split over every visible device; with one device this
is plain single-device training through the same code path.

    KERAS_BACKEND=jax python examples/jax_data_parallel.py --arch resnet50 --batch_size 256
    KERAS_BACKEND=jax python examples/jax_data_parallel.py --arch lenet --image_size 32 \\
        --batch_size 32 --steps 4 --epochs 2     # a CPU smoke run
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


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (the first one includes XLA compilation)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--num_classes", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=256, help="global batch, split over devices")
    p.add_argument("--steps", type=int, default=30, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--precision", default="mixed_bfloat16")
    args = p.parse_args()

    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    keras.mixed_precision.set_global_policy(args.precision)
    size = args.image_size
    model = kerascls.create_model(args.arch, args.num_classes, (size, size, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=True)
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.integers(0, 256, (n, size, size, 3)).astype("float32")
    y = rng.integers(0, args.num_classes, (n,))
    timer = EpochTimer()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, callbacks=[timer],
              verbose=2)
    steady = min(timer.times[1:] or timer.times)
    result = {"arch": args.arch, "devices": [str(d) for d in devices],
              "backend": keras.backend.backend(), "precision": args.precision,
              "global_batch": args.batch_size, "image_size": size,
              "images_per_second": round(n / steady, 1),
              "first_epoch_s": round(timer.times[0], 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""What `kerascls train`'s compute defaults buy on this machine: images/s of the default
small_cnn on Fashion-MNIST under each setting, measured in one process.

    python bench/train_step_cpu.py [--images 12800] [--rounds 2]

Rows: float32 vs mixed_bfloat16 (what ``--mixed_precision auto`` picks on a CPU with
AMX-BF16 or AVX512-BF16, or a GPU of compute capability 8.0+), each with 1 and 16 steps per
execution (train.STEPS_PER_EXECUTION). Baseline: float32, one step per call (Keras's default). Every
setting runs ``--rounds`` times, interleaved, so a change in the host's speed hits all alike;
the best round counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def images_per_s(policy: str, steps: int, x, y, batch: int) -> float:
    """One epoch of ``Model.fit`` after a warm-up epoch on a tenth of the data."""
    import keras

    from kerascls import create_model
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = create_model("small_cnn", 10, x.shape[1:])
        model.compile(keras.optimizers.AdamW(1e-3), "sparse_categorical_crossentropy",
                      steps_per_execution=steps)
        model.fit(x[: len(x) // 10], y[: len(x) // 10], batch_size=batch, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        return len(x) / (time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy("float32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12800)
    ap.add_argument("--batch_size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from kerascls.data import fashion_mnist
    from kerascls.training.distribute import auto_precision
    from kerascls.training.train import STEPS_PER_EXECUTION
    x, y = fashion_mnist.load_fashion_mnist("train")
    x, y = x[: args.images].astype("float32"), y[: args.images]
    settings = [(p, s) for p in ("float32", "mixed_bfloat16") for s in (1, STEPS_PER_EXECUTION)]
    best: dict = {}
    for _ in range(args.rounds):
        for policy, steps in settings:
            rate = images_per_s(policy, steps, x, y, args.batch_size)
            best[(policy, steps)] = max(rate, best.get((policy, steps), 0.0))
    base = best[("float32", 1)]
    print(f"{'compute':16s} {'steps/call':>10s} {'img/s':>8s} {'× float32, 1':>13s}")
    for (policy, steps), rate in best.items():
        print(f"{policy:16s} {steps:10d} {rate:8.0f} {rate / base:13.2f}")
    print(f"--mixed_precision auto picks here: {auto_precision()}")
    print(json.dumps({"bench": "train_step_cpu", "images": args.images,
                      "img_s": {f"{p}/{s}": round(r, 1) for (p, s), r in best.items()},
                      "auto": auto_precision()}))


if __name__ == "__main__":
    main()

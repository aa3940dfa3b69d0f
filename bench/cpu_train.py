"""CPU training-step throughput (TensorFlow backend): our models against keras.applications.

Both models of a pair train on the same synthetic batch in the same process with the same
optimizer and loss, through ``model.train_on_batch``. Ours is built as users get it
(preprocessing inside the model); theirs takes the same tensor. Rounds alternate ours and
theirs so load from other processes on a shared CPU hits both alike; medians are reported.

Usage::

    python bench/cpu_train.py --arch resnet50,vgg16 --image_size 224 --batch_size 8
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import common  # noqa: E402  (bench/common.py; puts the checkout on sys.path)
import keras  # noqa: E402
import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet50,vgg16", help="comma-separated registry names")
    p.add_argument("--image_size", type=int, default=224,
                   help="224 keeps VGG's classifier input equal (7×7×512) in both models")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_classes", type=int, default=1000)
    p.add_argument("--ours_kwargs", type=json.loads, default={},
                   help='JSON options for our create_model, e.g. \'{"dropout": 0}\'')
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    p.add_argument("--steps", type=int, default=2, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--jit_compile", default="auto", help="auto, true or false (both models)")
    return p.parse_args(argv)


def stepper(model: keras.Model, x: np.ndarray, y: np.ndarray, jit_compile):
    """A zero-argument training step on the fixed batch, after compiling ``model``."""
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    return lambda: model.train_on_batch(x, y)


def bench_arch(arch: str, args: argparse.Namespace) -> dict | None:
    """Build the pair, warm both up, time them interleaved."""
    pair = common.build_pair(arch, args.image_size, args.num_classes, **args.ours_kwargs)
    if pair is None:
        return None
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3))
    x = x.astype("float32")
    y = rng.integers(0, args.num_classes, (args.batch_size,)).astype("int32")
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile.lower()]
    steps = {who: stepper(m, x, y, jit) for who, m in zip(("ours", "theirs"), pair)}
    for step in steps.values():
        for _ in range(1 + args.warmup):  # the first call traces the function
            step()
    rates = common.interleaved(steps, args.rounds, args.steps, args.batch_size)
    return common.ratio_row(rates)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv), "cpu_train")


def run(args, name: str) -> None:
    """Bench every ``--arch`` in turn and print the table and JSON line as ``name``."""
    results = {}
    for arch in args.arch.split(","):
        row = bench_arch(arch, args)
        if row is not None:
            results[arch] = row
            print(f"{arch}: {row}", flush=True)
        keras.backend.clear_session()
    common.report(name, results, backend=keras.backend.backend(),
                  image_size=args.image_size, batch_size=args.batch_size,
                  rounds=args.rounds, steps=args.steps, cpus=os.cpu_count())


if __name__ == "__main__":
    main()

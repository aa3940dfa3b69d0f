"""Training throughput on an accelerator: our models against keras.applications, JAX backend.

Runs under ``KERAS_BACKEND=jax`` with the ``mixed_bfloat16`` policy and synthetic batches
that stay resident on the device, so only the model's training step is measured. Needs
keras and kerascls.models, never TensorFlow (the lent GPU machines have none).

Two ways to step, both measured by default:

* ``jit``: one ``jax.jit`` step over ``model.stateless_call`` + ``optimizer.stateless_apply``
  with donated state, dispatched asynchronously (what a custom JAX loop gets);
* ``keras``: ``model.train_on_batch`` on a model compiled with ``jit_compile=True``
  (Keras' own loop; it copies the loss to the host after every step).

Usage::

    KERAS_BACKEND=jax python bench/gpu_train.py                 # resnet50 b256, vgg16 b128
    KERAS_BACKEND=jax python bench/gpu_train.py --smoke --arch resnet50   # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial

os.environ.setdefault("KERAS_BACKEND", "jax")

import common  # noqa: E402  (bench/common.py; puts the checkout on sys.path)
import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

BATCH = {"resnet50": 256, "vgg16": 128}  # per-arch defaults (the anchors' batches)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet50,vgg16", help="comma-separated registry names")
    p.add_argument("--batch_size", type=int, default=0, help="0: per-arch default (BATCH)")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--num_classes", type=int, default=1000)
    p.add_argument("--ours_kwargs", type=json.loads, default={},
                   help='JSON options for our create_model, e.g. \'{"dropout": 0}\'')
    p.add_argument("--mode", default="jit,keras", help="jit, keras or both")
    p.add_argument("--warmup", type=int, default=5, help="steps after compilation, untimed")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    p.add_argument("--precision", default="mixed_bfloat16")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes so the whole path runs on a CPU in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.image_size, args.num_classes, args.batch_size = 32, 10, 2
        args.warmup, args.steps, args.rounds = 0, 1, 1
    return args


def synthetic_batches(batch: int, size: int, classes: int, n: int = 2):
    """``n`` distinct device-resident batches (0–255 pixels, integer labels) to rotate."""
    rng = np.random.default_rng(0)
    put = jax.device_put
    return [(put(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")),
             put(rng.integers(0, classes, (batch,)).astype("int32"))) for _ in range(n)]


def jit_stepper(model: keras.Model, batches):
    """(step, sync) for a donated-state ``jax.jit`` training step over ``batches``."""
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def loss(tv, ntv, x, y):
        pred, ntv = model.stateless_call(tv, ntv, x, training=True)
        return loss_fn(y, pred), ntv

    grad_fn = jax.value_and_grad(loss, has_aux=True)

    @partial(jax.jit, donate_argnums=0)
    def train_step(state, x, y):
        tv, ntv, ov = state
        (value, ntv), grads = grad_fn(tv, ntv, x, y)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return (tv, ntv, ov), value

    holder = {"state": ([v.value for v in model.trainable_variables],
                        [v.value for v in model.non_trainable_variables],
                        [v.value for v in optimizer.variables]), "i": 0, "loss": None}

    def step() -> None:
        x, y = batches[holder["i"] % len(batches)]
        holder["i"] += 1
        holder["state"], holder["loss"] = train_step(holder["state"], x, y)

    def sync() -> None:
        jax.block_until_ready(holder["state"])

    return step, sync


def keras_stepper(model: keras.Model, batches):
    """(step, sync) for Keras' own ``train_on_batch`` (synchronous: it returns the loss)."""
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=True)
    counter = {"i": 0}

    def step() -> None:
        x, y = batches[counter["i"] % len(batches)]
        counter["i"] += 1
        model.train_on_batch(x, y)

    return step, lambda: None


STEPPERS = {"jit": jit_stepper, "keras": keras_stepper}


def bench_arch(arch: str, mode: str, args: argparse.Namespace) -> dict | None:
    """Build ours and theirs fresh, warm both up, time them interleaved."""
    pair = common.build_pair(arch, args.image_size, args.num_classes, **args.ours_kwargs)
    if pair is None:
        return None
    batch = args.batch_size or BATCH.get(arch, 64)
    batches = synthetic_batches(batch, args.image_size, args.num_classes)
    steps, syncs = {}, {}
    for who, model in zip(("ours", "theirs"), pair):
        steps[who], syncs[who] = STEPPERS[mode](model, batches)
        for _ in range(1 + args.warmup):  # the first call compiles
            steps[who]()
        syncs[who]()
    rates = common.interleaved(steps, args.rounds, args.steps, batch, syncs)
    return {**common.ratio_row(rates), "batch_size": batch}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keras.mixed_precision.set_global_policy(args.precision)
    device = jax.devices()[0]
    results = {}
    for mode in args.mode.split(","):
        for arch in args.arch.split(","):
            row = bench_arch(arch, mode, args)
            if row is not None:
                results[f"{arch}/{mode}"] = row
                print(f"{arch}/{mode}: {row}", flush=True)
            jax.clear_caches()
    common.report("gpu_train", results, backend=keras.backend.backend(),
                  device=getattr(device, "device_kind", str(device)),
                  precision=args.precision, image_size=args.image_size,
                  tensorflow_imported="tensorflow" in sys.modules)


if __name__ == "__main__":
    main()

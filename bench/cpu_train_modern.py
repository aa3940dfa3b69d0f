"""CPU training-step throughput of the modern families against keras.applications.

``convnext_tiny`` vs ``ConvNeXtTiny`` and ``efficientnet_b0`` vs ``EfficientNetB0``, same
process, same batch, interleaved rounds, medians — ``bench/cpu_train.py``'s method and
code (``common.build_pair``/``interleaved``/``report``), with these pairs added to its
twin table. Target: ours/theirs ≥ 0.95.

Usage::

    python bench/cpu_train_modern.py --image_size 224 --batch_size 8 --rounds 5
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import common  # noqa: E402  (bench/common.py; puts the checkout on sys.path)
import cpu_train  # noqa: E402
import keras  # noqa: E402

MODERN = {"convnext_tiny": "ConvNeXtTiny", "efficientnet_b0": "EfficientNetB0"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a.startswith("--arch") for a in argv):
        argv = ["--arch", ",".join(MODERN), *argv]
    args = cpu_train.parse_args(argv)
    common.TWINS.update(MODERN)
    results = {}
    for arch in args.arch.split(","):
        row = cpu_train.bench_arch(arch, args)
        if row is not None:
            results[arch] = row
            print(f"{arch}: {row}", flush=True)
        keras.backend.clear_session()
    common.report("cpu_train_modern", results, backend=keras.backend.backend(),
                  image_size=args.image_size, batch_size=args.batch_size,
                  rounds=args.rounds, steps=args.steps, cpus=os.cpu_count())


if __name__ == "__main__":
    main()

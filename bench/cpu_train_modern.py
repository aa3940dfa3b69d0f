"""CPU training-step throughput of the modern families against keras.applications.

``convnext_tiny`` vs ``ConvNeXtTiny``, ``efficientnet_b0`` vs ``EfficientNetB0``,
``efficientnetv2_b0`` vs ``EfficientNetV2B0`` and ``efficientnetv2_s`` vs ``EfficientNetV2S``, same
process, same batch, interleaved rounds, medians — ``bench/cpu_train.py``'s method and
code (``common.build_pair``/``interleaved``/``report``), with these pairs added to its
twin table. Target: ours/theirs ≥ 0.95.

Usage::

    python bench/cpu_train_modern.py --image_size 224 --batch_size 8 --rounds 5
    python bench/cpu_train_modern.py --arch efficientnetv2_b0,efficientnetv2_s --rounds 9
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import common  # noqa: E402  (bench/common.py; puts the checkout on sys.path)
import cpu_train  # noqa: E402

MODERN = {"convnext_tiny": "ConvNeXtTiny", "efficientnet_b0": "EfficientNetB0",
          "efficientnetv2_b0": "EfficientNetV2B0", "efficientnetv2_s": "EfficientNetV2S"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a.startswith("--arch") for a in argv):
        argv = ["--arch", ",".join(MODERN), *argv]
    args = cpu_train.parse_args(argv)
    common.TWINS.update(MODERN)
    cpu_train.run(args, "cpu_train_modern")


if __name__ == "__main__":
    main()

"""int8 full-integer vs float32 TFLite: latency and size at 224×224 on this CPU.

Each model is built with ``kerascls.create_model`` (random weights), converted twice in a
subprocess (the converter leaks memory), calibrated on random images, and timed through
the LiteRT interpreter with the default XNNPACK delegate, the two alternating. The int8
op list of each model is printed; ``--ablate`` adds MobileNetV3-Large variants without SE
and/or with ReLU for hard-swish, to find which blocks make its int8 slow.

    python bench/tflite_latency.py [--archs resnet50,mobilenetv3_large] [--ablate]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

ARCHS = ("resnet50", "mobilenetv3_large", "efficientnet_lite0")
TARGETS = {"latency_ratio": 0.5, "size_ratio": 0.27}


ABLATIONS = ("mobilenetv3_large:no_se,mobilenetv3_large:relu,mobilenetv3_large:relu_no_se,"
             "mobilenetv3_large:hs_clip")


def hard_swish_clip(x):
    """``x · clip(x/6 + 1/2, 0, 1)``: hard-swish in a spelling the converter does not fuse
    into HARD_SWISH, so int8 runs it as MUL/ADD/clamp."""
    from keras import ops
    return x * ops.clip(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


def _swap_hard_swish(replacement) -> None:
    import kerascls.models.mobilenetv3 as mnv3
    for key, (rows, last) in mnv3.CONFIGS.items():
        mnv3.CONFIGS[key] = (tuple(tuple(replacement if v == mnv3.HS else v for v in row)
                                   for row in rows), last)
    mnv3.HS = replacement


def build(spec: str, size: int):
    """``arch`` or ``mobilenetv3_*:VARIANT`` — variants without SE (``no_se``), with ReLU
    for hard-swish (``relu``) or hard-swish spelled unfused (``hs_clip``) locate what makes
    int8 MobileNetV3 slow, block type by block type."""
    from kerascls.models import create_model
    arch, _, variant = spec.partition(":")
    if "relu" in variant:
        _swap_hard_swish("relu")
    if "hs_clip" in variant:
        _swap_hard_swish(hard_swish_clip)
    kwargs = {"attention": None} if "no_se" in variant else {}
    return create_model(arch, 1000, (size, size, 3), **kwargs)


def convert_child(arch: str, size: int, quantize: str, out: str, calib: int) -> None:
    """Subprocess body: build, convert, write the .tflite."""
    from kerascls.tflite.convert import convert
    model = build(arch, size)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3)).astype(np.float32) for _ in range(calib)]
    Path(out).write_bytes(convert(model, quantize, images if quantize == "int8" else None))


def converted(arch: str, size: int, quantize: str, folder: Path, calib: int) -> bytes:
    """The .tflite bytes, converted in a fresh interpreter process."""
    out = folder / f"{arch}-{quantize}.tflite"
    subprocess.run([sys.executable, __file__, "--child", arch, "--size", str(size),
                    "--quantize", quantize, "--out", str(out), "--calib", str(calib)],
                   check=True)
    return out.read_bytes()


def op_counts(tflite: bytes) -> dict[str, int]:
    from kerascls.tflite.audit import op_audit
    return dict(collections.Counter(r["op"] for r in op_audit(tflite)))


def measure(arch: str, size: int, threads: int, runs: int, folder: Path, calib: int) -> dict:
    """Both conversions of one arch, timed alternately so machine load hits both alike."""
    from kerascls.tflite.audit import interpreter, latency_ms
    blobs = {q: converted(arch, size, q, folder, calib) for q in ("none", "int8")}
    image = np.random.default_rng(1).integers(0, 256, (size, size, 3)).astype(np.float32)
    its = {q: interpreter(b, threads) for q, b in blobs.items()}
    times: dict[str, list[float]] = {q: [] for q in blobs}
    for r in range(5):
        for q in (("none", "int8") if r % 2 == 0 else ("int8", "none")):
            times[q].append(latency_ms(its[q], image, runs))
    lat = {q: float(np.median(t)) for q, t in times.items()}
    return {"arch": arch, "image_size": size, "threads": threads,
            "float_ms": lat["none"], "int8_ms": lat["int8"],
            "latency_ratio": lat["int8"] / lat["none"],
            "float_bytes": len(blobs["none"]), "int8_bytes": len(blobs["int8"]),
            "size_ratio": len(blobs["int8"]) / len(blobs["none"]),
            "int8_ops": op_counts(blobs["int8"]), "float_ops": op_counts(blobs["none"])}


def table(rows: list[dict]) -> str:
    lines = [f"{'arch':<20}{'float ms':>10}{'int8 ms':>10}{'ratio':>8}{'float MB':>10}"
             f"{'int8 MB':>9}{'ratio':>8}  targets ≤{TARGETS['latency_ratio']} / "
             f"≤{TARGETS['size_ratio']}"]
    for r in rows:
        ok = (r["latency_ratio"] <= TARGETS["latency_ratio"],
              r["size_ratio"] <= TARGETS["size_ratio"])
        lines.append(f"{r['arch']:<20}{r['float_ms']:>10.2f}{r['int8_ms']:>10.2f}"
                     f"{r['latency_ratio']:>8.2f}{r['float_bytes'] / 2**20:>10.2f}"
                     f"{r['int8_bytes'] / 2**20:>9.2f}{r['size_ratio']:>8.3f}  "
                     f"{'ok' if ok[0] else 'MISS'} / {'ok' if ok[1] else 'MISS'}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--calib", type=int, default=8)
    p.add_argument("--ablate", action="store_true", help="add MobileNetV3 variants")
    p.add_argument("--json", default="", help="also write the JSON here")
    p.add_argument("--child", default="")
    p.add_argument("--quantize", default="int8")
    p.add_argument("--out", default="")
    a = p.parse_args()
    if a.child:
        return convert_child(a.child, a.size, a.quantize, a.out, a.calib)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(arch, a.size, a.threads, a.runs, Path(tmp), a.calib)
                for arch in a.archs.split(",") + (ABLATIONS.split(",") if a.ablate else [])]
    print(table(rows))
    for r in rows:
        print(f"{r['arch']}: int8 ops {r['int8_ops']}")
    text = json.dumps(rows, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()

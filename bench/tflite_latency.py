"""int8 full-integer vs float32 TFLite: latency and size at 224×224 on this CPU.

Each model is built with ``kerascls.create_model``; with no trained weights at hand, its
BatchNorm statistics are set by training-mode passes over real camera-trap frames
(``../shared/data/camtrap``, else rendered images), so activations have the ranges of a
working network: random statistics blow activations up into scales that XNNPACK's int8
kernels refuse, and identical all-zero biases get deduplicated, flattering the size.
The model is converted twice in a subprocess (the converter leaks memory), int8
calibrated on those frames, and both are timed through the LiteRT interpreter with its
default XNNPACK delegate, alternating. Printed per model: the ops XNNPACK leaves to
reference kernels, and where the int8 bytes go (weights, int32 biases, the per-channel
scales and int64 zero points TFLite stores for every weight and bias channel).

``--ablate`` adds MobileNetV3-Large variants: ``fused_hs`` (Keras' hard-swish left to the
converter's int8 HARD_SWISH op, as before the int8 rewrite), ``relu`` (ReLU for
hard-swish: the floor for this block structure) and ``no_se``.

    python bench/tflite_latency.py [--archs resnet50,mobilenetv3_large] [--ablate]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

ARCHS = ("resnet50", "mobilenetv3_large", "efficientnet_lite0")
TARGETS = {"latency_ratio": 0.5, "size_ratio": 0.27}
ABLATIONS = "mobilenetv3_large:fused_hs,mobilenetv3_large:relu,mobilenetv3_large:no_se"
FRAMES = ROOT.parent / "shared" / "data" / "camtrap"


def frames(n: int, size: int) -> tuple[np.ndarray, str]:
    """Up to ``n`` real camera-trap frames resized to ``size``, or rendered images."""
    from PIL import Image
    out = []
    for path in sorted(FRAMES.glob("*/*.jpg"))[: n * 2]:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (size * 2, size * 2))
                out.append(np.asarray(im.convert("RGB").resize((size, size)), np.float32))
        except OSError:
            continue  # the shared set has deliberately broken files
        if len(out) == n:
            return np.stack(out), "camera-trap frames"
    yy, xx = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(0)
    rendered = [np.stack([np.sin(8 * (a * xx + b * yy) + c) for a, b, c in
                          rng.uniform(-1, 1, (3, 3))], -1) for _ in range(n)]
    return ((np.stack(rendered) + 1) * 127.5).astype(np.float32), "rendered images"


def build(spec: str, size: int, images: np.ndarray, bn_passes: int):
    """``arch`` or ``mobilenetv3_large:VARIANT``, BatchNorm statistics set on ``images``."""
    import keras

    from kerascls.models import create_model
    arch, _, variant = spec.partition(":")
    kwargs = {"attention": None} if variant == "no_se" else {}
    if variant == "relu":
        import kerascls.models.mobilenetv3 as mnv3
        for key, (rows, last) in mnv3.CONFIGS.items():
            mnv3.CONFIGS[key] = (tuple(tuple("relu" if v == mnv3.HS else v for v in row)
                                       for row in rows), last)
        mnv3.HS = "relu"
    keras.utils.set_random_seed(0)
    model = create_model(arch, 1000, (size, size, 3), **kwargs)
    for _ in range(bn_passes):
        for i in range(0, len(images), 8):
            model(images[i:i + 8], training=True)
    return model


def convert_child(spec: str, size: int, quantize: str, out: str, calib: int,
                  bn_passes: int) -> None:
    """Subprocess body: build, convert, write the .tflite."""
    import kerascls.tflite.convert as C
    images, _ = frames(max(calib, 16), size)
    model = build(spec, size, images, bn_passes)
    if spec.endswith(":fused_hs"):
        C.int8_friendly_activations = lambda m: contextlib.nullcontext(0)
    blob = C.convert(model, quantize, list(images[:calib]) if quantize == "int8" else None)
    Path(out).write_bytes(blob)


def converted(spec: str, size: int, quantize: str, folder: Path, a) -> bytes:
    """The .tflite bytes, converted in a fresh interpreter process."""
    out = folder / f"{spec.replace(':', '-')}-{quantize}.tflite"
    subprocess.run([sys.executable, __file__, "--child", spec, "--size", str(size),
                    "--quantize", quantize, "--out", str(out), "--calib", str(a.calib),
                    "--bn_passes", str(a.bn_passes)], check=True)
    return out.read_bytes()


def byte_breakdown(tflite: bytes) -> dict[str, int]:
    """Where a .tflite's bytes go: tensor data by type, and per-channel quantization params."""
    from tensorflow.lite.python import schema_py_generated as schema
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite, 0))
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out: dict[str, int] = collections.Counter()
    seen = set()
    for t in model.subgraphs[0].tensors:
        data = model.buffers[t.buffer].data
        if data is not None and t.buffer not in seen:
            seen.add(t.buffer)
            out[f"{types[t.type].lower()}_data"] += len(data)
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            out["per_channel_params"] += 4 * len(q.scale) + 8 * len(q.zeroPoint)
    out["total"] = len(tflite)
    return dict(out)


def op_counts(tflite: bytes) -> dict[str, int]:
    from kerascls.tflite.audit import op_audit
    return dict(collections.Counter(r["op"] for r in op_audit(tflite)))


def measure(spec: str, a, folder: Path) -> dict:
    """Both conversions of one arch, timed alternately so machine load hits both alike."""
    from kerascls.tflite.audit import interpreter, latency_ms, undelegated_ops
    blobs = {q: converted(spec, a.size, q, folder, a) for q in ("none", "int8")}
    image = frames(1, a.size)[0][0]
    its = {q: interpreter(b, a.threads) for q, b in blobs.items()}
    times: dict[str, list[float]] = {q: [] for q in blobs}
    for r in range(a.rounds):
        for q in (("none", "int8") if r % 2 == 0 else ("int8", "none")):
            times[q].append(latency_ms(its[q], image, a.runs))
    lat = {q: float(np.median(t)) for q, t in times.items()}
    return {"arch": spec, "image_size": a.size, "threads": a.threads,
            "float_ms": lat["none"], "int8_ms": lat["int8"],
            "latency_ratio": lat["int8"] / lat["none"],
            "float_bytes": len(blobs["none"]), "int8_bytes": len(blobs["int8"]),
            "size_ratio": len(blobs["int8"]) / len(blobs["none"]),
            "int8_size_breakdown": byte_breakdown(blobs["int8"]),
            "int8_xnnpack": undelegated_ops(blobs["int8"], a.threads),
            "float_xnnpack": undelegated_ops(blobs["none"], a.threads),
            "int8_ops": op_counts(blobs["int8"])}


def table(rows: list[dict]) -> str:
    lines = [f"{'arch':<30}{'float ms':>9}{'int8 ms':>9}{'ratio':>7}{'float MB':>9}"
             f"{'int8 MB':>8}{'ratio':>7}  targets ≤{TARGETS['latency_ratio']} / "
             f"≤{TARGETS['size_ratio']}"]
    for r in rows:
        ok = (r["latency_ratio"] <= TARGETS["latency_ratio"],
              r["size_ratio"] <= TARGETS["size_ratio"])
        lines.append(f"{r['arch']:<30}{r['float_ms']:>9.2f}{r['int8_ms']:>9.2f}"
                     f"{r['latency_ratio']:>7.2f}{r['float_bytes'] / 2**20:>9.2f}"
                     f"{r['int8_bytes'] / 2**20:>8.2f}{r['size_ratio']:>7.3f}  "
                     f"{'ok' if ok[0] else 'MISS'} / {'ok' if ok[1] else 'MISS'}")
    return "\n".join(lines)


def details(r: dict) -> str:
    b, x = r["int8_size_breakdown"], r["int8_xnnpack"]
    params = b.get("per_channel_params", 0)
    return (f"{r['arch']}: int8 XNNPACK partitions {x['partitions']}, left to reference "
            f"kernels {x['ops']}; int8 bytes: int8 data {b.get('int8_data', 0):,}, int32 "
            f"{b.get('int32_data', 0):,}, per-channel scales+zero points {params:,} "
            f"({params / r['float_bytes']:.3f}× the float file)\n    ops {r['int8_ops']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calib", type=int, default=16)
    p.add_argument("--bn_passes", type=int, default=4,
                   help="training-mode passes over the frames that set BN statistics")
    p.add_argument("--ablate", action="store_true", help="add MobileNetV3 variants")
    p.add_argument("--json", default="", help="also write the JSON here")
    p.add_argument("--child", default="")
    p.add_argument("--quantize", default="int8")
    p.add_argument("--out", default="")
    a = p.parse_args()
    if a.child:
        return convert_child(a.child, a.size, a.quantize, a.out, a.calib, a.bn_passes)
    print(f"BatchNorm statistics and int8 calibration from {frames(1, 8)[1]}")
    specs = a.archs.split(",") + (ABLATIONS.split(",") if a.ablate else [])
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(spec, a, Path(tmp)) for spec in specs]
    print(table(rows))
    for r in rows:
        print(details(r))
    text = json.dumps(rows)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()

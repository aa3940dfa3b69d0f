"""Train/serve fidelity: the training pipeline's pixels against the device's, on real frames.

For every readable frame under ``../shared/data/camtrap`` (or ``--data``), each resize mode and
each training decoder path (``auto``, ``tf``, ``pil``), the eval-mode output of
``kerascls.data.pipeline.file_dataset`` is compared with ``kerascls_edge.decode.decode`` (the
device). Prints the table of issue 12 — per resize mode × decoder, the mean over frames and the
worst frame of the per-frame mean abs diff in grey levels — and one JSON line.

    python bench/fidelity.py [--size 224 224] [--data DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(ROOT / "export"))

import numpy as np

from kerascls.data.pipeline import PipelineOptions, file_dataset
from kerascls.data.records import Record, check_files
from kerascls_edge.decode import Preprocess, decode

CAMTRAP = ROOT.parent / "shared" / "data" / "camtrap"
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def readable_frames(root: Path, limit: int | None = None) -> list[Record]:
    """Every image file under ``root`` that the training pipeline's file check accepts."""
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)
    records = check_files([Record(f, ("x",)) for f in files]).records
    return records[:limit] if limit else records


def training_view(records: list[Record], size: tuple[int, int], mode: str,
                  decoder: str) -> np.ndarray:
    """What training (eval mode, default options but the decoder) sees: N×H×W×3 float."""
    opts = PipelineOptions(size, 8, resize=mode, decoder=decoder, cache="none",
                           deterministic=True)
    y = np.zeros(len(records), np.int64)
    return np.concatenate([np.asarray(x, np.float32) for x, _ in file_dataset(records, y, opts)])


def device_view(records: list[Record], size: tuple[int, int], mode: str) -> np.ndarray:
    """What ``kerascls-edge`` feeds the model for the same files."""
    pre = Preprocess(size[0], size[1], 3, mode)
    return np.stack([decode(r.path, pre).arrays[0] for r in records]).astype(np.float32)


def measure(records: list[Record], size: tuple[int, int]) -> list[dict]:
    """One row per resize mode × decoder: mean and worst per-frame mean abs diff."""
    rows = []
    for mode in ("stretch", "crop", "pad"):
        ref = device_view(records, size, mode)
        for decoder in ("auto", "tf", "pil"):
            diff = np.abs(training_view(records, size, mode, decoder) - ref)
            per_frame = diff.reshape(len(records), -1).mean(axis=1)
            worst = int(np.argmax(per_frame))
            rows.append({"resize": mode, "decoder": decoder,
                         "mean": round(float(per_frame.mean()), 3),
                         "worst": round(float(per_frame[worst]), 3),
                         "worst_file": Path(records[worst].path).name,
                         "frames_over_1": int((per_frame > 1).sum())})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--data", type=Path, default=CAMTRAP)
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    if not a.data.is_dir():
        sys.exit(f"fidelity: error: {a.data} not found (the shared camera-trap frames)")
    records = readable_frames(a.data, a.limit)
    rows = measure(records, tuple(a.size))
    print(f"{len(records)} frames, {a.size[0]}×{a.size[1]}; per-frame mean abs diff "
          "vs kerascls_edge.decode (grey levels)")
    print(f"{'resize':<9}{'decoder':<9}{'mean':>8}{'worst':>8}{'>1':>5}  worst frame")
    for r in rows:
        print(f"{r['resize']:<9}{r['decoder']:<9}{r['mean']:>8.3f}{r['worst']:>8.3f}"
              f"{r['frames_over_1']:>5}  {r['worst_file']}")
    print(json.dumps({"frames": len(records), "size": list(a.size), "rows": rows}))
    return rows


if __name__ == "__main__":
    main()

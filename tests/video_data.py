"""Labelled videos the training tests render: a textured shape of one of three kinds crosses a
textured scene (the class is the shape), in several codecs and containers.

The shape enters from outside the left edge and leaves past the right one, so the first and
last sampled frames of a clip hold little or none of it: those frames are hard or impossible to
classify alone, while the clip as a whole is not — what a per-video rule is meant to fix.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.video_clips import texture, write_video

CLASSES = ("block", "bar", "pole")
# codec, container suffix, encoder options: mixed within every class
CODECS = (("mpeg4", ".avi", {}), ("libx264", ".mp4", {"preset": "ultrafast"}),
          ("mjpeg", ".mkv", {}))


def shape_size(kind: str, w: int, h: int) -> tuple[int, int]:
    """(width, height) of the moving shape: a square block, a wide bar or a tall pole."""
    return {"block": (h // 2, h // 2), "bar": (w // 2, h // 6), "pole": (w // 10, h * 3 // 4)}[kind]


def frames_of(kind: str, n: int, w: int, h: int, seed: int) -> list[np.ndarray]:
    """n RGB frames: the scene of ``seed`` with the shape crossing it from outside left to
    outside right at a seeded height; the shape's texture is seeded too."""
    rng = np.random.default_rng(seed)
    bg = texture(h, w, 1000 + seed) // 2  # a darker scene, a lighter animal: as by day
    bw, bh = shape_size(kind, w, h)
    top = int(rng.integers(0, h - bh + 1))
    skin = 128 + texture(bh, bw, 5000 + seed) // 2
    out = []
    for i in range(n):
        a = bg.copy()
        x = -bw + ((w + bw) * i) // max(n - 1, 1)  # -bw (outside) .. w (outside)
        lo, hi = max(x, 0), min(x + bw, w)
        if hi > lo:
            a[top:top + bh, lo:hi] = skin[:, lo - x:hi - x]
        out.append(a)
    return out


def encode(path: Path, frames: list[np.ndarray], codec: str, options: dict,
           rate: int) -> Path:
    """Write the frames as a video (PyAV), a key frame every 4 frames."""
    h, w = frames[0].shape[:2]

    def video_frames() -> Iterator[av.VideoFrame]:
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts = i
            yield f
    return write_video(path, video_frames(), (w, h), codec, rate, 4, options, Fraction(1, rate))


def render_videos(root: Path, per_class: int, sites: int = 4, frames: int = 16,
                  rate: int = 4, size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """``root/labels.csv`` (filepath,label,location) over ``per_class`` clips a class, the
    clips spread over ``sites`` locations and every codec of :data:`CODECS`."""
    root.mkdir(parents=True, exist_ok=True)
    w, h = size
    rows = []
    for k, kind in enumerate(CLASSES):
        for j in range(per_class):
            codec, suffix, options = CODECS[(j + k) % len(CODECS)]
            s = seed * 10_000 + k * 1000 + j
            name = f"{kind}_{j:03d}_{codec}{suffix.upper() if j % 2 else suffix}"
            encode(root / name, frames_of(kind, frames, w, h, s), codec, options, rate)
            rows.append({"filepath": name, "label": kind, "location": f"site{(j + k) % sites}"})
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["filepath", "label", "location"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"


# -- reading evaluate's and kerascls-edge's video results -----------------------------------


def prediction_rows(out: Path) -> list[dict]:
    """evaluate's predictions.csv in ``out``, as dicts."""
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def row_probs(row: dict, names: list[str]) -> np.ndarray:
    """A predictions.csv row's class probabilities, in ``names`` order."""
    return np.array([float(row[f"p_{n}"]) for n in names])


def top2_margin(p: np.ndarray) -> float:
    """Top-1 minus top-2 probability: how near a tie a label is."""
    top = np.sort(p)[::-1]
    return float(top[0] - top[1])


def video_labels(out: Path) -> dict[str, str]:
    """Each video's label (its ``video`` row's top1) in evaluate's predictions.csv."""
    return {r["filepath"]: r["top1"] for r in prediction_rows(out) if r["row"] == "video"}


def edge_video_labels(bundle: Path, files: list[str], out: Path) -> dict[str, str]:
    """Each video's label by ``kerascls-edge predict`` (MegaDetector output, video block)."""
    proc = subprocess.run([sys.executable, "-m", "kerascls_edge", "predict", str(bundle),
                           *files, "-o", str(out)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    md = json.loads(out.read_text())
    names = md["classification_categories"]
    root = Path(files[0]).parent if len(files) == 1 else Path(
        os.path.commonpath(files))
    labels = {}
    for entry in md["images"]:
        assert "failure" not in entry, entry
        c, _ = entry["video"]["classifications"][0]
        labels[str(root / entry["file"]) if not Path(entry["file"]).is_absolute()
               else entry["file"]] = names[str(c)]
    return labels


"""Rendered image folders and tiny training runs for the tests (not a test module).

Photo-like textured classes at awkward sizes (``render_folder``), the smallest real
training config on them (``small_run``) and training it in a fresh process
(``train_in_subprocess``): shared by the heads/labels, evaluate, report and predict tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kerascls.training.config import TrainConfig
from tests.conftest import ROOT

SIZES = ((97, 61), (150, 113), (61, 97), (201, 149), (64, 64), (123, 89))  # (w, h)
CLASSES = {"stripes_fine": (9.0, 0.3, (1.0, 0.8, 0.6)),      # frequency, angle, tint
           "stripes_coarse": (2.5, 1.2, (0.6, 0.9, 1.0)),
           "rings": (5.0, None, (0.9, 1.0, 0.7))}


def texture(cls: str, w: int, h: int, seed: int) -> np.ndarray:
    """A photo-like RGB image of a class: its pattern, tint, soft light and grain."""
    freq, angle, tint = CLASSES.get(cls, (4.0, 0.7, (1.0, 1.0, 1.0)))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * np.pi)
    if angle is None:
        cx, cy = rng.uniform(0.3, 0.7, 2)
        pattern = np.sin(2 * np.pi * freq * np.hypot(xx - cx, yy - cy) + phase)
    else:
        a = angle + rng.normal(0, 0.15)
        pattern = np.sin(2 * np.pi * freq * (xx * np.cos(a) + yy * np.sin(a)) + phase)
    light = 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * (xx + yy) + phase)
    base = (110 + 70 * pattern) * light
    img = np.stack([base * t for t in tint], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def render_folder(root: Path, per_class: int, classes=tuple(CLASSES), seed: int = 0,
                  sizes=SIZES) -> Path:
    """``root/CLASS/*.jpg`` at awkward sizes; returns root."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[(i + c) % len(sizes)]
            Image.fromarray(texture(cls, w, h, seed + 1000 * c + i)).save(
                root / cls / f"img{i:03d}.jpg", quality=90)
    return root


def small_run(data: Path, out: Path, **kw) -> TrainConfig:
    """A tiny, real training config on image files (32×32, small_cnn, a few epochs)."""
    base = {"arch": "small_cnn", "data": f"folder:{data}", "epochs": 6, "batch_size": 16,
            "image_size": 32, "learning_rate": 3e-3, "warmup_steps": 5, "val_fraction": 0.15,
            "test_fraction": 0.2, "output_dir": str(out), "seed": 0,
            "model_args": {"widths": [8, 16, 32]}}
    base.update(kw)
    if "model_args" in kw:
        base["model_args"] = {"widths": [8, 16, 32], **kw["model_args"]}
    return TrainConfig(**base)


def train_in_subprocess(cfg: TrainConfig) -> Path:
    """Train in a fresh process (the run is what a user would have on disk)."""
    code = ("import json,sys; from kerascls.training.config import TrainConfig; "
            "from kerascls.training.train import train; "
            "train(TrainConfig(**json.loads(sys.argv[1])))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, json.dumps(dataclasses.asdict(cfg))],
                   check=True, capture_output=True, env=env, cwd=ROOT, timeout=600)
    return Path(cfg.output_dir)

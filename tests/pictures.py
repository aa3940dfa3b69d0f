"""Textured pictures saved in any mode and EXIF orientation (not a test module).

Shared by test_fidelity.py and test_data_md_camtrapdp.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def texture(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photograph-like H×W×3 uint8 picture: noise at several scales, edges, a gradient.

    Values stay in 8..247, so a letterbox's zero margin is told from picture by value.
    """
    if w * h > 4_000_000:  # big frames: rendered at half size, then enlarged (fast)
        half = Image.fromarray(texture(max(1, w // 2), max(1, h // 2), seed))
        return np.asarray(half.resize((w, h), Image.Resampling.BICUBIC))
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((96, 70), (24, 40), (6, 30), (2, 20)):
        gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
        grid = Image.fromarray(rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8))
        layer = np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), np.float32)
        out += (layer - 128) * (amp / 128)
    out += 128 + np.linspace(-30, 30, w, dtype=np.float32)[None, :, None]
    for _ in range(8):  # hard-edged blocks
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(1, max(2, w // 3)), y0 + rng.integers(1, max(2, h // 3))
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * 0.4 + rng.integers(0, 256, 3) * 0.6
    return np.clip(out, 8, 247).astype(np.uint8)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def render(d: Path, name: str, w: int, h: int, seed: int = 0, mode: str = "RGB",
           orientation: int = 1, **save) -> str:
    """Save a textured picture (stored as seen before an EXIF rotation) in any mode."""
    im = Image.fromarray(texture(w, h, seed))
    if mode == "I;16":
        arr = np.asarray(im.convert("L"), np.uint16) * 257 + np.uint16(seed % 200)
        im = Image.fromarray(arr)
    elif mode == "P+t":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=200)
        im.info["transparency"] = 3
    elif mode != "RGB":
        im = im.convert(mode)
    if orientation != 1:
        save["exif"] = _exif(orientation)
    path = d / name
    im.save(path, **save)
    return str(path)


def photo(path: Path, seed: int, size: tuple[int, int] = (67, 45), quality: int = 90) -> Path:
    """A photo-like JPEG (smooth colour blobs plus sensor grain) at an awkward size."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    arr = np.asarray(base.resize(size, Image.Resampling.BICUBIC), np.int16)
    arr = arr + rng.integers(-12, 13, arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)
    return path

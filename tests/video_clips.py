"""Clips the video tests render with PyAV: moving textured shapes, any codec and container.

Not flat colours: a blocky random texture compresses like a real scene and tells frames apart.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """Blocky random texture (not a flat colour): compresses realistically, varies per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.kron(small, np.ones((8, 8, 1), np.uint8))[:h, :w]


def scene(h: int, w: int, i: int, n: int) -> np.ndarray:
    """Frame i of n: a textured background with a textured block moving left to right."""
    a = texture(h, w, 0)
    bw, bh = max(w // 5, 2), max(h // 3, 2)
    x = (i * (w - bw)) // max(n - 1, 1)
    a[h // 3:h // 3 + bh, x:x + bw] = texture(bh, bw, 1 + i % 7)
    return a


def render(path: Path, codec: str, n: int, rate: int = 10, size: tuple[int, int] = (96, 64),
           pts: list[int] | None = None, rotation: float | None = None, gop: int = 12,
           variants: int = 0, options: dict | None = None) -> Path:
    """Encode n frames; ``pts`` in ms for variable frame rate; ``variants`` > 0 cycles that
    many pre-converted frames (fast long clips)."""
    w, h = size
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=rate, options=options if options is not None else
                     {"preset": "ultrafast"} if codec == "libx264" else {})
    s.width, s.height = w, h
    s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    s.codec_context.gop_size = gop
    if pts is not None:
        s.codec_context.time_base = Fraction(1, 1000)
    if rotation is not None:
        s.set_display_rotation(rotation)
    cache = [av.VideoFrame.from_ndarray(scene(h, w, i, variants), format="rgb24")
             .reformat(format=s.pix_fmt) for i in range(variants)]
    for i in range(n):
        f = cache[i % variants] if variants else \
            av.VideoFrame.from_ndarray(scene(h, w, i, n), format="rgb24")
        if pts is not None:
            f.pts, f.time_base = pts[i], Fraction(1, 1000)
        else:
            f.pts = i
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path

"""Clips the video tests render with PyAV: moving textured shapes, any codec and container.

Not flat colours: a blocky random texture compresses like a real scene and tells frames apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


def pixel_format(codec: str) -> str:
    """The pixel format each test codec is written in (MJPEG takes full-range YUV)."""
    return "yuvj420p" if codec == "mjpeg" else "yuv420p"


def write_video(path: Path, frames: Iterable[av.VideoFrame], size: tuple[int, int], codec: str,
                rate: int, gop: int, options: dict, time_base: Fraction | None = None,
                rotation: float | None = None) -> Path:
    """Encode frames (their pts set by the caller) as one video stream of ``size`` (w, h)."""
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=rate, options=options)
    s.width, s.height = size
    s.pix_fmt = pixel_format(codec)
    s.codec_context.gop_size = gop
    if time_base is not None:
        s.codec_context.time_base = time_base
    if rotation is not None:
        s.set_display_rotation(rotation)
    for f in frames:
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def render(path: Path, codec: str, n: int, rate: int = 10, size: tuple[int, int] = (96, 64),
           pts: list[int] | None = None, rotation: float | None = None, gop: int = 12,
           variants: int = 0, options: dict | None = None) -> Path:
    """Encode n frames; ``pts`` in ms for variable frame rate; ``variants`` > 0 cycles that
    many pre-converted frames (fast long clips)."""
    w, h = size
    if options is None:
        options = {"preset": "ultrafast"} if codec == "libx264" else {}
    cache = [av.VideoFrame.from_ndarray(scene(h, w, i, variants), format="rgb24")
             .reformat(format=pixel_format(codec)) for i in range(variants)]

    def frames() -> Iterator[av.VideoFrame]:
        for i in range(n):
            f = cache[i % variants] if variants else \
                av.VideoFrame.from_ndarray(scene(h, w, i, n), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], Fraction(1, 1000)
            else:
                f.pts = i
            yield f
    return write_video(path, frames(), size, codec, rate, gop, options,
                       Fraction(1, 1000) if pts is not None else None, rotation)

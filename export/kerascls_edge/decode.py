"""Image decoding for the edge runtime: from a file (or PIL image) to the model's input pixels.

Camera-trap frames are large (5–20 MP) while classifiers want ~224 px, so JPEGs are decoded with
libjpeg's DCT scaling (`Image.draft`) to the smallest scale that is still at least the size the
resize needs: this is most of the runtime's speed. Everything else here is about odd files
(EXIF rotation, CMYK, greyscale, alpha, palette, 16-bit, truncated JPEGs) decoding the way
training saw them.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps

Source = Union[str, os.PathLike, Image.Image]
Box = tuple[float, float, float, float]  # normalized [x, y, w, h], MegaDetector style

RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_ORIENTATION = 274
_TRUNCATED_LOCK = threading.Lock()
TRUNCATED_WARNING = "truncated image: decoded the readable part, the rest is grey"


@dataclass
class Decoded:
    """Model-ready pixels for one image (or one array per crop) plus what the run reports."""

    arrays: list[np.ndarray]
    capture_time: Optional[float] = None
    datetime: Optional[str] = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Preprocess:
    """The contract's preprocessing: target size (h, w), channel count, resize mode, filter."""

    height: int
    width: int
    channels: int = 3
    resize: str = "stretch"
    interpolation: str = "bilinear"


def _needed_scale(size: tuple[int, int], pre: Preprocess, regions: Sequence[Box]) -> float:
    """Largest scale (≤1) any region needs so its resize never upsamples what draft shrank."""
    w, h = size
    need = 0.0
    for (_, _, bw, bh) in regions:
        rw, rh = max(bw * w, 1.0), max(bh * h, 1.0)
        sx, sy = pre.width / rw, pre.height / rh
        # stretch and crop need both sides covered; pad only needs the longer side to fit.
        s = min(sx, sy) if pre.resize == "pad" else max(sx, sy)
        need = max(need, s)
    return min(need, 1.0)


def _apply_draft(img: Image.Image, pre: Preprocess, regions: Sequence[Box]) -> None:
    """Ask libjpeg for a reduced-scale decode (1/2, 1/4, 1/8) that still covers the target."""
    if img.format != "JPEG":
        return
    w, h = img.size
    orientation = img.getexif().get(_ORIENTATION, 1)
    upright = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    s = _needed_scale(upright, pre, regions)
    if s >= 1.0:
        return
    req = (math.ceil(w * s), math.ceil(h * s))
    mode = "L" if pre.channels == 1 and img.mode in ("L", "RGB", "YCbCr") else img.mode
    if mode == "YCbCr":
        mode = "RGB"
    img.draft(mode, req)


def _open(src: Source, pre: Preprocess, regions: Sequence[Box]) -> Image.Image:
    """Open and fully load an image (draft applied), so decode errors surface here."""
    if isinstance(src, Image.Image):
        src.load()
        return src
    if os.path.getsize(src) == 0:
        raise OSError("empty file (0 bytes)")
    img = Image.open(src)
    _apply_draft(img, pre, regions)
    img.load()
    return img


def _is_truncation(err: Exception) -> bool:
    msg = str(err)
    return "truncated" in msg or "broken data stream" in msg


def _jpeg_scan_start(f) -> int:
    """Offset of the main image's first SOS marker, walking the top-level segments.

    Walking by segment lengths skips APP1, whose EXIF thumbnail holds a complete JPEG of
    its own (with its own end marker) that must not count for the main image.
    """
    f.seek(2)
    while True:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return f.tell()
        if head[1] == 0xDA:
            return f.tell()
        f.seek(int.from_bytes(head[2:4], "big") - 2, os.SEEK_CUR)


def _jpeg_end_missing(path: Union[str, os.PathLike], chunk: int = 1 << 16) -> bool:
    """True when no EOI marker (FF D9) follows the main image's scan data: it was cut short.

    Entropy-coded data never contains FF D9. The file is searched backwards from its end,
    so a normal file answers from its last block, and trailing bytes after the marker
    (some cameras append data) do not read as truncation. Only used when Pillow was told
    process-wide to hide truncation.
    """
    try:
        with open(path, "rb") as f:
            start = _jpeg_scan_start(f)
            end = f.seek(0, os.SEEK_END)
            while end > start:
                pos = max(start, end - chunk)
                f.seek(pos)
                if b"\xff\xd9" in f.read(end - pos + 1):
                    return False
                end = pos
            return True
    except OSError:
        return False


def _open_tolerant(src: Source, pre: Preprocess, regions: Sequence[Box],
                   strict: bool) -> tuple[Image.Image, list[str]]:
    """Open an image; a truncated JPEG is decoded as far as it goes and reported, unless strict.

    Pillow only offers a process-wide switch for this, so it is flipped under a lock and only on
    the retry: other files still fail loudly on their first attempt.
    """
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES  # someone (e.g. megadetector) may have set it
    try:
        img = _open(src, pre, regions)
    except OSError as e:
        if strict or isinstance(src, Image.Image) or not _is_truncation(e):
            raise
    else:
        if lenient and img.format == "JPEG" and _jpeg_end_missing(src):
            if strict:
                raise OSError("image file is truncated (no JPEG end marker)")
            return img, [TRUNCATED_WARNING]
        return img, []
    with _TRUNCATED_LOCK:
        old = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            img = _open(src, pre, regions)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = old
    return img, [TRUNCATED_WARNING]


def _parse_exif_time(value: object) -> Optional[datetime]:
    """EXIF 'YYYY:MM:DD HH:MM:SS' (cameras sometimes pad with NULs or spaces)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def capture_time(img: Image.Image, path: Optional[Union[str, os.PathLike]]
                 ) -> tuple[Optional[float], Optional[str]]:
    """When the frame was taken: EXIF DateTimeOriginal, else DateTime, else the file's mtime.

    Returns (seconds since the epoch for ordering, ISO string for EXIF times or None for mtime).
    """
    try:
        exif = img.getexif()
        dt = _parse_exif_time(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL))
        dt = dt or _parse_exif_time(exif.get(_DATETIME))
    except Exception:  # malformed EXIF must never cost us the image
        dt = None
    if dt is not None:
        # Camera clocks have no time zone: treat as naive UTC so ordering is all we use.
        return (dt - datetime(1970, 1, 1)).total_seconds(), dt.isoformat(sep=" ")
    if path is not None:
        try:
            return os.path.getmtime(path), None
        except OSError:
            pass
    return None, None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale to 8 bits by scaling (as tf.io.decode_png does), not clipping."""
    arr = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(arr, 0, 255)
    else:
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        scaled = arr.astype(np.float32) * (255.0 / top)
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Convert any mode to RGB (or L): alpha is dropped, like tf.io.decode_image(channels=3)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert(target)


def _pixel_box(img: Image.Image, region: Box) -> tuple[float, float, float, float]:
    """Normalized [x, y, w, h] to a clamped pixel box (left, top, right, bottom), never empty."""
    W, H = img.size
    x, y, w, h = region
    left = min(max(x * W, 0.0), W - 1.0)
    top = min(max(y * H, 0.0), H - 1.0)
    right = min(max((x + w) * W, left + 1.0), float(W))
    bottom = min(max((y + h) * H, top + 1.0), float(H))
    return left, top, right, bottom


def _centre_crop_box(box: tuple[float, float, float, float], aspect: float
                     ) -> tuple[float, float, float, float]:
    """The largest box of the target aspect (w/h) centred in `box`."""
    left, top, right, bottom = box
    bw, bh = right - left, bottom - top
    if bw / bh > aspect:
        nw = bh * aspect
        left += (bw - nw) / 2
        return left, top, left + nw, bottom
    nh = bw / aspect
    top += (bh - nh) / 2
    return left, top, right, top + nh


def resize_region(img: Image.Image, region: Box, pre: Preprocess) -> np.ndarray:
    """Cut `region` and resize it to the model's size by the contract's mode; HxWxC uint8."""
    size = (pre.width, pre.height)
    resample = RESAMPLE.get(pre.interpolation, Image.Resampling.BILINEAR)
    box = _pixel_box(img, region)
    if pre.resize == "crop":
        out = img.resize(size, resample, box=_centre_crop_box(box, pre.width / pre.height))
    elif pre.resize == "pad":
        bw, bh = box[2] - box[0], box[3] - box[1]
        s = min(pre.width / bw, pre.height / bh)
        inner = (max(1, min(pre.width, round(bw * s))), max(1, min(pre.height, round(bh * s))))
        out = Image.new(img.mode, size, 0)
        out.paste(img.resize(inner, resample, box=box),
                  ((pre.width - inner[0]) // 2, (pre.height - inner[1]) // 2))
    else:
        out = img.resize(size, resample, box=box)
    arr = np.asarray(out, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def load_upright(src: Source, pre: Preprocess, regions: Sequence[Box] = ((0, 0, 1, 1),),
                 strict: bool = False) -> tuple[Image.Image, Decoded]:
    """Decode (draft-reduced), read the capture time, rotate upright and convert the channels."""
    img, warnings = _open_tolerant(src, pre, regions, strict)
    path = None if isinstance(src, Image.Image) else src
    t, dt = capture_time(img, path)
    img = ImageOps.exif_transpose(img) or img
    img = to_channels(img, pre.channels)
    return img, Decoded(arrays=[], capture_time=t, datetime=dt, warnings=warnings)


def decode(src: Source, pre: Preprocess, regions: Optional[Sequence[Box]] = None,
           strict: bool = False) -> Decoded:
    """Decode a file or PIL image into model inputs: one array per region (default: whole image).

    Raises OSError / ValueError (and Pillow's errors) for unreadable files; callers turn them
    into `failure` entries.
    """
    regions = list(regions) if regions else [(0.0, 0.0, 1.0, 1.0)]
    img, out = load_upright(src, pre, regions, strict)
    out.arrays = [resize_region(img, r, pre) for r in regions]
    return out

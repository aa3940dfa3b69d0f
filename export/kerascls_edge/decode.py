"""Image decoding for the edge runtime: from a file (or PIL image) to the model's input pixels.

Camera-trap frames are large (5–20 MP) while classifiers want ~224 px, so JPEGs are decoded with
libjpeg's DCT scaling (`Image.draft`) to the smallest scale that is still at least the size the
resize needs: this is most of the runtime's speed. Everything else here is about odd files
(EXIF rotation, CMYK, greyscale, alpha, palette, 16-bit, truncated JPEGs) decoding the way
training saw them.

This module is also *the* definition of the model's input pixels for training: ``kerascls``
imports :func:`reduction`, :func:`reduced_size` and :func:`geometry` for its graph decoder and
calls :func:`decode` itself for its Pillow path, so train = evaluate = device by construction.
Everything here stays TensorFlow-free.
"""

from __future__ import annotations

import math
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .bundle import EdgeError
from .userfiles import open_regular

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
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG with more pictures appended (some cameras)
SCALES = (8, 4, 2, 1)  # libjpeg's DCT scales (1/8 … 1/1); also the non-JPEG reduction factors
# Formats without reduced-scale decoding are decoded whole: cap their pixels (and a JPEG's
# pixels after DCT scaling). 24 MP is 96 MB in Pillow's 4-byte RGB(A)/I layout, which keeps
# `kerascls-edge predict` under 300 MB on a 1 GB device; `--max_pixels` changes it.
DEFAULT_MAX_PIXELS = 24_000_000
max_pixels_default = DEFAULT_MAX_PIXELS  # the CLI sets this process-wide
# The formats the device decodes (what IMAGE_EXTENSIONS name). Pillow is told to try only
# these: some other plugins decode whole images inside `Image.open` (an ICO holding a
# 13000² PNG took 716 MB before any cap could look at it). MPO opens through "JPEG".
FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
FORMAT_NAMES = "JPEG, PNG, BMP, TIFF, WebP or GIF"
# A decode may take this many bytes per pixel of the cap (144 MB at 24 MP): a cap-sized
# PNG/BMP/TIFF/GIF takes ≤ 4 B/px, so the pixel cap binds first for them; a progressive (or
# multi-scan) JPEG keeps 2 B per sample of coefficients at full size whatever the DCT scale
# (a 13000² 4:4:4 one: 1,014 MB); WebP holds ~16 B/px (libwebp's two canvases, the frame
# copy and Pillow's image: 425 MB peak for 23.9 MP, measured).
BUDGET_BYTES_PER_CAP_PIXEL = 6
WEBP_BYTES_PER_PIXEL = 16
# Above this many pixels a non-JPEG image is converted strip by strip, each strip reduced at
# once: no full-size converted copy (kerascls's graph decoder leaves such files to Pillow).
REDUCE_ABOVE = 4_000_000
STRIP_PIXELS = 1 << 20
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


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


@dataclass(frozen=True)
class Geometry:
    """Where one region's pixels go: shared by the device and kerascls's graph decoder.

    ``box`` (left, top, right, bottom; fractional) in the decoded upright image is resized
    (bilinear with antialiasing, Pillow's ``resize(box=...)``) to ``inner`` (w, h) and pasted
    at ``offset`` (x, y) into a zero (w, h) = (pre.width, pre.height) output.
    """

    box: tuple[float, float, float, float]
    inner: tuple[int, int]
    offset: tuple[int, int]


def reduction(size: tuple[int, int], pre: Preprocess, regions: Sequence[Box]) -> int:
    """Largest factor (8, 4, 2, 1) at which every region of an upright ``size`` image still
    covers what its resize needs: both sides for stretch and crop, the fitting side for pad."""
    w, h = size
    room = math.inf
    for (_, _, bw, bh) in regions:
        sx = max(bw * w, 1.0) / pre.width
        sy = max(bh * h, 1.0) / pre.height
        room = min(room, max(sx, sy) if pre.resize == "pad" else min(sx, sy))
    # libjpeg (through Pillow's draft) cannot shrink a side below one pixel per 1/s block
    return next((s for s in SCALES if s <= room and s <= min(w, h)), 1)


def reduced_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """Size after a 1/factor DCT-scaled decode or ``Image.reduce``: rounded up."""
    return -(-size[0] // factor), -(-size[1] // factor)


def geometry(size: tuple[int, int], region: Box, pre: Preprocess) -> Geometry:
    """Box, inner size and offset of one normalized region of a decoded ``size`` image."""
    box = _pixel_box(size, region)
    full = (pre.width, pre.height)
    if pre.resize == "crop":
        return Geometry(_centre_crop_box(box, pre.width / pre.height), full, (0, 0))
    if pre.resize == "pad":
        bw, bh = box[2] - box[0], box[3] - box[1]
        s = min(pre.width / bw, pre.height / bh)
        inner = (max(1, min(pre.width, round(bw * s))), max(1, min(pre.height, round(bh * s))))
        return Geometry(box, inner, ((pre.width - inner[0]) // 2, (pre.height - inner[1]) // 2))
    return Geometry(box, full, (0, 0))


def header_exif(img: Image.Image) -> Image.Exif:
    """The image's EXIF without decoding more pixels than the cap allows.

    Pillow's PNG ``getexif()`` decodes the whole image to look for an eXIf chunk after the
    pixels: for a PNG over the pixel cap (a 13000² one: 676 MB) only the chunks before the
    pixels are read (a PNG within the cap keeps Pillow's full answer).
    """
    w, h = img.size
    cap = max_pixels_default
    if (img.format == "PNG" and "exif" not in img.info and getattr(img, "tile", None)
            and cap and w * h > cap):
        return Image.Exif()
    return img.getexif()


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1–8 (1 when absent, unreadable or out of range)."""
    try:
        o = int(header_exif(img).get(_ORIENTATION, 1) or 1)
    except Exception:  # malformed EXIF must never cost us the image
        return 1
    return o if 1 <= o <= 8 else 1


def _upright_size(img: Image.Image, orientation: int) -> tuple[int, int]:
    w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _apply_draft(img: Image.Image, pre: Preprocess, regions: Sequence[Box]) -> None:
    """Ask libjpeg for the reduced-scale decode (1/2, 1/4, 1/8) :func:`reduction` chose."""
    if img.format not in JPEG_FORMATS:
        return
    s = reduction(_upright_size(img, _orientation(img)), pre, regions)
    if s == 1:
        return
    mode = "L" if pre.channels == 1 and img.mode in ("L", "RGB", "YCbCr") else img.mode
    if mode == "YCbCr":
        mode = "RGB"
    # Pillow picks the largest scale ≤ min(W // w, H // h): asking for W // s gives exactly s.
    img.draft(mode, (max(img.width // s, 1), max(img.height // s, 1)))


def _check_pixels(img: Image.Image, max_pixels: Optional[int]) -> None:
    """Refuse, before decoding, an image whose decode would not fit the pixel cap."""
    w, h = img.size
    if max_pixels and w * h > max_pixels:
        raise ValueError(f"{img.format or 'image'} of {w}×{h} = {w * h / 1e6:.1f} MP decodes "
                         f"over the {max_pixels / 1e6:g} MP pixel cap (raise it with "
                         "--max_pixels)")


@dataclass(frozen=True)
class JpegFrame:
    """What a JPEG's headers say before any pixel: size, sampling, and how it is scanned."""

    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (h, v) per component
    progressive: bool
    scans_one_by_one: bool  # first scan holds fewer components than the frame: multi-scan

    @property
    def buffered(self) -> bool:
        """libjpeg keeps the whole image's coefficients (progressive or multi-scan)."""
        return self.progressive or self.scans_one_by_one

    def coefficient_bytes(self) -> int:
        """Bytes of libjpeg's full-image coefficient arrays: 64 × 2 B per 8×8 block, each
        component's blocks padded to its sampling factors (jdcoefct.c)."""
        hmax = max(h for h, _ in self.sampling)
        vmax = max(v for _, v in self.sampling)
        total = 0
        for h, v in self.sampling:
            bw = _ceil_div(_ceil_div(self.width * h, hmax), 8)
            bh = _ceil_div(_ceil_div(self.height * v, vmax), 8)
            total += _ceil_div(bw, h) * h * _ceil_div(bh, v) * v * 128
        return total


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE_SOF = {0xC2, 0xC6, 0xCA, 0xCE}


def jpeg_frame(f: BinaryIO) -> Optional[JpegFrame]:
    """Walk a JPEG's segments up to the first scan header; None if it is not a readable JPEG.

    The file position is put back, so Pillow can be handed the same file afterwards.
    """
    pos = f.tell()
    try:
        f.seek(0)
        if f.read(2) != b"\xff\xd8":
            return None
        sof = None
        for _ in range(10_000):  # a bound on the walk, whatever the file holds
            head = f.read(2)
            while head[:1] == b"\xff" and head[1:2] == b"\xff":  # fill bytes
                head = head[1:] + f.read(1)
            if len(head) < 2 or head[0] != 0xFF:
                return None
            if 0xD0 <= head[1] <= 0xD8 or head[1] == 0x01:  # standalone markers
                continue
            length = int.from_bytes(f.read(2), "big")
            if head[1] not in _SOF and head[1] != 0xDA:  # APPn (EXIF: up to 64 KB), tables
                f.seek(max(length - 2, 0), os.SEEK_CUR)
                continue
            seg = f.read(max(length - 2, 0))
            if head[1] in _SOF and len(seg) >= 6 and len(seg) >= 6 + 3 * seg[5]:
                sampling = tuple((max(seg[7 + 3 * i] >> 4, 1), max(seg[7 + 3 * i] & 15, 1))
                                 for i in range(seg[5]))
                sof = (head[1], int.from_bytes(seg[3:5], "big"),
                       int.from_bytes(seg[1:3], "big"), sampling)
            elif head[1] == 0xDA:
                if sof is None or not sof[3] or not seg:
                    return None
                marker, w, h, sampling = sof
                return JpegFrame(w, h, sampling, marker in _PROGRESSIVE_SOF,
                                 seg[0] < len(sampling))
        return None
    finally:
        f.seek(pos)


def _budget(max_pixels: Optional[int]) -> Optional[int]:
    return max_pixels * BUDGET_BYTES_PER_CAP_PIXEL if max_pixels else None


def _check_memory(img: Image.Image, max_pixels: Optional[int]) -> None:
    """Refuse, from the headers, a decode whose memory the pixel count does not show.

    A progressive or multi-scan JPEG holds every coefficient at full size however small the
    DCT-scaled output, and WebP decodes through several full-size buffers.
    """
    budget = _budget(max_pixels)
    if budget is None:
        return
    w, h = img.size
    need, why = 0, ""
    if img.format in JPEG_FORMATS and img.fp is not None:
        frame = jpeg_frame(img.fp)
        if frame is not None and frame.buffered:
            need = frame.coefficient_bytes() + 4 * w * h
            kind = "progressive" if frame.progressive else "multi-scan"
            why = (f"{kind} JPEG of {frame.width}×{frame.height} needs {need / 1e6:,.0f} MB "
                   "to decode (libjpeg keeps all its coefficients, whatever the scale)")
    elif img.format == "WEBP":
        need = WEBP_BYTES_PER_PIXEL * w * h
        why = f"WebP of {w}×{h} needs {need / 1e6:,.0f} MB to decode"
    if need > budget:
        raise ValueError(f"{why}, over the {budget / 1e6:,.0f} MB that the "
                         f"{max_pixels / 1e6:g} MP pixel cap allows (raise it with "
                         "--max_pixels)")


@contextmanager
def open_image(path: Union[str, os.PathLike]) -> Iterator[Image.Image]:
    """A not-yet-decoded image of one of :data:`FORMATS`, from a regular file only.

    The one way every reader of the runtime (decode, capture times, thumbnails, header
    sizes) opens an image: a FIFO or device is refused instead of blocking, an empty file
    or another format is one clear error, and nothing is decoded before the caller's caps.
    """
    with open_regular(path, "image") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise OSError("empty file (0 bytes)")
        try:
            img = Image.open(f, formats=FORMATS)
        except UnidentifiedImageError:
            raise UnidentifiedImageError(f"not an image the device reads ({FORMAT_NAMES})"
                                         ) from None
        yield img


def _open(src: Source, pre: Preprocess, regions: Sequence[Box],
          max_pixels: Optional[int] = None) -> Image.Image:
    """Open and fully load an image (draft applied), so decode errors surface here.

    Every cap is checked from the headers first: no pixel is decoded for a refused image.
    """
    if isinstance(src, Image.Image):
        src.load()
        return src
    with open_image(src) as img:
        _apply_draft(img, pre, regions)
        _check_pixels(img, max_pixels)
        _check_memory(img, max_pixels)
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
        with open_regular(path, "image") as f:
            start = _jpeg_scan_start(f)
            end = f.seek(0, os.SEEK_END)
            while end > start:
                pos = max(start, end - chunk)
                f.seek(pos)
                if b"\xff\xd9" in f.read(end - pos + 1):
                    return False
                end = pos
            return True
    except (OSError, EdgeError):
        return False


_SOF_HUFFMAN = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker (not stuffing, RST, fill)


def _mcu_count(seg: bytes) -> int:
    """MCUs of a Huffman SOF segment: each needs at least one bit of scan data."""
    h, w, n = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
    hmax = max((seg[7 + 3 * i] >> 4 for i in range(n)), default=1) or 1
    vmax = max((seg[7 + 3 * i] & 15 for i in range(n)), default=1) or 1
    return -(-w // (8 * hmax)) * -(-h // (8 * vmax))


def jpeg_coverage(path: Union[str, os.PathLike]) -> float:
    """Upper bound on the share of a JPEG's declared area its first scan's data can cover.

    Every MCU costs at least one bit of Huffman-coded data, so a first scan that ends (at a
    marker or the end of the file) after fewer bytes than MCUs/8 cannot hold the whole image:
    libjpeg then fills the rest with grey without an error (a header declaring 12000×12000
    followed by garbage). 1.0: complete as far as this bound can tell, or not checkable.
    """
    with open_regular(path, "image") as f:
        if f.read(2) != b"\xff\xd8":
            return 1.0
        mcus = 0
        while True:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0xFF:
                return 1.0
            length = int.from_bytes(head[2:4], "big")
            if head[1] == 0xDA:
                f.seek(length - 2, os.SEEK_CUR)
                break
            seg = f.read(length - 2)
            if head[1] in _SOF_HUFFMAN and len(seg) >= 6 + 3 * seg[5]:
                mcus = _mcu_count(seg)
        if not mcus:
            return 1.0
        data = f.read(-(-mcus // 8))
    end = _SCAN_END.search(data)
    got = end.start() if end else len(data)
    return min(1.0, 8 * got / mcus)


def _check_coverage(src: Source, img: Image.Image, strict: bool) -> list[str]:
    """Fail a JPEG most of whose data is missing (or any shortfall with ``strict``)."""
    if isinstance(src, Image.Image) or img.format not in JPEG_FORMATS:
        return []
    cov = jpeg_coverage(src)
    if cov >= 1.0:
        return []
    msg = f"JPEG data ends early: at most {100 * cov:.0f} % of the declared image is there"
    if strict or cov < 0.5 or _flat_tail(img) >= 0.5:
        raise OSError(msg + ("" if strict else " (most of it would be grey)"))
    return [TRUNCATED_WARNING]


def _flat_tail(img: Image.Image) -> float:
    """Share of the rows, from the bottom up, that are one flat value: libjpeg's fill."""
    arr = np.asarray(img)
    arr = arr.reshape(arr.shape[0], -1).astype(np.int16)
    flat = (arr.max(axis=1) - arr.min(axis=1)) <= 2
    rows = np.flatnonzero(~flat)
    return 1.0 - (rows[-1] + 1) / len(flat) if len(rows) else 1.0


def _open_tolerant(src: Source, pre: Preprocess, regions: Sequence[Box], strict: bool,
                   max_pixels: Optional[int] = None) -> tuple[Image.Image, list[str]]:
    """Open an image; a truncated JPEG is decoded as far as it goes and reported, unless strict.

    Pillow only offers a process-wide switch for this, so it is flipped under a lock and only on
    the retry: other files still fail loudly on their first attempt.
    """
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES  # someone (e.g. megadetector) may have set it
    try:
        img = _open(src, pre, regions, max_pixels)
    except OSError as e:
        if strict or isinstance(src, Image.Image) or not _is_truncation(e):
            raise
    else:
        if (lenient and img.format in JPEG_FORMATS and not isinstance(src, Image.Image)
                and _jpeg_end_missing(src)):
            if strict:
                raise OSError("image file is truncated (no JPEG end marker)")
            return img, [TRUNCATED_WARNING]
        return img, _check_coverage(src, img, strict)
    with _TRUNCATED_LOCK:
        old = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            img = _open(src, pre, regions, max_pixels)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = old
    _check_coverage(src, img, strict)
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
        exif = header_exif(img)
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


def _top(img: Image.Image) -> float:
    """The white level of a 16/32-bit greyscale image, decided once for the whole image."""
    if img.mode.startswith("I;16"):
        return 65535.0
    hi = img.getextrema()[1] if img.mode == "I" else 0
    return 65535.0 if hi > 255 else 255.0


def _to_8bit(img: Image.Image, top: Optional[float] = None) -> Image.Image:
    """16-bit and 32-bit greyscale to 8 bits by scaling (as tf.io.decode_png does), not clipping."""
    arr = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(arr, 0, 255)
    else:
        scaled = arr.astype(np.float32) * (255.0 / (top or _top(img)))
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def to_channels(img: Image.Image, channels: int, top: Optional[float] = None) -> Image.Image:
    """Convert any mode to RGB (or L): alpha is dropped, like tf.io.decode_image(channels=3)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img, top)
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert(target)


def _reduce_converted(img: Image.Image, factor: int, channels: int) -> Image.Image:
    """``to_channels(img).reduce(factor)`` strip by strip: never a full-size converted copy.

    Strips are a multiple of ``factor`` rows high, so the blocks are those of one whole reduce.
    """
    top = _top(img) if img.mode in ("I", "F") or img.mode.startswith("I;16") else None
    w, h = img.size
    out = Image.new("L" if channels == 1 else "RGB", reduced_size(img.size, factor))
    step = factor * max(1, STRIP_PIXELS // (w * factor))
    for y in range(0, h, step):
        strip = to_channels(img.crop((0, y, w, min(h, y + step))), channels, top)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, y // factor))
    return out


def _pixel_box(size: tuple[int, int], region: Box) -> tuple[float, float, float, float]:
    """Normalized [x, y, w, h] to a clamped pixel box (left, top, right, bottom), never empty."""
    W, H = size
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
    resample = RESAMPLE.get(pre.interpolation, Image.Resampling.BILINEAR)
    g = geometry(img.size, region, pre)
    out = img.resize(g.inner, resample, box=g.box)
    if g.inner != (pre.width, pre.height):
        canvas = Image.new(img.mode, (pre.width, pre.height), 0)
        canvas.paste(out, g.offset)
        out = canvas
    arr = np.asarray(out, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def load_upright(src: Source, pre: Preprocess, regions: Sequence[Box] = ((0, 0, 1, 1),),
                 strict: bool = False, max_pixels: Optional[int] = None
                 ) -> tuple[Image.Image, Decoded]:
    """Decode (draft-reduced), read the capture time, convert the channels, rotate upright.

    A large non-JPEG image is reduced by :func:`reduction` while it is converted, the way a
    JPEG is reduced by its DCT-scaled decode.
    """
    img, warnings = _open_tolerant(src, pre, regions, strict, max_pixels)
    path = None if isinstance(src, Image.Image) else src
    t, dt = capture_time(img, path)
    orientation = _orientation(img)
    if img.format not in JPEG_FORMATS and img.width * img.height > REDUCE_ABOVE:
        factor = reduction(_upright_size(img, orientation), pre, regions)
        img = _reduce_converted(img, factor, pre.channels)
    else:
        img = to_channels(img, pre.channels)
    if orientation != 1:
        img = img.transpose(_TRANSPOSE[orientation])
    return img, Decoded(arrays=[], capture_time=t, datetime=dt, warnings=warnings)


def decode(src: Source, pre: Preprocess, regions: Optional[Sequence[Box]] = None,
           strict: bool = False, max_pixels: Optional[int] = -1) -> Decoded:
    """Decode a file or PIL image into model inputs: one array per region (default: whole image).

    ``max_pixels`` caps the decoded pixels (-1: ``max_pixels_default``; None or 0: no cap).
    Raises OSError / ValueError (and Pillow's errors) for unreadable files; callers turn them
    into `failure` entries.
    """
    regions = list(regions) if regions else [(0.0, 0.0, 1.0, 1.0)]
    cap = max_pixels_default if max_pixels == -1 else max_pixels
    img, out = load_upright(src, pre, regions, strict, cap)
    out.arrays = [resize_region(img, r, pre) for r in regions]
    return out


def crop_region(region: Box, size: tuple[int, int], padding: float = 0.0,
                square: bool = False) -> Box:
    """A detector box grown into the classifier's crop: the one crop rule of train and device.

    ``padding`` widens each side by that fraction of the box's width (left/right) and height
    (top/bottom); ``square`` then grows the shorter side (in pixels of the upright ``size``
    image, centred) to the longer one. The result is clipped to the image, so a crop at the
    border stays inside it (and may lose its squareness there, as MegaDetector's crop
    scripts do). Normalized [x, y, w, h] in and out.
    """
    x, y, w, h = (float(v) for v in region)
    x, y, w, h = x - padding * w, y - padding * h, w * (1 + 2 * padding), h * (1 + 2 * padding)
    if square:
        W, H = size
        side = max(w * W, h * H)
        x, w = x - (side / W - w) / 2, side / W
        y, h = y - (side / H - h) / 2, side / H
    left, top = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    right, bottom = min(max(x + w, left), 1.0), min(max(y + h, top), 1.0)
    return left, top, right - left, bottom - top


def upright_file_size(path: Union[str, os.PathLike]) -> tuple[int, int]:
    """(width, height) of an image file after its EXIF orientation, from its header."""
    with open_image(path) as img:
        return _upright_size(img, _orientation(img))

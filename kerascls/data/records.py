"""Image records and the one-time file check that indexes them.

Every file is opened once, with Pillow, before training: that is where broken files are
found (so the tf.data graph never meets one) and where what the graph cannot read
cheaply is learnt — the format, the size (to pick a JPEG DCT scale) and the EXIF
orientation (TF's decoders ignore it).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from kerascls_edge import video as edge_video
from kerascls_edge.decode import jpeg_coverage

log = logging.getLogger("kerascls.data")

FORMATS = {"JPEG": 0, "MPO": 0, "PNG": 1, "BMP": 1}  # 0: decode_jpeg (DCT scaling), 1: other
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
SPLIT_COLUMNS = ("filepath", "label", "location", "seq_id", "datetime", "bbox", "frame")
VIDEO_FORMAT = 2  # ``Record.fmt`` of a video frame (decoded by kerascls_edge.video)


@dataclass(frozen=True)
class VideoRule:
    """Which frames of a video are examples: the device's sampling rule and its parameters
    (``kerascls_edge.video``; written to model.json ``input.video``)."""

    frame_every: float = edge_video.DEFAULT_FRAME_EVERY
    max_frames: int = edge_video.DEFAULT_MAX_FRAMES

    def as_json(self) -> dict:
        return {"frame_every": float(self.frame_every), "max_frames": int(self.max_frames)}


@dataclass(frozen=True)
class Record:
    """One training example: a file, its labels, its grouping keys and an optional box.

    ``bbox`` is ``(x, y, w, h)`` in pixels of the upright image (COCO convention).
    ``width``/``height`` (stored, before orientation), ``orientation`` and ``fmt`` are
    filled by :func:`check_files`. ``frame`` is the frame number of a video's sampled frame
    (-1: not a video frame); :func:`check_files` turns a video's record into one per frame.
    """

    path: str
    labels: tuple[str, ...]
    location: str = ""
    seq_id: str = ""
    datetime: str = ""
    bbox: tuple[float, float, float, float] | None = None
    width: int = 0
    height: int = 0
    orientation: int = 1
    fmt: int = 0
    frame: int = -1


@dataclass
class BadFile:
    """A file that cannot be trained on, and why."""

    path: str
    reason: str


@dataclass
class CheckResult:
    """Readable records and the files that were skipped."""

    records: list[Record]
    bad: list[BadFile] = field(default_factory=list)


def probe(path: str, video: VideoRule | None = None) -> tuple[dict, str]:
    """Header facts of one image, or an empty dict and the reason it is unusable.

    The pixels are decoded at 1/8 scale (Pillow draft mode) so that truncated and corrupt
    JPEGs are caught at a fraction of a full decode's cost. A video's facts are its sampled
    frames (:func:`probe_video`).
    """
    if edge_video.is_video(path):
        return probe_video(path, video or VideoRule())
    try:
        if os.path.getsize(path) == 0:
            return {}, "zero-byte file"
        with Image.open(path) as im:
            if im.format not in FORMATS:
                return {}, f"unsupported format {im.format} (JPEG, PNG or BMP)"
            w, h = im.size
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            im.draft("RGB", (max(w // 8, 1), max(h // 8, 1)))
            im.load()
            lenient = ImageFile.LOAD_TRUNCATED_IMAGES
            if lenient and im.format == "JPEG" and _jpeg_end_missing(path):
                return {}, "truncated JPEG (no end marker)"
            if FORMATS[im.format] == 0 and jpeg_coverage(path) < 1.0:  # libjpeg fills it grey
                return {}, "truncated JPEG (its data ends before the declared image does)"
        return {"width": w, "height": h, "orientation": orientation if 1 <= orientation <= 8
                else 1, "fmt": FORMATS[im.format]}, ""
    except FileNotFoundError:
        return {}, "file not found"
    except UnidentifiedImageError:
        return {}, "not an image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return {}, f"unreadable: {e}"


def probe_video(path: str, rule: VideoRule) -> tuple[dict, str]:
    """The frame numbers the device samples from a video (decoded, nothing kept), or why
    none: the same call the device makes, so a frame that does not decode is not trained on."""
    try:
        v = edge_video.read_video(path, rule.frame_every, rule.max_frames,
                                  convert=lambda img: img.size)
    except edge_video.VideoError as e:
        return {}, f"unreadable video: {e}"
    for w in v.warnings:
        log.warning("%s: %s", path, w)
    w, h = v.frames[0].pixels
    return {"frames": tuple(f.frame_number for f in v.frames), "width": w, "height": h,
            "fmt": VIDEO_FORMAT}, ""


def _jpeg_end_missing(path: str) -> bool:
    """No EOI marker (FF D9) near the end: cut short.

    Only asked when someone set Pillow's process-wide LOAD_TRUNCATED_IMAGES (which hides
    truncation): some cameras append more than 4 KiB after the marker (Snapshot Safari).
    """
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        return b"\xff\xd9" not in f.read()


def check_files(records: list[Record], threads: int = 8,
                video: VideoRule | None = None) -> CheckResult:
    """Probe every distinct file once (in threads: Pillow decodes without the GIL).

    A video's record becomes one record per sampled frame (``video``: the sampling rule),
    each with the video's labels; a record that names a frame already keeps it only if the
    rule still samples it (a split list read back).
    """
    paths = sorted({r.path for r in records})
    with ThreadPoolExecutor(threads) as pool:
        facts = dict(zip(paths, pool.map(lambda p: probe(p, video), paths)))
    good = [g for r in records if facts[r.path][0] for g in _checked(r, facts[r.path][0])]
    bad = [BadFile(p, reason) for p, (info, reason) in facts.items() if not info]
    for b in bad:
        log.warning("skipping %s: %s", b.path, b.reason)
    return CheckResult(good, bad)


def _checked(rec: Record, info: dict) -> list[Record]:
    """The record with its file's facts; a video's: one per sampled frame."""
    if "frames" not in info:
        return [replace(rec, **info)]
    facts = {k: v for k, v in info.items() if k != "frames"}
    if rec.frame >= 0:
        if rec.frame in info["frames"]:
            return [replace(rec, bbox=None, **facts)]
        log.warning("skipping frame %d of %s: not sampled from the video now", rec.frame,
                    rec.path)
        return []
    return [replace(rec, bbox=None, frame=n, **facts) for n in info["frames"]]


def write_bad_files(bad: list[BadFile], run_dir: Path) -> Path:
    """``RUN/bad_files.json``: every skipped file with its reason (an empty list if none)."""
    out = Path(run_dir) / "bad_files.json"
    out.write_text(json.dumps([b.__dict__ for b in bad], indent=2))
    return out


def join_labels(labels: tuple[str, ...]) -> str:
    """Labels as one ``a|b`` field; a ``|`` or ``\\`` inside a label is backslash-escaped,
    so a class folder named ``a|b`` stays one class through the split files."""
    return "|".join(lab.replace("\\", "\\\\").replace("|", "\\|") for lab in labels)


def split_labels(text: str) -> tuple[str, ...]:
    """The inverse of :func:`join_labels`: split at unescaped ``|``, unescape."""
    labels, current, chars = [], [], iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, "\\"))
        elif ch == "|":
            labels.append("".join(current))
            current = []
        else:
            current.append(ch)
    return tuple(labels + ["".join(current)])


def write_split_csv(records: list[Record], path: Path) -> None:
    """A split's file list, readable back with :func:`read_split_csv` (or a csv: source)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SPLIT_COLUMNS)
        for r in records:
            w.writerow([r.path, join_labels(r.labels), r.location, r.seq_id, r.datetime,
                        " ".join(map(str, r.bbox)) if r.bbox else "",
                        r.frame if r.frame >= 0 else ""])


def read_split_csv(path: Path) -> list[Record]:
    """Records of a split file written by :func:`write_split_csv` (paths as written)."""
    with open(path, newline="") as f:
        return [Record(row["filepath"], split_labels(row["label"]), row["location"],
                       row["seq_id"], row["datetime"],
                       tuple(float(v) for v in row["bbox"].split()) if row["bbox"] else None,
                       frame=int(row.get("frame") or -1))
                for row in csv.DictReader(f)]

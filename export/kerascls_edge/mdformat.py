"""MegaDetector batch output (format 1.6) and CSV: building per-image records and writing files.

Records are MegaDetector image entries plus private keys starting with "_" (capture time, top-k,
sparse probabilities for sequence smoothing); the journal stores them as they are and the
writers strip the private keys.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from .classifier import top_k

FORMAT_VERSION = "1.6"
DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
_PERSON = {"human", "person", "people", "homo_sapiens", "homo sapiens"}
_VEHICLE = {"vehicle", "car", "truck", "motorcycle", "bicycle"}
WHOLE_IMAGE_BBOX = [0.0, 0.0, 1.0, 1.0]
SPARSE_MIN = 1e-3  # probabilities kept for sequence smoothing; the rest count as 0
SPARSE_MAX = 32


def classification_categories(labels: Sequence[str]) -> dict[str, str]:
    """MegaDetector wants string ids of ints: output index i -> "i"."""
    return {str(i): name for i, name in enumerate(labels)}


def detection_category(label: str) -> str:
    """Which MegaDetector category a whole-image class stands for (person/vehicle/animal)."""
    name = label.strip().lower()
    if name in _PERSON:
        return "2"
    if name in _VEHICLE:
        return "3"
    return "1"


def ranked(probs: np.ndarray, k: int) -> list[list]:
    """[[category_id, conf], ...] highest first, rounded; classes that round to 0 are left out."""
    out = [[str(i), round(p, 4)] for i, p in top_k(probs, k)]
    return out[:1] + [c for c in out[1:] if c[1] > 0]


def sparse(probs: np.ndarray) -> dict[str, float]:
    """The probabilities worth keeping for smoothing: the largest ones above SPARSE_MIN."""
    return {c: p for c, p in ranked(probs, SPARSE_MAX) if p >= SPARSE_MIN}


def image_record(file: str, probs: np.ndarray, labels: Sequence[str], empty: set[int],
                 k: int, capture_time: Optional[float], dt: Optional[str],
                 warnings: Sequence[str]) -> dict:
    """A whole-image classifier's MegaDetector entry.

    An "empty" top class gives no detection; anything else one whole-frame detection whose conf
    is 1 - P(empty classes) (the chance that something is there) or, with no empty class, the
    top probability.
    """
    top = int(np.argmax(probs))
    k_list = ranked(probs, k)
    rec: dict = {"file": file}
    if top in empty:
        rec["detections"] = []
    else:
        conf = 1.0 - float(sum(probs[i] for i in empty)) if empty else float(probs[top])
        rec["detections"] = [{
            "category": detection_category(labels[top]),
            "conf": round(min(max(conf, 0.0), 1.0), 4),
            "bbox": list(WHOLE_IMAGE_BBOX),
            "classifications": k_list,
        }]
    if dt:
        rec["datetime"] = dt
    if warnings:
        rec["warnings"] = list(warnings)
    rec["_t"] = capture_time
    rec["_k"] = k_list
    rec["_p"] = sparse(probs)
    return rec


VIDEO_RULE = "mean"  # the default per-video rule (video.video_scores; a bundle may name another)


def _frame_detection(probs: np.ndarray, labels: Sequence[str], empty: set[int],
                     k_list: list) -> Optional[dict]:
    """One whole-frame detection, by the image rule (None when the top class is empty)."""
    top = int(np.argmax(probs))
    if top in empty:
        return None
    conf = 1.0 - float(sum(probs[i] for i in empty)) if empty else float(probs[top])
    return {"category": detection_category(labels[top]),
            "conf": round(min(max(conf, 0.0), 1.0), 4),
            "bbox": list(WHOLE_IMAGE_BBOX), "classifications": k_list}


def video_record(file: str, frame_probs: np.ndarray, frames: Sequence[tuple[int, float]],
                 frame_rate: float, labels: Sequence[str], empty: set[int], k: int,
                 capture_time: Optional[float], dt: Optional[str], warnings: Sequence[str],
                 rank=None, rule: str = VIDEO_RULE) -> dict:
    """A video's MegaDetector entry (docs/edge-outputs.md, "Videos").

    Each sampled frame is classified as a photo would be: a whole-frame detection carrying
    its ``frame_number`` (none when its top class is empty), as MegaDetector writes videos.
    The per-video result is the ``video`` block: the rule, the frames used, and the
    ranking of the frames' probabilities combined by ``rule`` (video.video_scores), plus
    every frame's own ranking (blank frames included). ``rank(k_list, probs)`` re-ranks
    (the taxonomy roll-up).
    """
    from .video import video_scores

    rank = rank or (lambda k_list, _p: k_list)
    probs = video_scores(frame_probs, rule)
    video_k = rank(ranked(probs, k), probs)
    dets, per_frame = [], []
    for (number, t), p in zip(frames, frame_probs):
        k_list = rank(ranked(p, k), p)
        det = _frame_detection(p, labels, empty, k_list)
        if det is not None:
            dets.append({**det, "frame_number": number})
        per_frame.append({"frame_number": number, "time": round(t, 4),
                          "classifications": k_list})
    rec: dict = {"file": file, "frame_rate": frame_rate,
                 "frames_processed": [n for n, _ in frames], "detections": dets,
                 "video": {"rule": rule, "frames_used": len(frames),
                           "classifications": video_k, "frames": per_frame}}
    if dt:
        rec["datetime"] = dt
    if warnings:
        rec["warnings"] = list(warnings)
    rec["_t"] = capture_time
    rec["_k"] = video_k
    rec["_p"] = sparse(probs)
    return rec


def crops_video_block(frames: Sequence[tuple[int, float, np.ndarray]], k: int,
                      rank=None, rule: str = VIDEO_RULE) -> dict:
    """The ``video`` block of a detector's video entry (``--detections``): a frame's
    probabilities are ``rule`` over its classified boxes, the video's ``rule`` over those
    frames (whole-frame mode is the case of one whole-frame box per frame).

    ``frames``: (frame_number, time, (boxes, classes) probabilities) per frame with boxes.
    """
    from .video import video_scores

    rank = rank or (lambda k_list, _p: k_list)
    per_frame, rows = [], []
    for number, t, box_probs in frames:
        p = video_scores(box_probs, rule)
        rows.append(p)
        per_frame.append({"frame_number": number, "time": round(t, 4),
                          "boxes": len(box_probs), "classifications": rank(ranked(p, k), p)})
    probs = video_scores(np.stack(rows), rule)
    return {"rule": rule, "frames_used": len(frames), "classifications":
            rank(ranked(probs, k), probs), "frames": per_frame}


def video_failure_record(file: str, err: BaseException) -> dict:
    """An unreadable video: MegaDetector's failed-video entry (frame rate -1, no frames)."""
    return {**failure_record(file, err), "frame_rate": -1.0, "frames_processed": []}


def failure_record(file: str, err: BaseException) -> dict:
    """An unreadable image: a `failure` string and null detections, as the format requires."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return {"file": file, "failure": f"{type(err).__name__}: {msg}"[:300], "detections": None}


def info_block(name: str, thresholds: dict, model: str, extra: Optional[dict] = None,
               base: Optional[dict] = None) -> dict:
    """The `info` header: format 1.6, who classified, when, and at which thresholds."""
    from . import __version__

    info = dict(base or {})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    info.update({
        "format_version": FORMAT_VERSION,
        "classifier": name,
        "classification_completion_time": now,
        "classifier_metadata": {
            "typical_classification_threshold": float(thresholds.get("default", 0.5)),
            "thresholds": thresholds,
            "model": model,
            "runtime": f"kerascls-edge {__version__}",
            **(extra or {}),
        },
    })
    return info


def public(rec: dict) -> dict:
    """The entry as written: private "_" keys removed."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def _atomic_open(path: Path):
    from .journal import open_fresh

    tmp = path.with_name(f".{path.name}.tmp")
    return tmp, open_fresh(tmp, newline="")


def _publish(tmp: Path, f, path: Path) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(tmp, path)


@contextlib.contextmanager
def _atomic_stream(path: Path):
    """A text file that appears at ``path`` only if the block completes (else is removed)."""
    tmp, f = _atomic_open(path)
    try:
        yield f
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    _publish(tmp, f, path)


def write_json(path: Path, header: dict, records: Iterable[dict]) -> int:
    """Stream a MegaDetector file (header keys, then `images` last) atomically; returns count."""
    n = 0
    with _atomic_stream(path) as f:
        f.write("{\n")
        for key, value in header.items():
            f.write(f"{json.dumps(key)}: {json.dumps(value, indent=1)},\n")
        f.write('"images": [')
        for rec in records:
            f.write(",\n" if n else "\n")
            f.write(json.dumps(public(rec)))
            n += 1
        f.write("\n]\n}\n")
    return n


IMAGE_CSV_FIELDS = ["file", "label", "confidence", "top_k", "detection", "bbox", "datetime",
                    "sequence_id", "sequence_label", "sequence_confidence", "failure",
                    "warnings"]
# Videos: a "video" row (its label by VIDEO_RULE, frames used), then a "frame" row per frame.
CSV_FIELDS = [*IMAGE_CSV_FIELDS, "row", "frames_used", "frame_number", "frame_time"]


def _fmt_k(k_list: Sequence, labels: Sequence[str]) -> str:
    return ";".join(f"{labels[int(c)]}:{p:.4f}" for c, p in k_list)


def csv_rows(rec: dict, labels: Sequence[str]) -> Iterator[dict]:
    """One row per image (whole-image mode) or per classified detection (detections mode)."""
    base = {"file": rec["file"], "datetime": rec.get("datetime", ""),
            "failure": rec.get("failure", ""), "warnings": ";".join(rec.get("warnings", []))}
    seq = rec.get("sequence")
    if seq and seq.get("classifications"):
        c, p = seq["classifications"][0]
        base.update(sequence_id=seq["id"], sequence_label=labels[int(c)],
                    sequence_confidence=f"{p:.4f}")
    if "video" in rec or "frames_processed" in rec:
        yield from _video_rows(rec, base, labels)
        return
    if "_k" in rec or rec.get("failure"):
        yield {**base, **_ranked_cells(rec.get("_k") or [], labels)}
        return
    for i, det in enumerate(rec.get("detections") or []):
        if det.get("classifications"):
            yield {**base, "detection": i, "bbox": " ".join(f"{v:.4f}" for v in det["bbox"]),
                   **_ranked_cells(det["classifications"], labels)}


def _video_rows(rec: dict, base: dict, labels: Sequence[str]) -> Iterator[dict]:
    """A video's row (``row`` = video: its per-video label), then one ``frame`` row each.

    A ranking may be empty (no class kept, or a file from another tool): its row then has
    no label, as an image's row without classifications has none.
    """
    video = rec.get("video") or {}
    yield {**base, "row": "video", "frames_used": video.get("frames_used", 0),
           **_ranked_cells(video.get("classifications") or [], labels)}
    for fr in video.get("frames", []):
        yield {"file": rec["file"], "row": "frame", "frame_number": fr["frame_number"],
               "frame_time": f"{fr['time']:.3f}",
               **_ranked_cells(fr.get("classifications") or [], labels)}


def _ranked_cells(k_list: list, labels: Sequence[str]) -> dict:
    """label, confidence and top_k cells of a [[class_id, conf], ...] ranking (none if empty)."""
    if not k_list:
        return {}
    return {"label": labels[int(k_list[0][0])], "confidence": f"{k_list[0][1]:.4f}",
            "top_k": _fmt_k(k_list, labels)}


def csv_text(value: object) -> object:
    """A CSV cell that is valid UTF-8 whatever the file name's bytes were.

    File names that are not UTF-8 reach Python as lone surrogates (PEP 383); in the CSV each
    undecodable byte is written as a backslash escape, `\\xff`, as `ls -b` shows it. (The JSON
    output keeps them as JSON `\\udcff` escapes, which Python reads back to the same name.)
    """
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape") if _only_escapes(value) else \
            value.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")


def _only_escapes(value: str) -> bool:
    """True when every surrogate in `value` is one PEP 383 made from an undecodable byte."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in value)


def write_csv(path: Path, records: Iterable[dict], labels: Sequence[str]) -> int:
    """Stream the CSV atomically (text cells spreadsheet-safe, spreadsheet.py); returns images."""
    from .spreadsheet import spreadsheet_row

    n = 0
    with _atomic_stream(path) as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            writer.writerows(spreadsheet_row({k: csv_text(v) for k, v in row.items()})
                             for row in csv_rows(rec, labels))
            n += 1
    return n

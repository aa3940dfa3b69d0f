"""`--sort_into DIR`: each image linked (or copied) into DIR/LABEL/, uncertain ones into
DIR/_uncertain/ — how people without a viewer look through a card's results.

Originals are only ever read: a link points at the original, a copy is written beside DIR
under a temporary name and renamed into place; nothing is moved or written at the source.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Optional

from .bundle import EdgeError

UNCERTAIN = "_uncertain"
FAILED = "_failed"


def _folder_name(label: str) -> str:
    """A label as one safe path component (no separators, no leading dot, never empty)."""
    name = "".join("_" if c in "/\\\0" else c for c in str(label)).strip()
    name = name.lstrip(".") or "_unnamed"
    return name if name not in (UNCERTAIN, FAILED) else f"{name}_"


def _best_json(rec: dict, cls: dict, det_names: dict, blank: str) -> tuple[Optional[str], float]:
    """(label, confidence) of an MD entry: its most confident classified box, else its most
    confident box's category, else blank. None label: a failure."""
    if rec.get("failure") or rec.get("detections") is None:
        return None, 0.0
    best: tuple[Optional[str], float] = (blank, 1.0)
    top = -1.0
    for det in rec["detections"]:
        ranking = det.get("classifications") or []
        if ranking:
            label, p = cls.get(str(ranking[0][0]), str(ranking[0][0])), float(ranking[0][1])
        else:
            label = det_names.get(str(det.get("category")), "animal")
            p = float(det.get("conf", 0.0))
        if p > top:
            best, top = (label, p), p
    return best


def labels_from_json(path: Path, blank: str) -> dict[str, tuple[Optional[str], float]]:
    md = json.loads(Path(path).read_text(encoding="utf-8"))
    cls = md.get("classification_categories") or {}
    det_names = md.get("detection_categories") or {}
    return {str(r["file"]): _best_json(r, cls, det_names, blank) for r in md.get("images") or []}


def labels_from_csv(path: Path, blank: str) -> dict[str, tuple[Optional[str], float]]:
    out: dict[str, tuple[Optional[str], float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            file = row["file"]
            if row.get("failure"):
                out[file] = (None, 0.0)
                continue
            label, conf = row.get("label") or blank, float(row.get("confidence") or 1.0)
            if file not in out or conf > out[file][1]:
                out[file] = (label, conf)
    return out


def _place(src: Path, dest: Path, copy: bool) -> bool:
    """Create dest (a link to src, or a copy) atomically; False when it is already there."""
    if os.path.lexists(dest):
        if dest.is_symlink() and os.path.realpath(dest) == os.path.realpath(src):
            return False
        if not dest.is_symlink() and not copy:
            raise EdgeError(f"refusing to replace {dest}: it is not a link this sort made")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.sorting")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    if copy:
        shutil.copy2(src, tmp, follow_symlinks=True)
    else:
        os.symlink(os.path.abspath(src), tmp)
    os.replace(tmp, dest)
    return True


def check_target(target: Path, inputs: list[str]) -> None:
    """DIR must not lie inside an input folder: a later --recursive run would read the links."""
    t = os.path.realpath(target)
    for p in inputs:
        if os.path.isdir(p):
            root = os.path.realpath(p)
            if t == root or t.startswith(root + os.sep):
                raise EdgeError(f"--sort_into {target} lies inside the input folder {p}; "
                                "choose a folder outside it")


def sort_into(labels: dict[str, tuple[Optional[str], float]], image_dir: Path, target: Path,
              threshold: float, copy: bool = False) -> dict:
    """Link/copy every image into target/LABEL/<its relative path>; returns counts."""
    counts = {"sorted": 0, "uncertain": 0, "failed": 0, "already": 0}
    for file, (label, conf) in labels.items():
        src = Path(file) if os.path.isabs(file) else image_dir / file
        if label is None:
            folder = FAILED
            counts["failed"] += 1
        elif conf < threshold:
            folder = UNCERTAIN
            counts["uncertain"] += 1
        else:
            folder = _folder_name(label)
            counts["sorted"] += 1
        rel = Path(*[p for p in Path(file).parts if p not in ("..", ".", os.sep)] or ["_"])
        if not os.path.exists(src):
            continue
        if not _place(src, target / folder / rel, copy):
            counts["already"] += 1
    return {**counts, "folder": str(target), "mode": "copy" if copy else "link"}

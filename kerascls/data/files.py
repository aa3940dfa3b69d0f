"""Image files as a data source: ``FileSource`` and the checked readers every file kind uses.

``sources`` (folder, CSV, COCO) and ``camtrap_sources`` (MegaDetector, Camtrap DP) both
build on this module; it imports neither, so ``sources → camtrap_sources`` is the only edge
between them.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from kerascls.data.records import BadFile, Record, VideoRule, check_files
from kerascls.data.splits import split_records
from kerascls.errors import UserError

DEFAULT_FILE_IMAGE_SIZE = 224
SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


@dataclass
class FileSource:
    """Image files with string labels; optionally already split (train/val/test folders)."""

    name: str
    class_names: list[str]
    records: list[Record]
    presplit: dict[str, list[Record]] | None = None
    bad: list[BadFile] = field(default_factory=list)
    image_shape: tuple[int, int, int] = (DEFAULT_FILE_IMAGE_SIZE, DEFAULT_FILE_IMAGE_SIZE, 3)
    video: VideoRule = field(default_factory=VideoRule)  # which frames of a video are examples
    x_test = None  # no in-memory test arrays: the test split is a file list

    @property
    def multilabel(self) -> bool:
        return any(len(r.labels) > 1 for r in self.records)

    def check(self) -> "FileSource":
        """Probe every file once; drop and remember the bad ones; fail if a class is left empty.

        A video becomes one record per sampled frame (``self.video``), all in its split.
        """
        result = check_files(self.records, video=self.video)
        self.bad, self.records = result.bad, result.records
        if self.presplit:
            by_key: dict[tuple, list[Record]] = {}
            for r in result.records:  # a video's frames share its (path, labels)
                key = (r.path, r.labels, None if r.frame >= 0 else r.bbox)
                by_key.setdefault(key, []).append(r)
            self.presplit = {s: [g for r in recs for g in by_key.get(
                (r.path, r.labels, r.bbox), [])] for s, recs in self.presplit.items()}
        if not self.records:
            raise UserError(f"{self.name}: no readable image or video ({len(self.bad)} files "
                             "skipped)")
        require_every_class(self.records, self.class_names, self.name, "readable ")
        return self

    def splits(self, val_fraction: float, test_fraction: float, seed: int
               ) -> dict[str, list[Record]]:
        """train/val/test records: the given folders, else a leak-free grouped split."""
        if not self.presplit:
            return split_records(self.records, val_fraction, test_fraction, seed)
        out = {s: list(self.presplit.get(s, [])) for s in SPLIT_DIRS}
        if not out["val"] and val_fraction:
            parts = split_records(out["train"], val_fraction, 0.0, seed)
            out["train"], out["val"] = parts["train"], parts["val"]
        return out


def require_every_class(records: list[Record], names: list[str], where: str,
                        what: str) -> None:
    """Refuse a class of ``names`` with no record: one line naming the first missing."""
    seen = {label for r in records for label in r.labels}
    missing = [n for n in names if n not in seen]
    if missing:
        raise UserError(f"{where}: class {missing[0]!r} has no {what}image"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def existing(path: str, what: str) -> Path:
    """``path`` (``~`` expanded) if it exists; else one line naming ``what`` is missing."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    return p


def read_text(file: Path, what: str) -> str:
    """The file as UTF-8 (a BOM allowed); another encoding is named with its line."""
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{file}: line {line} is not UTF-8 (byte 0x{raw[e.start]:02x}); "
                         f"save the {what} as UTF-8") from None


def csv_rows(file: Path) -> list[dict]:
    """Rows of a CSV with a header; a row too short for filepath/label is named by its line."""
    reader = csv.DictReader(io.StringIO(read_text(file, "CSV"), newline=""))
    rows = []
    try:
        for row in reader:
            for col in ("filepath", "label"):
                if col in reader.fieldnames and row.get(col) is None:
                    raise UserError(f"{file}: line {reader.line_num} has no {col} field "
                                     "(too few columns)")
            rows.append(row)
    except csv.Error as e:
        raise UserError(f"{file}: line {reader.line_num}: {e}") from None
    return rows


def read_json(file: Path, what: str) -> object:
    """Parse a JSON file; errors name the file and the line, never a traceback."""
    try:
        return json.loads(read_text(file, what))
    except json.JSONDecodeError as e:
        raise UserError(f"{file}: line {e.lineno} column {e.colno}: not valid JSON "
                         f"({e.msg})") from None
    except RecursionError:
        raise UserError(f"{file}: nested too deeply to be a {what}") from None

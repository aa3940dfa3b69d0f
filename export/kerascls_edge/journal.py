"""Checkpoint journal for long unattended runs: results survive `kill -9` and power cuts.

The sidecar is a directory `<output>.partial/`: `meta.json` (what run it belongs to) and
`part-NNNNNN.jsonl` files, one per checkpoint, each written to a temp file, fsynced and moved
into place with `os.replace`. A part is therefore either complete or absent, and a checkpoint
costs O(N) for its N new results: rewriting one growing sidecar file would make a 100,000-image
run quadratic in I/O. Resume reads the parts back, skips the files they hold, and the final
output is assembled by streaming them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence, TextIO

from .bundle import EdgeError

_PART_PREFIX = "part-"


def open_fresh(tmp: Path, newline: Optional[str] = None):
    """Open a temp file for writing that is surely new: whatever sat at its name (a stale temp
    file, or a symlink planted there) is removed, never written through."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o666)
    return open(fd, "w", encoding="utf-8", newline=newline)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file so readers see the old or the new content, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open_fresh(tmp) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def bundle_identity(model_path: os.PathLike, labels: Sequence[str]) -> str:
    """sha256 of the model file and the labels: a checkpoint belongs to exactly this model."""
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(json.dumps(list(labels)).encode())
    return h.hexdigest()


class CorruptPart(ValueError):
    """A checkpoint part that cannot be read back (truncated, binary, not our records)."""


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ranked_ok(v: object, n_classes: int) -> bool:
    """[[class_id, conf], ...] with ids naming one of the model's classes."""
    return isinstance(v, list) and all(
        isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and c[0].isdigit()
        and c[0].isascii() and int(c[0]) < n_classes and _num(c[1]) for c in v)


def _detections_ok(dets: object, n_classes: int) -> bool:
    if dets is None:
        return True
    return isinstance(dets, list) and all(
        isinstance(d, dict) and isinstance(d.get("bbox", []), list)
        and all(_num(b) for b in d.get("bbox", []))
        and _ranked_ok(d.get("classifications", []), n_classes) for d in dets)


def record_problem(rec: object, n_classes: int) -> Optional[str]:
    """Why a stored record could not have come from this journal, or None if it could."""
    if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
        return 'not a result record with a "file"'
    checks = {
        "_k": lambda v: _ranked_ok(v, n_classes),
        "_p": lambda v: isinstance(v, dict) and all(
            k.isdigit() and k.isascii() and int(k) < n_classes and _num(x) for k, x in v.items()),
        "_t": lambda v: v is None or _num(v),
        "failure": lambda v: v is None or isinstance(v, str),
        "datetime": lambda v: v is None or isinstance(v, str),
        "warnings": lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
        "detections": lambda v: _detections_ok(v, n_classes),
    }
    for key, ok in checks.items():
        if key in rec and not ok(rec[key]):
            return f"field {key!r} of {rec['file']!r} is malformed"
    return None


def read_part(path: Path, n_classes: int = 1 << 30) -> list[dict]:
    """All records of one part, or CorruptPart: a part is used whole or not at all."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                problem = record_problem(rec, n_classes)
                if problem:
                    raise CorruptPart(f"line {n}: {problem}")
                out.append(rec)
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptPart(str(e)) from None
    except (ValueError, RecursionError) as e:
        raise CorruptPart(str(e).splitlines()[0] if str(e) else "unreadable") from None
    if out and not line.endswith("\n"):
        raise CorruptPart("truncated (no end of line after the last record)")
    return out


class Journal:
    """Append-only, crash-safe store of per-image result records keyed by their `file`."""

    def __init__(self, directory: Path, every: int = 100, stderr: Optional[TextIO] = None,
                 n_classes: int = 1 << 30) -> None:
        self.dir = Path(directory)
        self.n_classes = n_classes
        self.every = max(1, int(every))
        self.stderr = stderr
        self.done: set[str] = set()
        self._bad: set[Path] = set()
        self._pending: list[str] = []
        self._next = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, meta: dict, resume: bool, overwrite: bool) -> int:
        """Start or continue a journal; returns how many results a resumed run already has.

        Refuses to silently discard an earlier run's checkpoint, and refuses to resume one
        that was made with a different model or inputs (its results would not belong here).
        """
        if os.path.lexists(self.dir) and not self.dir.is_dir():
            raise EdgeError(f"the checkpoint path {self.dir} exists and is not a folder; "
                            "move it away")
        if self.dir.exists():
            if resume:
                self._check_meta(meta)
                return self._load()
            if not overwrite:
                raise EdgeError(f"a checkpoint from an earlier run exists at {self.dir}: "
                                "pass --resume to continue it or --overwrite to start over")
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        atomic_write_text(self.dir / "meta.json", json.dumps(meta, indent=1))
        return 0

    def _check_meta(self, meta: dict) -> None:
        """Resume only a checkpoint that says it was made by this bundle on these inputs.

        A checkpoint whose meta.json is lost or unreadable is refused unless it holds no
        results yet (a kill between creating the folder and writing meta.json).
        """
        path = self.dir / "meta.json"
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            old = None
        except (OSError, ValueError, RecursionError) as e:
            raise EdgeError(f"cannot resume: {path} is unreadable ({e.__class__.__name__}); "
                            "use --overwrite to start over") from None
        if old is None:
            if self._parts():
                raise EdgeError(f"cannot resume: {path} is missing, so nothing says which "
                                "model made these results; use --overwrite to start over")
            atomic_write_text(path, json.dumps(meta, indent=1))
            return
        if not isinstance(old, dict) or old != meta:
            old = old if isinstance(old, dict) else {}
            keys = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise EdgeError(f"cannot resume: the checkpoint at {self.dir} was made with a "
                            f"different {', '.join(keys)}; use --overwrite to start over")

    def _parts(self) -> list[Path]:
        """Published parts, in order (names the journal would not write are ignored)."""
        parts = []
        for p in self.dir.glob(f"{_PART_PREFIX}*.jsonl"):
            num = p.stem[len(_PART_PREFIX):]
            if num.isdigit() and num.isascii():
                parts.append((int(num), p))
        return [p for _, p in sorted(parts)]

    def _load(self) -> int:
        """Collect finished files from complete parts; drop temp files a kill left behind.

        A corrupt part is named on stderr, set aside as `<part>.corrupt`, and its images are
        classified again (they are not in `done`).
        """
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        parts = self._parts()
        for part in parts:
            try:
                recs = read_part(part, self.n_classes)
                names = [r["file"] for r in recs]
                if len(set(names)) != len(names) or not self.done.isdisjoint(names):
                    raise CorruptPart("it repeats images that another part holds")
            except CorruptPart as e:
                print(f"kerascls-edge: warning: checkpoint part {part} is corrupt ({e}); "
                      "its images will be classified again", file=self.stderr or sys.stderr)
                os.replace(part, part.with_name(part.name + ".corrupt"))
                continue
            self.done.update(r["file"] for r in recs)
        if parts:
            self._next = int(parts[-1].stem[len(_PART_PREFIX):]) + 1
        return len(self.done)

    def remove(self) -> None:
        """Delete the journal once the final output is safely written."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- writing ------------------------------------------------------------------------------

    def add(self, record: dict) -> None:
        """Queue one result (a file already stored is ignored, so parts never hold duplicates).

        `done` is the only per-file state kept: one short string per image.
        """
        if record["file"] in self.done:
            return
        self.done.add(record["file"])
        self._pending.append(json.dumps(record, separators=(",", ":")))
        if len(self._pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write the queued results as one new, atomically published part."""
        if not self._pending:
            return
        path = self.dir / f"{_PART_PREFIX}{self._next:06d}.jsonl"
        atomic_write_text(path, "\n".join(self._pending) + "\n")
        self._next += 1
        self._pending.clear()

    # -- reading ------------------------------------------------------------------------------

    def records(self) -> Iterator[dict]:
        """Every stored record, in the order they were written (`add` kept them unique)."""
        for part in self._parts():
            try:
                yield from read_part(part, self.n_classes)
            except CorruptPart as e:  # damaged after this run read it: say so, do not crash
                raise EdgeError(f"checkpoint part {part} became unreadable: {e}") from None

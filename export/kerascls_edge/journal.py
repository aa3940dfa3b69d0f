"""Checkpoint journal for long unattended runs: results survive `kill -9` and power cuts.

The sidecar is a directory `<output>.partial/`: `meta.json` (what run it belongs to) and
`part-NNNNNN.jsonl` files, one per checkpoint, each written to a temp file, fsynced and moved
into place with `os.replace`. A part is therefore either complete or absent, and a checkpoint
costs O(N) for its N new results: rewriting one growing sidecar file would make a 100,000-image
run quadratic in I/O. Resume reads the parts back, skips the files they hold, and the final
output is assembled by streaming them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from .bundle import EdgeError

_PART_PREFIX = "part-"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file so readers see the old or the new content, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Journal:
    """Append-only, crash-safe store of per-image result records keyed by their `file`."""

    def __init__(self, directory: Path, every: int = 100) -> None:
        self.dir = Path(directory)
        self.every = max(1, int(every))
        self.done: set[str] = set()
        self._pending: list[str] = []
        self._next = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, meta: dict, resume: bool, overwrite: bool) -> int:
        """Start or continue a journal; returns how many results a resumed run already has.

        Refuses to silently discard an earlier run's checkpoint, and refuses to resume one
        that was made with a different model or inputs (its results would not belong here).
        """
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
        try:
            old = json.loads((self.dir / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old is not None and old != meta:
            keys = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise EdgeError(f"cannot resume: the checkpoint at {self.dir} was made with a "
                            f"different {', '.join(keys)}; use --overwrite to start over")
        if old is None:
            atomic_write_text(self.dir / "meta.json", json.dumps(meta, indent=1))

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.dir.glob(f"{_PART_PREFIX}*.jsonl"))

    def _load(self) -> int:
        """Collect finished files from complete parts; drop temp files a kill left behind."""
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        parts = self._parts()
        for rec in self.records():
            self.done.add(rec["file"])
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
            with open(part, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)

"""Checkpoint journal for long unattended runs: results survive `kill -9` and power cuts.

The sidecar is a directory `<output>.partial/`: `meta.json` (what run it belongs to) and
`part-NNNNNN.jsonl` files, one per checkpoint, each written to a temp file, fsynced and moved
into place with `os.replace`. A part is therefore either complete or absent, and a checkpoint
costs O(N) for its N new results: rewriting one growing sidecar file would make a 100,000-image
run quadratic in I/O. Resume reads the parts back, skips the files they hold *unchanged*, and
the final output is assembled by streaming them.

Each record carries its file's identity (`_id`, see `file_identity`): a resumed run redoes a
file whose content changed under the same name (a refilled SD card restarts at IMG_0001), and
the newer record supersedes the older one. `OutputLock` keeps a second run off the same output.
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
from .userfiles import open_regular

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked (the device runtime targets Linux)
    fcntl = None  # type: ignore[assignment]

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


# -- file identity ------------------------------------------------------------------------------

SAMPLE_BYTES = 65536  # hashed from each end of a file


def file_identity(path: os.PathLike) -> Optional[str]:
    """"SIZE:MTIME_NS:HASH" of an image, or None if it cannot be read (its failure is recorded).

    HASH is sha256 over the first and last 64 KB: a camera writes the capture time, the EXIF
    thumbnail and the first scans there, so another photo under a reused name differs even at
    the same size and with its mtime preserved. The whole file is not hashed: that costs ~7 %
    of a decode here (1.4 of 21.6 ms on 1.8 MB frames; more on a Pi without SHA instructions)
    and would make resuming re-read every finished file (the sample: 0.1 ms, 128 KB a file).
    Device and inode are left out: FAT/exFAT cards get new inode numbers at every mount, so
    they would redo a whole card after a re-insert.
    """
    try:
        with open_regular(path, "image") as f:
            st = os.fstat(f.fileno())
            h = hashlib.sha256(f.read(SAMPLE_BYTES))
            if st.st_size > SAMPLE_BYTES:
                f.seek(max(SAMPLE_BYTES, st.st_size - SAMPLE_BYTES))
                h.update(f.read(SAMPLE_BYTES))
    except (OSError, EdgeError):
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()[:32]}"


def _key(ident: object) -> Optional[bytes]:
    """What the journal keeps in memory per file: 12 bytes, not the identity string."""
    if not isinstance(ident, str):
        return None
    return hashlib.blake2b(ident.encode(), digest_size=12).digest()


# -- output lock --------------------------------------------------------------------------------

_HELD: dict[str, list] = {}  # lock file -> [fd, depth]: re-entrant within one process


class OutputLock:
    """An exclusive lock on one output, held for a whole run (`.NAME.lock` beside it).

    A second run on the same output refuses at once, naming the first run's pid, instead of
    deleting its checkpoint (`--overwrite`) or publishing over it. flock is released by the
    kernel when a run dies, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, output: os.PathLike) -> None:
        out = Path(os.path.abspath(output))
        self.output = out
        self.path = out.with_name(f".{out.name}.lock")

    def __enter__(self) -> "OutputLock":
        key = str(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
        elif fcntl is not None and self.path.parent.is_dir():  # else the run refuses anyway
            _HELD[key] = [self._acquire(), 1]
        return self

    def __exit__(self, *exc: object) -> None:
        held = _HELD.get(str(self.path))
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[str(self.path)]
            self.path.unlink(missing_ok=True)  # while still locked: no one can own this file
            os.close(held[0])

    def _acquire(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as e:
                raise EdgeError(f"cannot lock {self.output}: {e.strerror or e}: "
                                f"{self.path}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise EdgeError(f"another run (pid {pid}) is writing {self.output}; wait for "
                                "it to finish or stop it (its lock is "
                                f"{self.path.name})") from None
            if self._still_at_path(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            os.close(fd)  # the holder removed it as we opened it: lock the new one

    def _still_at_path(self, fd: int) -> bool:
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


# -- records ------------------------------------------------------------------------------------


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


def _video_ok(v: object, n_classes: int) -> bool:
    """A video's block (mdformat.video_record): its ranking and every frame's."""
    frames = v.get("frames") if isinstance(v, dict) else None
    return isinstance(frames, list) and _ranked_ok(v.get("classifications"), n_classes) and \
        all(isinstance(f, dict) and _ranked_ok(f.get("classifications"), n_classes)
            and isinstance(f.get("frame_number"), int) and _num(f.get("time")) for f in frames)


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
        "_id": lambda v: v is None or isinstance(v, str),
        "datetime": lambda v: v is None or isinstance(v, str),
        "warnings": lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
        "detections": lambda v: _detections_ok(v, n_classes),
        "frames_processed": lambda v: isinstance(v, list) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in v),
        "frame_rate": _num,
        "video": lambda v: _video_ok(v, n_classes),
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


def _flat(value: object, prefix: str = "") -> dict[str, object]:
    """A nested meta dict as {"a.b": leaf}, so a difference is named by its dotted key (an
    empty dict is a leaf, except the whole meta: an empty meta has no entries)."""
    if not isinstance(value, dict) or not value:
        return {prefix: value} if prefix else {}
    out: dict[str, object] = {}
    for k, v in value.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


#: How a meta key is named to a user (the flag or file that sets it).
META_NAMES = {"bundle": "bundle (model file or labels)", "allow_list": "--allow file",
              "taxonomy": "taxonomy.csv", "detections": "--detections file",
              "detection_threshold": "--detection_threshold", "inputs": "image inputs",
              "recursive": "--recursive", "top_k": "--top_k", "decode.strict": "--strict",
              "decode.max_pixels": "--max_pixels", "post.taxonomy_rollup.threshold":
              "--rollup_threshold", "post.allow_list": "--allow",
              "video.frame_every": "--frame_every", "video.max_frames": "--max_frames",
              "video.rule": "model.json input.video.rule"}


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def meta_differences(old: object, new: dict) -> list[str]:
    """Each meta entry that differs, named by its flag or file, with old → new when short."""
    a, b = _flat(old if isinstance(old, dict) else {}), _flat(new)
    out = []
    for key in sorted(k for k in set(a) | set(b) if a.get(k, None) != b.get(k, None)):
        name = META_NAMES.get(key) or ("model.json " + key if key.split(".")[0] in
                                       ("preprocess", "crop") else key)
        hashed = any(isinstance(v, str) and len(v) == 64 for v in (a.get(key), b.get(key)))
        out.append(f"{name}: content differs" if hashed else
                   f"{name}: {_short(a.get(key))} -> {_short(b.get(key))}")
    return out


class Journal:
    """Append-only, crash-safe store of per-image result records keyed by their `file`."""

    def __init__(self, directory: Path, every: int = 100, stderr: Optional[TextIO] = None,
                 n_classes: int = 1 << 30) -> None:
        self.dir = Path(directory)
        self.n_classes = n_classes
        self.every = max(1, int(every))
        self.stderr = stderr
        self.done: dict[str, Optional[bytes]] = {}  # file -> _key(its identity)
        self._latest: dict[str, int] = {}  # file held by more than one part -> the newest part
        self._superseded: set[str] = set()
        self.changed = 0  # resumed files redone because their content changed
        self.unseen: set[str] = set()  # resumed files this run's listing has not (yet) met
        self._pending: list[str] = []
        self._next = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, meta: dict, resume: bool, overwrite: bool) -> int:
        """Start or continue a journal; returns how many results a resumed run already has.

        Refuses to silently discard an earlier run's checkpoint, and refuses to resume one
        that was made with a different model or inputs (its results would not belong here).
        """
        meta = json.loads(json.dumps(meta))  # as it reads back from meta.json (tuples: lists)
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
        """Resume only a checkpoint made by this bundle on these inputs with these settings.

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
        if old != meta:
            raise EdgeError(f"cannot resume: the checkpoint at {self.dir} was made with other "
                            f"settings ({'; '.join(meta_differences(old, meta))}); its results "
                            "would mix with these: use --overwrite to start over")

    def _parts(self) -> list[tuple[int, Path]]:
        """Published parts with their numbers, in order (names the journal would not write
        are ignored)."""
        parts = []
        for p in self.dir.glob(f"{_PART_PREFIX}*.jsonl"):
            num = p.stem[len(_PART_PREFIX):]
            if num.isdigit() and num.isascii():
                parts.append((int(num), p))
        return sorted(parts)

    def _load(self) -> int:
        """Collect finished files from complete parts; drop temp files a kill left behind.

        A file held by several parts was redone (its content changed): the newest part's
        record counts. A corrupt part is named on stderr, set aside as `<part>.corrupt`, and
        its images are classified again (unless an earlier part holds them).
        """
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        parts = self._parts()
        for num, part in parts:
            try:
                recs = read_part(part, self.n_classes)
                names = [r["file"] for r in recs]
                if len(set(names)) != len(names):
                    raise CorruptPart("it repeats an image")
            except CorruptPart as e:
                print(f"kerascls-edge: warning: checkpoint part {part} is corrupt ({e}); "
                      "its images will be classified again", file=self.stderr or sys.stderr)
                os.replace(part, part.with_name(part.name + ".corrupt"))
                continue
            for r in recs:
                if r["file"] in self.done:
                    self._latest[r["file"]] = num
                self.done[r["file"]] = _key(r.get("_id"))
        if parts:
            self._next = parts[-1][0] + 1
        self.unseen = set(self.done)
        return len(self.done)

    def remove(self) -> None:
        """Delete the journal once the final output is safely written."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- writing ------------------------------------------------------------------------------

    def unchanged(self, file: str, ident: Optional[str]) -> bool:
        """Does the journal hold `file`'s result, made from this same content?

        Called for every file the run lists. A file it holds with another identity is
        forgotten here (its new record will supersede the old one), so the caller classifies
        it again; a held file never asked about is gone from the inputs (`records` leaves it
        out: a formatted card's old photos are not reported again).
        """
        self.unseen.discard(file)
        if file not in self.done:
            return False
        if self.done[file] == _key(ident):
            return True
        del self.done[file]
        self._superseded.add(file)
        self.changed += 1
        return False

    def add(self, record: dict) -> None:
        """Queue one result (a file already stored is ignored, so parts never hold duplicates).

        Per file only its name and a 12-byte identity key are kept in memory.
        """
        file = record["file"]
        if file in self.done:
            return
        self.done[file] = _key(record.get("_id"))
        if file in self._superseded or file in self._latest:
            self._latest[file] = self._next  # the part `flush` writes next
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
        """Every current record once, in the order written; refuses to end short.

        A record superseded by a newer part is skipped. If the parts yield fewer files than
        this run holds (the folder was removed or changed under it), the run must not report
        success: the caller's output is left unpublished.
        """
        n, want = 0, len(self.done) - len(self.unseen)
        for num, part in self._parts():
            try:
                recs = read_part(part, self.n_classes)
            except CorruptPart as e:  # damaged after this run read it: say so, do not crash
                raise EdgeError(f"checkpoint part {part} became unreadable: {e}") from None
            for rec in recs:
                if self._latest.get(rec["file"], num) == num and rec["file"] not in self.unseen:
                    n += 1
                    yield rec
        if n != want:
            raise EdgeError(f"only {n} of the {want} results of this run are left in "
                            f"its checkpoint {self.dir} (removed or changed by another program "
                            "during the run?); nothing was written: rerun with --resume")

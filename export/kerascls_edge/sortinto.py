"""`--sort_into DIR`: each image linked (or copied) into DIR/LABEL/, uncertain ones into
DIR/_uncertain/ — how people without a viewer look through a card's results.

Sorting never replaces anything. Cards are reformatted and refilled, and cameras restart their
numbering at IMG_0001, so two different photos with one name are normal: a name already taken
by other content gets a deterministic unique one (the content's short sha256 before the
suffix, `IMG_0001~3f2a9c01b4d2.JPG`). `DIR/manifest.csv` maps every original (absolute path,
sha256, size, mtime, device, inode) to its sorted path and grows across runs, so a rerun knows
what is already sorted by content, not by name. Originals are only ever read.

One file that cannot be sorted (a FIFO, an unreadable file, a name the folder cannot hold) is
a manifest row with its error and a warning naming the path that failed; the rest are sorted
and the run exits 1. A full (or read-only) destination stops the sort: every later file would
fail the same way. Temporary files have short names (NAME_MAX) and are removed on any failure.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import itertools
import os
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, TextIO, Union

from .bundle import EdgeError
from .mdformat import csv_text
from .spreadsheet import read_spreadsheet_csv, spreadsheet_row
from .userfiles import check_regular, open_regular, open_text

UNCERTAIN = "_uncertain"
FAILED = "_failed"
MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ["source", "sha256", "size", "mtime_ns", "device", "inode", "folder",
                   "sorted", "mode", "error"]
TAG_CHARS = 12  # hex digits of the content hash in a unique name: 48 bits
_CHUNK = 1 << 20
#: The destination cannot take more files: stop instead of failing every remaining one.
STOP_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
_RESERVED = {UNCERTAIN, FAILED, MANIFEST}

Label = tuple[Optional[str], float]
Labels = Union[Mapping[str, Label], Iterable[tuple[str, Label]]]


# -- what each image is sorted as ---------------------------------------------------------------


def _folder_name(label: str, name_max: int = 255) -> str:
    """A label as one safe path component (no separators, no leading dot, never empty, never
    one of our reserved names, within NAME_MAX)."""
    name = "".join("_" if c in "/\\\0" else c for c in str(label)).strip()
    name = name.lstrip(".") or "_unnamed"
    name = name if name not in _RESERVED else f"{name}_"
    if len(os.fsencode(name)) > name_max:
        tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:TAG_CHARS]
        name = _clip(name, name_max - len(tag)) + tag
    return name


def _best_json(rec: dict, cls: dict, det_names: dict, blank: str) -> tuple[Optional[str], float]:
    """(label, confidence) of an MD entry: its most confident classified box, else its most
    confident box's category, else blank. None label: a failure."""
    if rec.get("failure") or rec.get("detections") is None:
        return None, 0.0
    video = (rec.get("video") or {}).get("classifications")
    if video:  # a video: its per-video label (docs/edge-outputs.md, Videos)
        return cls.get(str(video[0][0]), str(video[0][0])), float(video[0][1])
    best: tuple[Optional[str], float] = (blank, 1.0)
    top = -1.0
    for det in rec["detections"]:
        ranking = det.get("classifications") or []
        if ranking:  # ids, categories and confs checked by mdstream.Results
            label, p = cls[str(ranking[0][0])], float(ranking[0][1])
        else:
            label, p = det_names[str(det["category"])], float(det["conf"])
        if p > top:
            best, top = (label, p), p
    return best


def labels_from_json(path: Path, blank: str) -> Iterator[tuple[str, Label]]:
    """(file, (label, confidence)) per entry of a results file, streamed and checked."""
    from .mdstream import Results

    results = Results(Path(path))
    cls, det_names = results.classification_categories, results.detection_categories
    for rec in results.images():
        yield rec["file"], _best_json(rec, cls, det_names, blank)


def labels_from_csv(path: Path, blank: str) -> Iterator[tuple[str, Label]]:
    """(file, (label, confidence)) per image of our CSV (its rows are consecutive), streamed:
    the most confident row, a failure row as (None, 0)."""
    file, best = None, None
    with open_text(path, "csv", newline="") as f:
        for line, row in enumerate(read_spreadsheet_csv(f), start=2):
            if not row.get("file"):
                raise EdgeError(f"{path}: line {line}: no file name")
            if row.get("row") == "frame":
                continue  # a video's frame: its video row carries the video's label
            if row["file"] != file and best is not None:
                yield file, best
                best = None
            file = row["file"]
            label = _csv_label(path, line, row, blank)
            if best is None or (best[0] is not None and
                                (label[0] is None or label[1] > best[1])):
                best = label
    if best is not None:
        yield file, best


def _csv_label(path: Path, line: int, row: dict, blank: str) -> Label:
    if row.get("failure"):
        return None, 0.0
    try:
        return row.get("label") or blank, float(row.get("confidence") or 1.0)
    except ValueError:
        raise EdgeError(f"{path}: line {line} ({row['file']}): confidence "
                        f"{row.get('confidence')!r} is not a number") from None


# -- names --------------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    """The longest start of `text` whose file-system bytes fit `limit`, cut between whole
    UTF-8 characters (undecodable PEP 383 bytes count as one byte each)."""
    raw = os.fsencode(text)
    if len(raw) <= limit:
        return text
    cut = max(limit, 0)
    while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:  # inside a UTF-8 sequence
        cut -= 1
    return os.fsdecode(raw[:cut])


def _split(name: str) -> tuple[str, str]:
    """(stem, suffix) with a short suffix only: `a.JPG` -> (`a`, `.JPG`)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 10:
        return name, ""
    return stem, "." + ext


def unique_names(name: str, digest: str, name_max: int) -> Iterator[str]:
    """Deterministic names to try for a file: its own, then `stem~HASH12.suffix`, then the
    full hash, then numbered; each within `name_max` bytes."""
    if len(os.fsencode(name)) <= name_max:
        yield name
    stem, suffix = _split(name)
    numbered = (f"~{digest[:TAG_CHARS]}-{k}" for k in itertools.count(2))
    for tag in itertools.chain([f"~{digest[:TAG_CHARS]}", f"~{digest}"], numbered):
        yield _clip(stem, name_max - len(os.fsencode(tag + suffix))) + tag + suffix


# -- the manifest ---------------------------------------------------------------------------------


class Manifest:
    """`manifest.csv` (the record, appended) and an on-disk SQLite index of it (lookups in
    bounded memory: a million rows are not held in Python objects)."""

    def __init__(self, target: Path) -> None:
        self.path = target / MANIFEST
        self.db = sqlite3.connect("")  # a private temporary database, on disk
        self.db.execute("CREATE TABLE m (source TEXT, sha TEXT, size INT, mtime INT, dev INT, "
                        "ino INT, folder TEXT, sorted TEXT)")
        if os.path.lexists(self.path):
            self._load()
        for col in ("source", "sha, folder", "sorted"):
            self.db.execute(f"CREATE INDEX i_{col[:3]} ON m ({col})")
        self.f: Optional[TextIO] = None
        self.writer: Optional[csv.DictWriter] = None
        self.pending = 0

    def _load(self) -> None:
        try:
            with open_text(self.path, "csv", newline="") as f:
                if next(csv.reader(f), None) != MANIFEST_FIELDS:
                    raise EdgeError(f"refusing to add to {self.path}: it is not a kerascls-edge "
                                    "sort manifest (move it away or sort into another folder)")
                f.seek(0)
                self.db.executemany("INSERT INTO m VALUES (?,?,?,?,?,?,?,?)",
                                    self._rows(read_spreadsheet_csv(f)))
        except (UnicodeDecodeError, csv.Error, sqlite3.Error) as e:
            raise EdgeError(f"cannot read {self.path}: {e}") from None

    def _rows(self, rows: Iterator[dict]) -> Iterator[tuple]:
        for row in rows:
            if row.get("error") or not row.get("sorted"):
                continue
            try:
                yield (_key(row["source"]), row["sha256"], int(row["size"]),
                       int(row["mtime_ns"]), int(row["device"]), int(row["inode"]),
                       row["folder"], _key(row["sorted"]))
            except (KeyError, TypeError, ValueError):
                pass  # a damaged line (e.g. a crash mid-write): its file is recognised
                # again by content when its name is met

    def digest_of(self, source: str, st: os.stat_result) -> Optional[str]:
        """The recorded sha256 of `source` if the file is unchanged since (same dev, inode,
        size and mtime_ns): no need to read it again."""
        row = self.db.execute("SELECT sha FROM m WHERE source=? AND size=? AND mtime=? AND "
                              "dev=? AND ino=? LIMIT 1", (_key(source), st.st_size, st.st_mtime_ns,
                                                          st.st_dev, st.st_ino)).fetchone()
        return row[0] if row else None

    def sorted_for(self, source: str, digest: str, folder: str) -> list[str]:
        """Sorted paths (relative to the target) made for this source with this content in
        this folder."""
        rows = self.db.execute("SELECT DISTINCT sorted FROM m WHERE source=? AND sha=? AND "
                               "folder=?", (_key(source), digest, folder)).fetchall()
        return [os.fsdecode(rel) for (rel,) in rows]

    def content_at(self, rel: str) -> Optional[str]:
        row = self.db.execute("SELECT sha FROM m WHERE sorted=? LIMIT 1",
                              (_key(rel),)).fetchone()
        return row[0] if row else None

    def add(self, row: dict) -> None:
        """Append a row to manifest.csv (and the index, when it maps a sorted file). A row
        that cannot be written stops the sort (NotSorted naming manifest.csv)."""
        try:
            if self.writer is None:
                self._open()
            self.writer.writerow(spreadsheet_row({k: csv_text(str(v)) for k, v in row.items()}))
            if row.get("sorted"):
                self.db.execute("INSERT INTO m VALUES (?,?,?,?,?,?,?,?)", (
                    _key(row["source"]), row["sha256"], row["size"], row["mtime_ns"],
                    row["device"], row["inode"], row["folder"], _key(row["sorted"])))
            self.pending += 1
            if self.pending >= 100:
                self.flush()
        except OSError as e:
            raise NotSorted(self.path, e.strerror or str(e), stop=True) from None
        except sqlite3.Error as e:
            raise NotSorted(self.path, f"its index: {e}", stop=True) from None

    def _open(self) -> None:
        new = not os.path.lexists(self.path)
        self.f = open(self.path, "a", encoding="utf-8", newline="")
        if not new and _ends_mid_line(self.path):
            self.f.write("\r\n")  # a crash cut the last row: start the next one on its own line
        self.writer = csv.DictWriter(self.f, fieldnames=MANIFEST_FIELDS)
        if new:
            self.writer.writeheader()

    def flush(self) -> None:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
        self.pending = 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.f is not None:
                self.f.close()
            self.db.close()


def _key(path: str) -> bytes:
    """A path as the index keeps it: its file-system bytes (names need not be UTF-8)."""
    return os.fsencode(path)


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


# -- placing one file -------------------------------------------------------------------------


class NotSorted(Exception):
    """One file could not be sorted; `path` is the one that failed (source or destination).
    `stop`: the destination cannot take more (disk full, read-only)."""

    def __init__(self, path: object, why: str, stop: bool = False) -> None:
        super().__init__(f"{why}: {os.fspath(path)}")
        self.path, self.why, self.stop = path, why, stop

    @classmethod
    def refused(cls, e: EdgeError) -> "NotSorted":
        """userfiles' one-line refusal (it names the path already)."""
        err = cls("", "")
        err.args = (str(e),)
        return err


def _failed(path: object, e: OSError, stop_errnos: set = STOP_ERRNOS) -> NotSorted:
    return NotSorted(path, e.strerror or str(e), e.errno in stop_errnos)


def hash_file(src: Path) -> tuple[str, os.stat_result]:
    """sha256 and stat of a regular source file (a FIFO or device is refused, never read)."""
    try:
        f = open_regular(src, "image")
    except EdgeError as e:
        raise NotSorted.refused(e) from None
    with f:
        st = os.fstat(f.fileno())
        h = hashlib.sha256()
        try:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        except OSError as e:
            raise _failed(src, e, set()) from None
    return h.hexdigest(), st


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Placer:
    """Creates links or copies without ever replacing a file (no-replace link/symlink)."""

    def __init__(self, copy: bool) -> None:
        self.copy = copy
        self.serial = 0

    def temp_copy(self, src: Path, folder: Path, dest: Path
                  ) -> tuple[Path, str, os.stat_result]:
        """Copy `src` to a short temporary name in `folder`, hashing as it reads; returns
        (temporary path, sha256, the source's stat). Removed again if anything fails."""
        self.serial += 1
        tmp = folder / f".sorting-{os.getpid()}-{self.serial}.tmp"
        try:
            fin = open_regular(src, "image")
        except EdgeError as e:
            raise NotSorted.refused(e) from None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         0o644)
        except OSError as e:
            fin.close()
            raise _failed(dest, e) from None
        try:
            digest = self._pump(fin, fd, src, dest)
            st = os.fstat(fin.fileno())
            try:  # a full disk may show only here (delayed allocation): name the copy
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.fsync(fd)
            except OSError as e:
                raise _failed(dest, e) from None
        except BaseException:
            os.close(fd)
            fin.close()
            _unlink(tmp)
            raise
        os.close(fd)
        fin.close()
        return tmp, digest, st

    @staticmethod
    def _pump(fin, fd: int, src: Path, dest: Path) -> str:
        h = hashlib.sha256()
        while True:
            try:
                chunk = fin.read(_CHUNK)
            except OSError as e:
                raise _failed(src, e, set()) from None
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
            try:
                _write_all(fd, chunk)
            except OSError as e:
                raise _failed(dest, e) from None

    def place(self, src: Path, made: Optional[Path], dest: Path) -> bool:
        """Create `dest` (a link to src, or the copy `made`); False if the name is taken."""
        try:
            if not self.copy:
                os.symlink(os.path.abspath(src), dest)
                return True
            try:
                os.link(made, dest)
            except OSError as e:
                if e.errno not in _NO_LINKS:
                    raise
                if os.path.lexists(dest):  # no hard links here (FAT, exFAT): checked rename
                    return False
                os.rename(made, dest)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if not self.copy and e.errno in _NO_LINKS:
                raise NotSorted(dest, "this folder cannot hold symbolic links (use --copy)",
                                True) from None
            raise _failed(dest, e) from None


def _unlink(path: Optional[Path]) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


# -- the sort -------------------------------------------------------------------------------------


def check_target(target: Path, inputs: list[str]) -> None:
    """DIR must not lie inside an input folder: a later --recursive run would read the links."""
    t = os.path.realpath(target)
    for p in inputs:
        if os.path.isdir(p):
            root = os.path.realpath(p)
            if t == root or t.startswith(root + os.sep):
                raise EdgeError(f"--sort_into {target} lies inside the input folder {p}; "
                                "choose a folder outside it")


@dataclass
class _Counts:
    sorted: int = 0
    uncertain: int = 0
    failed: int = 0
    already: int = 0
    renamed: int = 0
    errors: int = 0
    stale_links: int = 0
    not_sorted: int = 0
    stopped: str = ""


class Sorter:
    """Sorts one image at a time into `target`, recording each in the manifest."""

    def __init__(self, target: Path, manifest: Manifest, copy: bool, warn: TextIO) -> None:
        self.target, self.manifest, self.copy, self.warn = target, manifest, copy, warn
        self.placer = Placer(copy)
        self.counts = _Counts()
        self.name_max = _name_max(target)

    def one(self, src: Path, folder: str, rel_parts: list[str]) -> None:
        """Sort `src` into `folder`, recording it; a NotSorted is recorded and re-raised."""
        source = os.path.abspath(src)
        made, st, digest = None, None, None
        try:
            st = _source_stat(src)
            digest = self.manifest.digest_of(source, st)  # unchanged since recorded
            if digest is not None and self._already(source, digest, folder):
                return
            dest_dir = self.target.joinpath(folder, *rel_parts[:-1])
            if not self.copy:
                digest, st = hash_file(src)
            _mkdirs(dest_dir)
            if self.copy:
                made, digest, st = self.placer.temp_copy(src, dest_dir, dest_dir / rel_parts[-1])
            if self._already(source, digest, folder):
                return
            rel = self._new_name(src, made, dest_dir, rel_parts[-1], digest)
            self._record(source, digest, st, folder, rel)
        except (NotSorted, OSError) as e:
            err = e if isinstance(e, NotSorted) else _failed(e.filename or source, e)
            self._record_failure(source, digest, st, folder, err)
            raise err from None
        finally:
            _unlink(made)

    def _already(self, source: str, digest: str, folder: str) -> bool:
        """Was this source, with this content, sorted into this folder (and is it there)?"""
        for rel in self.manifest.sorted_for(source, digest, folder):
            if os.path.lexists(os.path.join(self.target, rel)):
                self.counts.already += 1
                return True
        return False

    def _new_name(self, src: Path, made: Optional[Path], dest_dir: Path, name: str,
                  digest: str) -> str:
        for i, candidate in enumerate(unique_names(name, digest, self.name_max)):
            dest = dest_dir / candidate
            if self.placer.place(src, made, dest):
                self.counts.renamed += i > 0
                return os.path.relpath(dest, self.target)
            if self._holds(dest, src, digest):  # the same content is there already
                self.counts.already += 1
                return os.path.relpath(dest, self.target)
        raise AssertionError("unreachable: unique_names is endless")

    def _holds(self, dest: Path, src: Path, digest: str) -> bool:
        """Does the existing `dest` hold this content? (Recorded, else read.)"""
        rel = os.path.relpath(dest, self.target)
        known = self.manifest.content_at(rel)
        if known == digest:  # the same photo from another path (a copy of the card)
            return True
        if known is not None:
            if dest.is_symlink() and os.path.realpath(dest) == os.path.realpath(src):
                self.counts.stale_links += 1  # a link to a refilled card's reused name
            return False
        try:
            return hash_file(dest)[0] == digest
        except NotSorted:
            return False

    def _record(self, source: str, digest: str, st: os.stat_result, folder: str,
                rel: str) -> None:
        self.manifest.add({"source": source, "sha256": digest, "size": st.st_size,
                           "mtime_ns": st.st_mtime_ns, "device": st.st_dev, "inode": st.st_ino,
                           "folder": folder, "sorted": rel,
                           "mode": "copy" if self.copy else "link", "error": ""})

    def _record_failure(self, source: str, digest: Optional[str], st, folder: str,
                        e: NotSorted) -> None:
        self.counts.errors += 1
        print(csv_text(f"kerascls-edge: warning: not sorted: {source}: {e}"), file=self.warn)
        if e.path == self.manifest.path:
            return  # the manifest itself cannot be written
        self.manifest.add({"source": source, "sha256": digest or "",
                           "size": st.st_size if st else "", "mtime_ns": st.st_mtime_ns
                           if st else "", "device": st.st_dev if st else "",
                           "inode": st.st_ino if st else "", "folder": folder, "sorted": "",
                           "mode": "copy" if self.copy else "link", "error": str(e)})


def _source_stat(src: Path) -> os.stat_result:
    try:
        return check_regular(src, "image")
    except EdgeError as e:
        raise NotSorted.refused(e) from None


def _mkdirs(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _failed(e.filename or folder, e) from None


def _name_max(folder: Path) -> int:
    try:
        return min(255, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _rel_parts(file: str) -> list[str]:
    parts = [p for p in Path(file).parts if p not in ("..", ".", os.sep, "/")]
    return parts or ["_"]


def _where(label: Optional[str], conf: float, threshold: float, name_max: int
           ) -> tuple[str, str]:
    """(counter, folder) of an image: failed, uncertain (below threshold) or its label."""
    if label is None:
        return "failed", FAILED
    if conf < threshold:
        return "uncertain", UNCERTAIN
    return "sorted", _folder_name(label, name_max)


def sort_into(labels: Labels, image_dir: Path, target: Path, threshold: float,
              copy: bool = False, warn: Optional[TextIO] = None) -> dict:
    """Link/copy every image into target/LABEL/<its relative path>; returns counts.

    `labels` maps file -> (label, confidence), as a dict or a stream of pairs (files relative
    to `image_dir` or absolute). Never replaces a file; see the module docstring.
    """
    from .journal import OutputLock

    items = labels.items() if isinstance(labels, Mapping) else labels
    target = Path(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeError(f"cannot create --sort_into folder {target}: {e.strerror or e}") from None
    with OutputLock(target / MANIFEST):
        manifest = Manifest(target)
        sorter = Sorter(target, manifest, copy, warn or sys.stderr)
        try:
            _run(sorter, items, Path(image_dir), threshold)
        finally:
            _close(manifest, sorter.counts)
    c = sorter.counts
    out = {"sorted": c.sorted, "uncertain": c.uncertain, "failed": c.failed,
           "already": c.already, "renamed": c.renamed, "errors": c.errors,
           "folder": str(target), "mode": "copy" if copy else "link",
           "manifest": str(target / MANIFEST)}
    if c.stale_links:
        out["stale_links"] = c.stale_links
    if c.stopped:
        out.update(stopped=c.stopped, not_sorted=c.not_sorted)
    return out


def _close(manifest: Manifest, counts: _Counts) -> None:
    """Close the manifest. Its last rows failing to reach the disk (a card filled up, pulled
    out) stops the sort with the reason, as a failed row does mid-run, not a traceback: every
    file placed is in the folder, and a rerun recognises those the manifest missed by content.
    """
    try:
        manifest.close()
    except OSError as e:
        counts.stopped = counts.stopped or str(NotSorted(manifest.path, e.strerror or str(e)))
    except sqlite3.Error as e:
        counts.stopped = counts.stopped or str(NotSorted(manifest.path, f"its index: {e}"))


def _run(sorter: Sorter, items: Iterable[tuple[str, Label]], image_dir: Path,
         threshold: float) -> None:
    counts = sorter.counts
    for file, (label, conf) in items:
        if counts.stopped:
            counts.not_sorted += 1
            continue
        src = Path(file) if os.path.isabs(file) else image_dir / file
        kind, folder = _where(label, conf, threshold, sorter.name_max)
        try:
            sorter.one(src, folder, _rel_parts(file))
        except NotSorted as e:
            if e.stop:
                counts.stopped = str(e)
            continue
        setattr(counts, kind, getattr(counts, kind) + 1)

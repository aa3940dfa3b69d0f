"""One way to open what a user hands us: regular files only, text read with a size cap.

Every reader of user input (image listing, decode, labels, allow-lists, taxonomy, detections,
results files, capture times, thumbnails, sorting) goes through here, so a FIFO named like an
image or `/dev/zero` given as a labels file is a one-line error instead of a hang or an
unbounded read, and a file's identity is taken the same way everywhere.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Union

from .errors import EdgeError

PathLike = Union[str, "os.PathLike[str]"]

#: Size caps for text inputs. Generous for real files (a 1,000,000-image MegaDetector file is
#: ~300-500 MB), small enough that a wrong path (a disk image, /dev/zero) fails at once.
TEXT_LIMITS = {
    "labels": 16 << 20,        # labels.txt: one class per line
    "allow-list": 16 << 20,    # --allow
    "taxonomy": 64 << 20,      # --taxonomy
    "model.json": 16 << 20,
    "results": 4 << 30,        # a results / --detections file (streamed where it is large)
    "csv": 4 << 30,
}
DEFAULT_TEXT_LIMIT = 64 << 20
NOT_REGULAR = "not a regular file (a FIFO, device or socket would block or never end)"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileIdentity:
    """What says "this is the same file": where it lives and its size and mtime.

    (device, inode, size, mtime_ns) catches a replaced file when size or mtime moves; the
    journal adds a content hash where names are known to repeat (refilled SD cards).
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int

    def as_list(self) -> list[int]:
        return [self.dev, self.ino, self.size, self.mtime_ns]


def _refuse(path: PathLike, what: str, why: str) -> EdgeError:
    return EdgeError(f"cannot read {what} {os.fspath(path)}: {why}")


def open_regular(path: PathLike, what: str = "file") -> BinaryIO:
    """Open `path` for binary reading, refusing anything but a regular file.

    The open is non-blocking (a FIFO with no writer would block a plain `open` forever) and the
    type is checked on the opened descriptor, so a file swapped for a FIFO after a listing
    cannot slip through.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except OSError as e:
        raise _refuse(path, what, e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, what, NOT_REGULAR)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: PathLike, what: str = "file") -> os.stat_result:
    """stat() `path` (following links) and refuse anything but a regular file."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise _refuse(path, what, e.strerror or str(e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, what, NOT_REGULAR)
    return st


def read_bytes(path: PathLike, what: str = "file", limit: int | None = None) -> bytes:
    """The whole of a regular file, refused in one line when it is larger than `limit`."""
    limit = TEXT_LIMITS.get(what, DEFAULT_TEXT_LIMIT) if limit is None else limit
    with open_regular(path, what) as f:
        # the size first (a 4 GB disk image is refused without reading it); then what is
        # there, never more than limit + 1 bytes (read(n) allocates n bytes up front, so n
        # is never the limit itself), also while the file grows
        size = os.fstat(f.fileno()).st_size
        data = b"" if size > limit else f.read(size + 1)
        while size <= limit and data and len(data) <= limit and len(data) > size:
            more = f.read(min(_CHUNK, limit + 1 - len(data)))
            if not more:
                break
            data += more
    if size > limit or len(data) > limit:
        raise _refuse(path, what, f"larger than {limit:,} bytes; is this the right file?")
    return data


def read_text(path: PathLike, what: str = "file", limit: int | None = None) -> str:
    """A regular UTF-8 text file (BOM tolerated), size-capped; errors are one line."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _refuse(path, what, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def open_text(path: PathLike, what: str = "file", limit: int | None = None,
              newline: str | None = None) -> io.TextIOWrapper:
    """A regular file opened for streaming UTF-8 reads (for large CSV/JSON-lines inputs).

    The size cap is checked on the opened descriptor, before anything is read.
    """
    limit = TEXT_LIMITS.get(what, DEFAULT_TEXT_LIMIT) if limit is None else limit
    f = open_regular(path, what)
    size = os.fstat(f.fileno()).st_size
    if size > limit:
        f.close()
        raise _refuse(path, what, f"larger than {limit:,} bytes; is this the right file?")
    return io.TextIOWrapper(f, encoding="utf-8-sig", newline=newline)


def identity(path: PathLike) -> FileIdentity:
    """The (device, inode, size, mtime_ns) of the file a path leads to (links followed)."""
    st = os.stat(path)
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def sha256_file(path: PathLike, what: str = "file") -> str:
    """Hex sha256 of a regular file's content, read in 1 MB pieces (bounded memory)."""
    h = hashlib.sha256()
    with open_regular(path, what) as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()

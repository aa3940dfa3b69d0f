"""Small helpers shared across commands."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``final`` only if the block succeeds.

    Works for files and directories: a failed or interrupted write never leaves a
    half-written ``final`` behind (the rename is atomic on one filesystem).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    stem = f".{final.name.removesuffix(suffix)}.tmp-"
    _remove_orphans(final.parent, stem, suffix)
    tmp = final.with_name(f"{stem}{os.getpid()}{suffix}")
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except OSError as e:
        if e.errno is None or not str(e.filename or "").startswith(str(tmp)):
            raise
        # name the file the user asked for, not our temporary sibling
        raise type(e)(e.errno, e.strerror, str(final)) from e
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(folder: Path, stem: str, suffix: str) -> None:
    """Delete temporaries that a killed writer (``kill -9``) left: their PID is gone."""
    for path in folder.glob(f"{stem}*{suffix}"):
        pid = path.name[len(stem):len(path.name) - len(suffix)]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def quiet_fds(*fds: int) -> Iterator[None]:
    """Point the given OS-level file descriptors at /dev/null for the block.

    TensorFlow's C++ layers (converter, CUDA probes) write straight to fds 1 and 2,
    past Python's logging; this keeps a command's own output readable. Nothing is
    muted when KERASCLS_VERBOSE is set.
    """
    if os.environ.get("KERASCLS_VERBOSE"):
        yield
        return
    import sys
    import warnings
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)

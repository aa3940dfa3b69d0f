"""Where results may be written: nothing a user owns is ever replaced by accident.

Checked before the model runs, so a refused output costs nothing: the output must not be one of
the files the run reads, must not look like an image, must be (or become) a regular file, and an
existing file is replaced only when it is a result this runtime wrote or `--overwrite` says so.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Optional

from .bundle import EdgeError
from .video import is_video

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
_HEAD_BYTES = 65536


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def is_our_result(path: Path) -> bool:
    """Does `path` start like a file this runtime writes (our MegaDetector JSON or our CSV)?

    Only the head is read: a 100,000-image result is not parsed to be recognised.
    """
    from .mdformat import CSV_FIELDS, IMAGE_CSV_FIELDS

    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    if head.startswith(",".join(CSV_FIELDS).encode() + b"\r\n") or \
            head.startswith(",".join(IMAGE_CSV_FIELDS).encode() + b"\r\n"):  # before videos
        return True
    return head.startswith(b'{\n"info": {') and b'"runtime": "kerascls-edge ' in head


def _check_parent(output: Path) -> None:
    parent = output.parent
    if not parent.is_dir():
        raise EdgeError(f"cannot write {output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgeError(f"cannot write {output}: folder {parent} is not writable")


def check_output(output: Path, reads: Iterable[str], overwrite: bool) -> Path:
    """Refuse an output that would destroy something; returns the path to write.

    A symlink to a regular file is followed (the link stays, its target gets the results).
    """
    output = Path(output)
    if output.suffix.lower() in IMAGE_EXTENSIONS or is_video(output):
        kind = "a video" if is_video(output) else "an image"
        raise EdgeError(f"refusing to write results to {output}: it has {kind} suffix "
                        f"(results are .json or .csv)")
    st = _stat(str(output))  # what a symlink points to (e.g. /dev/stdout -> a pipe or a tty)
    if os.path.islink(output):
        if st is None:
            raise EdgeError(f"refusing to write results to {output}: a symlink to nothing")
        if stat.S_ISREG(st.st_mode):
            output = Path(os.path.realpath(output))
    if st is None:
        _check_parent(output)
        return output
    if stat.S_ISDIR(st.st_mode):
        raise EdgeError(f"refusing to write results to {output}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise EdgeError(f"refusing to write results to {output}: not a regular file "
                        "(a device, FIFO or socket)")
    for path in reads:
        other = _stat(path)
        if other is not None and _same_file(st, other):
            raise EdgeError(f"refusing to write results to {output}: it is one of the "
                            f"inputs ({path})")
    if not overwrite and not is_our_result(output):
        raise EdgeError(f"refusing to replace {output}: it is not a kerascls-edge result "
                        "(pass --overwrite to replace it)")
    _check_parent(output)
    return output


def bundle_files(model_path: Path, labels: Optional[str]) -> list[str]:
    """The files a run reads besides its images: model, model.json, labels."""
    model_path = Path(model_path)
    found = [model_path, model_path.parent / "model.json"]
    found += sorted(model_path.parent.glob("*labels*.txt"))
    if labels:
        found.append(Path(labels))
    return [str(p) for p in found]

"""One image file under two classes, or in two splits, is a leak: found before training.

A class folder that is a symlink to another class (or a copied folder, a hard-linked tree, a
CSV listing a file twice) puts the same photo under two labels, and a random or grouped
split then puts it in train *and* test: the model is taught two answers for one image and
scored on images it memorised. Files are the same when they are one file (same device and
inode: links) or hold identical bytes (copies). Only files that share a size are read, and
only as far as needed (first 64 KB, then the whole file), so a 100,000-image folder costs
one ``stat`` per file and almost no reading.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass

from kerascls.data.records import Record, join_labels
from kerascls.errors import UserError

log = logging.getLogger("kerascls.data")
FLAG = "--allow_duplicate_files"
_PREFIX = 1 << 16
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Duplicate:
    """Two records that are one image: `why` says what it breaks, `how` how they are one."""

    first: tuple[str, Record]  # (split, record)
    second: tuple[str, Record]
    how: str
    why: str

    def describe(self) -> str:
        (s1, r1), (s2, r2) = self.first, self.second
        return (f"{r1.path} ({join_labels(r1.labels)}, {s1}) and {r2.path} "
                f"({join_labels(r2.labels)}, {s2}) are {self.how}: {self.why}")


def _digest(path: str, limit: int | None) -> str:
    """sha256 of the first `limit` bytes (None: all), read in pieces (bounded memory)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left = None if left is None else left - len(chunk)
    return h.hexdigest()


def _content_groups(files: dict[tuple[int, int], tuple[str, int]]) -> dict[tuple[int, int], str]:
    """For files that share a size with another file: a content key (sha256) per inode key."""
    by_size: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key, (_, size) in files.items():
        by_size[size].append(key)
    out: dict[tuple[int, int], str] = {}
    for keys in by_size.values():
        if len(keys) < 2:
            continue
        by_prefix: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for key in keys:
            by_prefix[_digest(files[key][0], _PREFIX)].append(key)
        for same in by_prefix.values():
            if len(same) > 1:
                out.update((key, _digest(files[key][0], None)) for key in same)
    return out


def identities(paths: list[str]) -> dict[str, tuple]:
    """Per readable path: what makes two paths one image (an inode, or a content hash)."""
    inode_of: dict[str, tuple[int, int]] = {}
    files: dict[tuple[int, int], tuple[str, int]] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:  # gone since the check: the pipeline reports it
            continue
        key = (st.st_dev, st.st_ino)
        inode_of[p] = key
        files.setdefault(key, (p, st.st_size))
    try:
        content = _content_groups(files)
    except OSError as e:
        raise UserError(f"cannot read {e.filename} to compare it with same-sized images: "
                        f"{e.strerror or e}") from None
    return {p: ("content", content[k]) if k in content else ("inode", k)
            for p, k in inode_of.items()}


def find_duplicates(splits: dict[str, list[Record]]) -> list[Duplicate]:
    """Every record that repeats an earlier one's image under other labels (same box) or in
    another split, in split then record order.

    One file under several boxes with different labels (two animals in one frame) is not a
    duplicate; the same box under two labels is.
    """
    ids = identities(sorted({r.path for recs in splits.values() for r in recs}))
    first: dict[tuple, tuple[str, Record]] = {}
    labelled: dict[tuple, tuple[str, Record]] = {}
    found = []
    for split, recs in splits.items():
        for r in recs:
            ident = ids.get(r.path)
            if ident is None:
                continue
            seen = first.setdefault(ident, (split, r))
            if seen[0] != split:
                found.append(_pair(seen, (split, r), "in two splits (a test on images the "
                                                     "model trained on)"))
                continue
            same_box = labelled.setdefault((ident, r.bbox), (split, r))
            if same_box[1].labels != r.labels:
                found.append(_pair(same_box, (split, r), "one image under two classes"))
    return found


def _pair(a: tuple[str, Record], b: tuple[str, Record], why: str) -> Duplicate:
    same = os.path.realpath(a[1].path) == os.path.realpath(b[1].path)
    how = "one file" if same else "the same image"
    try:
        st_a, st_b = os.stat(a[1].path), os.stat(b[1].path)
        if not same and (st_a.st_dev, st_a.st_ino) == (st_b.st_dev, st_b.st_ino):
            how = "one file (hard links)"
        elif not same:
            how = "identical files (copies)"
    except OSError:
        pass
    return Duplicate(a, b, how, why)


def check_duplicates(splits: dict[str, list[Record]], allow: bool, where: str) -> int:
    """Refuse (one line naming both paths) or, with ``allow``, warn about duplicate images.

    Returns how many records repeat an earlier one.
    """
    found = find_duplicates(splits)
    if not found:
        return 0
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    msg = f"{where}: {found[0].describe()}{more}"
    if not allow:
        raise UserError(f"{msg}; remove the duplicates, or pass {FLAG} to train anyway")
    log.warning("%s; training anyway (%s)", msg, FLAG)
    return len(found)

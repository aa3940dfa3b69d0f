"""Bursts: camera traps fire several frames per trigger, and the animal is often clear in only one.

Frames are grouped per folder (one folder = one camera, the usual layout) into sequences where
consecutive capture times differ by at most `gap` seconds, and each frame is given the
sequence's mean probabilities beside (never instead of) its own result.
"""

from __future__ import annotations

import posixpath
from typing import Iterable, Iterator

import numpy as np

from .mdformat import ranked


def _folder(rec: dict) -> str:
    return posixpath.dirname(rec["file"])


def split_sequences(recs: list[dict], gap: float) -> list[list[int]]:
    """Indices of `recs` (one folder) grouped by time gap; frames without a time stand alone."""
    timed = sorted((r["_t"], r["file"], i) for i, r in enumerate(recs) if r.get("_t") is not None)
    groups: list[list[int]] = []
    last = None
    for t, _, i in timed:
        if last is None or t - last > gap:
            groups.append([])
        groups[-1].append(i)
        last = t
    groups.extend([i] for i, r in enumerate(recs) if r.get("_t") is None)
    return groups


def _mean_probs(recs: list[dict], idx: list[int], n_classes: int) -> np.ndarray:
    """Mean of the frames' (sparse) probabilities; frames that failed are left out."""
    acc = np.zeros(n_classes, dtype=np.float64)
    n = 0
    for i in idx:
        p = recs[i].get("_p")
        if p is None:
            continue
        for c, v in p.items():
            acc[int(c)] += v
        n += 1
    return acc / max(n, 1)


def annotate_folder(recs: list[dict], gap: float, n_classes: int, k: int) -> None:
    """Give every frame of one folder its `sequence` (id, frame count, smoothed top-k)."""
    folder = _folder(recs[0]) if recs else ""
    for n, idx in enumerate(split_sequences(recs, gap)):
        usable = [i for i in idx if recs[i].get("_p") is not None]
        seq: dict = {"id": f"{folder or '.'}#{n:05d}", "frames": len(idx)}
        if usable:
            seq["classifications"] = ranked(_mean_probs(recs, usable, n_classes), k)
        for i in idx:
            recs[i]["sequence"] = seq


def smooth(records: Iterable[dict], gap: float, n_classes: int, k: int) -> Iterator[dict]:
    """Annotate a record stream, holding one folder at a time (records arrive folder by folder).

    A folder that reappears later (e.g. files added between a run and its resume) forms its own
    sequences; memory stays bounded by the largest folder.
    """
    buf: list[dict] = []
    for rec in records:
        if buf and _folder(rec) != _folder(buf[0]):
            annotate_folder(buf, gap, n_classes, k)
            yield from buf
            buf = []
        buf.append(rec)
    if buf:
        annotate_folder(buf, gap, n_classes, k)
        yield from buf


__all__ = ["smooth", "split_sequences", "annotate_folder"]

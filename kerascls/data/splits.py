"""Train/val/test splits that do not leak: whole camera sites (or bursts) go to one split.

Frames from one site share background, light and often the same animal; frames of one
burst are near-duplicates. Splitting them across train and test measures memory, not
generalisation. So records are grouped (location, else sequence, else the file alone) and
whole groups are assigned greedily, largest first, to the split whose per-class quota is
furthest from met — stratified by class as far as the groups allow. Seeded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from kerascls.data.records import Record, write_split_csv
from kerascls.errors import UserError

SPLITS = ("train", "val", "test")


def group_key(rec: Record) -> str:
    """The unit that must not straddle splits: site, else burst, else the file itself."""
    if rec.location:
        return f"location:{rec.location}"
    if rec.seq_id:
        return f"seq:{rec.seq_id}"
    return f"file:{rec.path}"


def split_records(records: list[Record], val_fraction: float, test_fraction: float,
                  seed: int = 0) -> dict[str, list[Record]]:
    """Assign whole groups to train/val/test at roughly the given fractions per class."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"val/test fractions must be in [0, 1) and sum below 1, got "
                         f"{val_fraction}, {test_fraction}")
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[group_key(r)].append(r)
    targets = np.array([1 - val_fraction - test_fraction, val_fraction, test_fraction])
    totals = Counter(r.labels[0] for r in records)
    have = {s: Counter() for s in SPLITS}
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for key in _largest_first(groups, seed):
        counts = Counter(r.labels[0] for r in groups[key])
        split = _neediest(counts, totals, have, targets)
        have[split].update(counts)
        out[split].extend(groups[key])
    return out


def _largest_first(groups: dict[str, list], seed: int) -> list[str]:
    """Group keys, biggest first; equal sizes in a seeded random order."""
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    return sorted((keys[i] for i in order), key=lambda k: -len(groups[k]))


def _neediest(counts: Counter, totals: Counter, have: dict[str, Counter],
              targets: np.ndarray) -> str:
    """The split furthest below its quota; ties (every split is at first) → the largest target.

    Needs are rounded before comparing: 7·(7.2/7.2) and 7·(2.4/2.4) differ in the last bit,
    and that noise once sent the biggest site to val instead of train.
    """
    needs = [round(_need(counts, totals, have[s], t), 9) for s, t in zip(SPLITS, targets)]
    return SPLITS[max(range(len(SPLITS)), key=lambda i: (needs[i], targets[i]))]


def _need(counts: Counter, totals: Counter, have: Counter, target: float) -> float:
    """How far a split is below its quota on this group's classes (share of each class)."""
    if target <= 0:
        return -np.inf
    return sum(n * (target * totals[c] - have[c]) / (target * totals[c])
               for c, n in counts.items())


def write_splits(splits: dict[str, list[Record]], run_dir: Path) -> None:
    """``RUN/splits/{train,val,test}.csv``: the file lists a later command reuses."""
    for name, recs in splits.items():
        write_split_csv(recs, Path(run_dir) / "splits" / f"{name}.csv")

"""Taxonomy on the device: scientific names, roll-up of uncertain species, site allow-lists.

A bundle may carry `taxonomy.csv` (label, kingdom … species, scientificName, commonName; see
docs/bundle.md). With it, an uncertain species is reported as the deepest taxon whose summed
probability reaches the roll-up threshold (SpeciesNet's and AddaxAI's practice: "a cat, 0.9"
beats "an ocelot, 0.4"), and an allow-list restricts predictions to the taxa of a site.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .bundle import EdgeError
from .userfiles import open_text, read_text

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
FILE_NAME = "taxonomy.csv"


@dataclass
class Taxonomy:
    """Each label's lineage, kingdom first: [(rank, name), ...], ranks it has only."""

    labels: list[str]
    lineage: list[list[tuple[str, str]]]
    scientific: list[str]
    common: list[str] = field(default_factory=list)

    def scientific_name(self, label: str) -> str:
        """label -> scientificName (the label itself when the taxonomy does not know it)."""
        try:
            return self.scientific[self.labels.index(label)] or label
        except ValueError:
            return label

    def names_of(self, i: int) -> set[str]:
        """Every name label i answers to: label, scientific, common and taxon names."""
        names = {self.labels[i], self.scientific[i], *(n for _, n in self.lineage[i])}
        if i < len(self.common):
            names.add(self.common[i])
        return {n.strip().lower() for n in names if n and n.strip()}


def _species_name(row: dict) -> str:
    """'americanus' with genus 'Ursus' -> 'Ursus americanus'; a binomial stays as it is."""
    sp, genus = row.get("species", "").strip(), row.get("genus", "").strip()
    return f"{genus} {sp}" if sp and genus and " " not in sp else sp


def read_taxonomy(path: Path, labels: Sequence[str]) -> Taxonomy:
    """Read taxonomy.csv; every label of the model gets a row (missing ones: no lineage)."""
    try:
        with open_text(path, "taxonomy", newline="") as f:  # a regular, size-capped file
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise EdgeError(f"cannot read taxonomy {path}: {e}") from None
    if rows and "label" not in rows[0]:
        raise EdgeError(f"taxonomy {path}: no 'label' column (columns: label, "
                        f"{', '.join(RANKS)}, scientificName, commonName)")
    by_label = {(r.get("label") or "").strip(): r for r in rows}
    lineage, sci, common = [], [], []
    for label in labels:
        row = {k: (v or "").strip() for k, v in by_label.get(label, {}).items() if k}
        lin = [(rank, _species_name(row) if rank == "species" else row.get(rank, ""))
               for rank in RANKS]
        lin = [(r, n) for r, n in lin if n]
        lineage.append(lin)
        sci.append(row.get("scientificName") or (lin[-1][1] if lin else ""))
        common.append(row.get("commonName", ""))
    return Taxonomy(list(labels), lineage, sci, common)


def bundle_taxonomy(clf) -> Optional[Taxonomy]:
    """The bundle's taxonomy.csv (beside the model), or None."""
    path = Path(clf.spec.model_path).parent / FILE_NAME
    return read_taxonomy(path, clf.labels) if path.is_file() else None


def taxon_lookup(clf) -> Callable[[str], str]:
    """label (or rolled-up taxon name) -> scientificName for Camtrap DP observations."""
    tax = bundle_taxonomy(clf)
    return tax.scientific_name if tax is not None else (lambda label: label)


# -- roll-up ------------------------------------------------------------------------------------


@dataclass
class Rollup:
    """Roll uncertain top labels up the taxonomy; rolled-up taxa get output ids after labels."""

    taxonomy: Taxonomy
    threshold: float
    taxa: list[str] = field(default_factory=list)  # taxon names, id = len(labels) + index
    _ids: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Only taxa holding two or more labels can ever sum above the top label's probability.
        count: dict = {}
        for lin in self.taxonomy.lineage:
            for key in lin:
                count[key] = count.get(key, 0) + 1
        kept = [key for key, n in count.items() if n >= 2]
        self.taxa = [name for _, name in kept]
        self._ids = {key: len(self.taxonomy.labels) + i for i, key in enumerate(kept)}

    def categories(self) -> dict[str, str]:
        """The extra MegaDetector classification categories (taxon id -> name)."""
        return {str(self._ids[key]): key[1] for key in self._ids}

    def deepest(self, probs: np.ndarray) -> Optional[tuple[int, float]]:
        """(taxon id, summed probability) of the deepest taxon reaching the threshold, or None
        when the top label itself reaches it (or nothing does)."""
        if float(np.max(probs)) >= self.threshold:
            return None
        for depth in range(len(RANKS) - 1, -1, -1):
            sums: dict = {}
            for i, lin in enumerate(self.taxonomy.lineage):
                key = _at_rank(lin, RANKS[depth])
                if key is not None and key in self._ids:
                    sums[key] = sums.get(key, 0.0) + float(probs[i])
            if sums:
                key, total = max(sums.items(), key=lambda kv: kv[1])
                if total >= self.threshold:
                    return self._ids[key], total
        return None

    def apply(self, classifications: list, probs: np.ndarray) -> list:
        """[[taxon, summed]] + the raw ranking when rolled up (the raw top label stays second)."""
        hit = self.deepest(probs)
        if hit is None:
            return classifications
        return [[str(hit[0]), round(min(hit[1], 1.0), 4)], *classifications]


def _at_rank(lineage: list[tuple[str, str]], rank: str) -> Optional[tuple[str, str]]:
    for r, n in lineage:
        if r == rank:
            return (r, n)
    return None


# -- allow-lists --------------------------------------------------------------------------------


@dataclass
class AllowList:
    """Which labels may be predicted (per deployment when the file has a deployment column)."""

    everywhere: Optional[set[str]]          # names allowed at every deployment (None: no rule)
    by_deployment: dict[str, set[str]]

    def mask(self, taxonomy: Optional[Taxonomy], labels: Sequence[str], empty: set[int],
             deployment: str) -> Optional[np.ndarray]:
        allowed = set(self.everywhere or set()) | self.by_deployment.get(deployment, set())
        if self.everywhere is None and deployment not in self.by_deployment:
            return None  # no rule for this deployment: everything allowed
        keep = np.zeros(len(labels), dtype=bool)
        for i, label in enumerate(labels):
            names = taxonomy.names_of(i) if taxonomy else {label.strip().lower()}
            keep[i] = i in empty or bool(names & allowed)
        return keep


def read_allow(path: Path) -> AllowList:
    """One name a line, or a CSV with a `taxon` (or `label`) column and optionally a
    `deployment` column (rows with an empty deployment apply everywhere)."""
    try:
        text = read_text(path, "allow-list")  # a regular, size-capped file
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"cannot read allow-list {path}: {e}") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    head = [h.strip().lower() for h in lines[0].split(",")] if lines else []
    if "deployment" not in head and not ({"taxon", "label"} & set(head)):
        return AllowList({ln.strip().lower() for ln in lines}, {})
    col = "taxon" if "taxon" in head else "label"
    if col not in head:
        raise EdgeError(f"allow-list {path}: a deployment column needs a 'taxon' or 'label' "
                        "column beside it")
    every: Optional[set[str]] = None
    by_dep: dict[str, set[str]] = {}
    for row in csv.DictReader(lines):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        name, dep = row.get(col, "").lower(), row.get("deployment", "")
        if not name:
            continue
        if dep:
            by_dep.setdefault(dep, set()).add(name)
        else:
            every = (every or set()) | {name}
    if every is None and not by_dep:
        raise EdgeError(f"allow-list {path} names nothing")
    return AllowList(every, by_dep)


def restrict(probs: np.ndarray, keep: Optional[np.ndarray]) -> np.ndarray:
    """Zero what is not allowed and renormalize (uniform over the allowed if all were 0)."""
    if keep is None:
        return probs
    out = np.where(keep, probs, 0.0).astype(np.float64)
    total = out.sum()
    if total > 0:
        return out / total
    return keep / max(int(keep.sum()), 1)


# -- what the runner calls ----------------------------------------------------------------------


def deployment_of(rel: str, fixed: Optional[str], base_name: str) -> str:
    """An image's deployment: --deployment, else its top-level folder, else the input folder's
    name (the same rule as the Camtrap DP deployments)."""
    if fixed:
        return fixed
    # './x', 'a/../x' and '../x' name no folder: a deployment is never '.', '..' or ''
    parts = [p for p in posixpath.normpath(rel.replace("\\", "/")).split("/")
             if p not in ("", ".", "..")]
    if len(parts) > 1:
        return parts[0]
    return base_name if base_name not in ("", ".", "..") else "deployment"


@dataclass
class Post:
    """Allow-list and roll-up applied to every probability vector of a run, in every output."""

    labels: list[str]
    empty: set[int]
    taxonomy: Optional[Taxonomy] = None
    rollup: Optional[Rollup] = None
    allow: Optional[AllowList] = None
    deployment: Optional[str] = None
    base_name: str = ""
    _masks: dict = field(default_factory=dict)

    def probs(self, probs: np.ndarray, rel: str) -> np.ndarray:
        if self.allow is None:
            return probs
        dep = deployment_of(rel, self.deployment, self.base_name)
        if dep not in self._masks:
            self._masks[dep] = self.allow.mask(self.taxonomy, self.labels, self.empty, dep)
        return restrict(probs, self._masks[dep])

    def ranking(self, classifications: list, probs: np.ndarray) -> list:
        return self.rollup.apply(classifications, probs) if self.rollup else classifications

    def whole(self, rec: dict, probs: np.ndarray) -> dict:
        """A whole-image record: the rolled-up taxon first in its detection and its top-k."""
        if self.rollup and rec.get("detections"):
            k_list = self.ranking(rec["_k"], probs)
            rec["_k"] = k_list
            rec["detections"][0]["classifications"] = k_list
        return rec

    def out_labels(self) -> list[str]:
        """Labels for the outputs: the model's, then the roll-up taxa (ids continue)."""
        return [*self.labels, *(self.rollup.taxa if self.rollup else [])]

    def metadata(self) -> dict:
        out: dict = {}
        if self.rollup:
            out["taxonomy_rollup"] = {"threshold": self.rollup.threshold,
                                      "first_taxon_id": len(self.labels)}
        if self.allow:
            out["allow_list"] = True
        return out


def make_post(clf, rollup_threshold: Optional[float], allow_path: Optional[str],
              deployment: Optional[str], base_name: str) -> Optional[Post]:
    """The run's Post, or None when neither --rollup_threshold nor --allow is given."""
    if rollup_threshold is None and not allow_path:
        return None
    tax = bundle_taxonomy(clf)
    if rollup_threshold is not None and tax is None:
        raise EdgeError(f"--rollup_threshold needs a taxonomy: no {FILE_NAME} beside "
                        f"{clf.spec.model_path}")
    empty = {i for i, n in enumerate(clf.labels) if n in set(clf.spec.empty_classes)}
    allow = read_allow(Path(allow_path)) if allow_path else None
    if allow is not None:
        _warn_unknown(allow, tax, clf.labels)
    return Post(list(clf.labels), empty, tax,
                Rollup(tax, rollup_threshold) if rollup_threshold is not None else None,
                allow, deployment, base_name)


def _warn_unknown(allow: AllowList, tax: Optional[Taxonomy], labels: Sequence[str]) -> None:
    """A name no label answers to is most often a typo: say so (it still allows nothing)."""
    import sys

    known: set[str] = set()
    for i, label in enumerate(labels):
        known |= tax.names_of(i) if tax else {label.strip().lower()}
    names = set(allow.everywhere or set()).union(*allow.by_deployment.values())
    unknown = sorted(names - known)
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        print(f"kerascls-edge: warning: --allow names {len(unknown)} that no label or taxon of "
              f"the model answers to: {', '.join(unknown[:5])}{more}", file=sys.stderr)

"""Taxonomy for the device: label -> scientific name (placeholder until rollup lands)."""
from __future__ import annotations

from typing import Callable


def taxon_lookup(clf) -> Callable[[str], str]:
    """label -> scientificName; the label itself where the bundle has no taxonomy."""
    return lambda label: label

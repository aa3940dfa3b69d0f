"""Private Keras names: each one kerascls reads is still where it was, and none is read
outside ``kerascls/models/_keras_private.py``.

A Keras upgrade that moves one fails here with the name that moved, instead of deep in
``create_model(weights="imagenet")``; pyproject.toml bounds ``keras`` to tested versions.
"""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

import pytest

from kerascls.models import _keras_private

ROOT = Path(__file__).resolve().parents[1]
ISOLATED = ROOT / "kerascls" / "models" / "_keras_private.py"
PRIVATE_USE = re.compile(r"keras\.src\b|\._inbound_nodes\b|\._outbound_nodes\b")
# Known uses being removed by open work: (file, stripped line) → why. Anything new fails.
KNOWN: dict[tuple[str, str], str] = {
}


@pytest.mark.parametrize("module, attribute", _keras_private.PRIVATE_NAMES,
                         ids=[f"{m}.{a}" for m, a in _keras_private.PRIVATE_NAMES])
def test_private_name_still_exists(module, attribute):
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"Keras moved {module} (kerascls reads {module}.{attribute}): {exc}")
    assert hasattr(mod, attribute), f"Keras moved {module}.{attribute}"


def test_accessors_return_what_keras_uses():
    """The values, not just the names: a hash table per twin module, an http base URL."""
    for module in _keras_private.APPLICATION_MODULES:
        hashes = _keras_private.weights_hashes(module)
        assert hashes and all(len(pair) == 2 for pair in hashes.values()), module
        assert _keras_private.weights_base_url(module).startswith("https://"), module
    assert isinstance(_keras_private.keras_home(), str)


def test_no_private_keras_outside_the_isolating_module():
    offenders = []
    for folder in (ROOT / "kerascls", ROOT / "export" / "kerascls_edge"):
        for path in sorted(folder.rglob("*.py")):
            if path == ISOLATED:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                rel = str(path.relative_to(ROOT))
                if PRIVATE_USE.search(line.split("#")[0]) and (rel, line.strip()) not in KNOWN:
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, ("private Keras names outside kerascls/models/_keras_private.py "
                           "(use public API or add them there):\n" + "\n".join(offenders))


def test_known_uses_are_current():
    """Warn (other work removes them) about KNOWN entries whose line is gone."""
    for (rel, line), _why in KNOWN.items():
        path = ROOT / rel
        if not path.is_file() or line not in {x.strip() for x in path.read_text().splitlines()}:
            warnings.warn(f"tests/test_keras_private.py: {rel}: {line!r} is gone; delete it "
                          "from KNOWN", stacklevel=1)

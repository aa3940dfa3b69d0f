"""The locks in locks/ agree with pyproject.toml, and every install path goes through them.

A stale lock (a dependency added, a range moved, without scripts/update-locks.sh) fails here,
so it is caught before CI installs versions no test has seen.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_locks(root: Path = ROOT):
    spec = importlib.util.spec_from_file_location("kerascls_locks", ROOT / "scripts" / "locks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.ROOT, mod.LOCKS = root, root / "locks"
    return mod


def _pins(path: Path) -> dict[str, str]:
    """name==version lines read here with a regex of its own (not scripts/locks.py's)."""
    text = path.read_text(encoding="utf-8")
    return {n.lower().replace("_", "-").replace(".", "-"): v
            for n, v in re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)$", text, re.M)}


def test_the_locks_agree_with_the_pyproject_files() -> None:
    locks = _load_locks()
    assert [p for kind in locks.KINDS for p in locks.problems(kind)] == []


@pytest.mark.parametrize("change, expect", [
    (('"numpy>=2.4.6"', '"numpy>=2.4.6,<2.4"'), "does not allow the locked numpy"),
    (('"Pillow>=13.0.0",', '"Pillow>=13.0.0",\n    "rich>=13",'), "rich>=13 is not in"),
    (('"Pillow>=13.0.0",', '"Pillow>=12.0.0",'), "other dependency lists"),
])
def test_a_stale_lock_is_caught(tmp_path: Path, change: tuple[str, str], expect: str) -> None:
    """A copy of the repository's pyproject files with one dependency changed: the check says so."""
    (tmp_path / "export").mkdir()
    for rel in ("pyproject.toml", "export/pyproject.toml"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    edge = tmp_path / "export" / "pyproject.toml"
    text = edge.read_text(encoding="utf-8")
    assert change[0] in text
    edge.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    locks = _load_locks(tmp_path)
    found = " | ".join(p for kind in locks.KINDS for p in locks.problems(kind))
    assert expect in found


def test_the_device_lock_is_the_test_locks_versions() -> None:
    """What a Pi installs is exactly what the x86 tests ran (same numpy, Pillow, LiteRT, ...)."""
    test = _pins(ROOT / "locks" / "test-cp311-linux-x86_64.txt")
    edge = _pins(ROOT / "locks" / "edge-cp311-linux.txt")
    assert {"ai-edge-litert", "av", "numpy", "pillow", "jinja2"} <= set(edge)
    assert {n: test.get(n) for n in edge} == edge


@pytest.mark.parametrize("name", ["test-cp311-linux-x86_64.txt", "edge-cp311-linux.txt"])
def test_a_lock_is_portable_and_says_its_platform(name: str) -> None:
    text = (ROOT / "locks" / name).read_text(encoding="utf-8")
    assert "CPython 3.11" in text.splitlines()[0] and "Linux" in text.splitlines()[0]
    assert not re.search(r"^\s*(-e|--index-url|--extra-index-url|--find-links)\b", text, re.M)
    assert "file://" not in text and "/tmp/" not in text  # nothing of the machine that made it
    body = [ln for ln in text.splitlines() if ln and not ln.lstrip().startswith("#")]
    assert body and all(re.fullmatch(r"[A-Za-z0-9][\w.-]*==\S+", ln) for ln in body)


def test_every_install_path_goes_through_the_lock() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command1 = re.search(r"```sh\n\s*(S=\$\(command -v sudo\).*)\n", readme).group(1)
    assert "-c locks/test-cp311-linux-x86_64.txt" in command1
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    installs = [ln for ln in ci.splitlines()
                if "pip install" in ln and not ln.lstrip().startswith("#")]
    assert installs and all("-c locks/" in ln for ln in installs)
    assert "scripts/locks.py check --installed" in ci
    sysroot = (ROOT / "scripts" / "aarch64" / "build-sysroot.sh").read_text(encoding="utf-8")
    assert "locks/edge-cp311-linux.txt" in sysroot

"""Shared test fixtures and marks: where the shared data lives, a CLI runner, and the
Fashion-MNIST Debian package check (test modules import these from here, never from
each other)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kerascls.data import fashion_mnist as fm

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

HAVE_DEBIAN = all((fm.DEBIAN_DIR / f).exists() for pair in fm._FILES.values() for f in pair)
needs_debian = pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Debian package "
                                  f"dataset-fashion-mnist not installed ({fm.DEBIAN_DIR})")


def run_cli(*args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``kerascls ARGS`` in a fresh process (conversions leak memory in-process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kerascls.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode:
        raise AssertionError(f"kerascls {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli

"""Atomic outputs: a write appears whole or not at all, and a killed writer's leftovers go."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kerascls.utils import atomic_path


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "bundle") as tmp:
            tmp.mkdir()
            (tmp / "model.tflite").write_bytes(b"half")
            raise RuntimeError("converter crashed")
    assert list(tmp_path.iterdir()) == []


def test_directory_is_replaced_whole(tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "old.txt").write_text("old")
    with atomic_path(tmp_path / "bundle") as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "bundle").iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".bundle.tmp-{dead}").mkdir()
    (tmp_path / f".model.tmp-{dead}.keras").write_bytes(b"x")
    with atomic_path(tmp_path / "bundle") as tmp:
        tmp.mkdir()
    with atomic_path(tmp_path / "model.keras") as tmp:
        tmp.write_bytes(b"model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model.keras"]

"""`kerascls-edge predict --sort_into DIR`: links or copies by label, originals never touched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.cli import main  # noqa: E402
from tests.shared_paths import CORAL, CORAL_MODEL, SPECIESNET, coral_labels  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (CORAL_MODEL.is_file() and SPECIESNET.is_dir()),
    reason="../shared/data (Coral model, SpeciesNet frames) absent")


def _state(folder: Path) -> dict:
    """Bytes, inode, size and mtime of every file under folder: what 'untouched' means."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                               st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _images(tmp_path: Path) -> Path:
    img = tmp_path / "card"
    (img / "a").mkdir(parents=True)
    for name in ("cat.bmp", "parrot.jpg"):
        shutil.copy(CORAL / name, img / "a" / name)
    for name in ("blank.jpg", "ocelot.jpg", "african_elephants_truncated_file.jpg"):
        shutil.copy(SPECIESNET / name, img / name)
    return img


def _model(tmp_path: Path) -> Path:
    """The Coral model with its labels beside it (one "crane" renamed: coral_labels)."""
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "m.tflite").symlink_to(CORAL_MODEL)
    coral_labels(tmp_path / "bundle" / "labels.txt")
    return tmp_path / "bundle" / "m.tflite"


def _top(results: Path) -> dict:
    md = json.loads(results.read_text())
    cats = md["classification_categories"]
    return {im["file"]: (cats[im["detections"][0]["classifications"][0][0]],
                         im["detections"][0]["classifications"][0][1]) for im in md["images"]}


@pytest.mark.parametrize("copy", [False, True])
def test_sorted_by_label_and_originals_untouched(tmp_path: Path, copy: bool, capsys) -> None:
    img = _images(tmp_path)
    before = _state(img)
    target = tmp_path / "sorted"
    out = tmp_path / "r.json"
    args = ["predict", str(_model(tmp_path)), str(img), "--recursive", "-o", str(out),
            "--threads", "2", "--progress_every", "-1", "--sort_into", str(target),
            "--sort_threshold", "0.6", *(["--copy"] if copy else [])]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)["sort_into"]
    top = _top(out)
    placed = {}
    for p in target.rglob("*"):
        if (p.is_file() or p.is_symlink()) and p.name != "manifest.csv":
            folder, rel = p.relative_to(target).parts[0], "/".join(p.relative_to(target).parts[1:])
            placed[rel] = folder
            assert p.is_symlink() != copy
            assert p.read_bytes() == (img / rel).read_bytes()
            if not copy:
                assert os.path.realpath(p) == os.path.realpath(img / rel)
    assert set(placed) == set(top)
    for rel, (label, conf) in top.items():
        assert placed[rel] == (label if conf >= 0.6 else "_uncertain"), rel
    assert placed["a/parrot.jpg"] == "macaw"  # 0.996
    assert summary["uncertain"] == sum(c < 0.6 for _, c in top.values()) >= 1
    assert _state(img) == before  # not one original byte, inode or mtime changed
    # a rerun finds everything in place (by content, copies too) and still changes nothing
    assert main(args + ["--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["sort_into"]["already"] == 5
    assert _state(img) == before


def test_sort_into_inside_the_input_folder_is_refused(tmp_path: Path, capsys) -> None:
    img = _images(tmp_path)
    rc = main(["predict", str(_model(tmp_path)), str(img), "-o", str(tmp_path / "r.json"),
               "--sort_into", str(img / "sorted")])
    assert rc == 2
    assert capsys.readouterr().err.startswith("kerascls-edge: error: --sort_into")
    assert not (tmp_path / "r.json").exists()

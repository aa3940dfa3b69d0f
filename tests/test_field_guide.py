"""docs/field-guide.md runs as written: every fenced ``bash`` block, in order, in a fresh folder.

The guide's commands use four shell variables (its "The four names used below"): ``$CARD``,
``$WORK``, ``$BUNDLE`` and ``$DATA``. Here CARD is a card assembled in ``DCIM/100MEDIA`` from
``../shared/data`` (real camera-trap photos and zamba's camera-trap videos; rendered photos and
clips where the shared data is absent), WORK an empty temporary folder, BUNDLE the Coral
MobileNet (else a tiny bundle TensorFlow makes), DATA ``../shared/data``. ``kerascls`` and
``kerascls-edge`` on PATH run this tree with this interpreter.

Each block runs under ``bash -eu -o pipefail`` and must exit 0; its ``# makes: PATH…`` line
names the files it promises, and each must exist afterwards. The outputs are then checked for
what the guide says they hold (videos as one entry with their frames, a strip on the review
page, video media in the package, a manifest for sorting). Blocks that call ``kerascls train``,
``evaluate`` or ``export`` need TensorFlow and minutes: they run in the slow test, after the
device blocks.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.shared_paths import CORAL_MODEL, DATA, coral_tflite

GUIDE = ROOT / "docs" / "field-guide.md"
ZAMBA = DATA / "camtrap" / "zamba_videos"
PHOTOS = DATA / "camtrap" / "speciesnet_test_data"
CARD_PHOTOS = ("african_elephants.jpg", "american_black_bear.jpg", "blank.jpg", "ocelot.jpg")
CARD_VIDEOS = ("raw/savanna/Grumeti_Tanzania/K38_check3/09190048_Hyena.AVI",
               "raw/dzanga_sangha/T10/Second_visit_T10/Second_visit_T10C2/01170043.MP4",
               "chimp.mp4")
TRAINING = re.compile(r"\bkerascls (train|evaluate|export)\b")
SHARED = CORAL_MODEL.is_file() and ZAMBA.is_dir() and PHOTOS.is_dir()


def blocks(text: str) -> list[str]:
    """The guide's fenced ```bash blocks, in order (```text blocks are not commands)."""
    return re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)


def promised(block: str, env: dict) -> list[Path]:
    """The paths a block's ``# makes:`` lines name, with the guide's variables filled in."""
    names = [p for line in re.findall(r"^# makes:(.*)$", block, re.M) for p in line.split()]
    return [Path(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], p)) for p in names]


def test_guide_has_commands_and_each_says_what_it_makes():
    """Parsing itself: the guide has device and training blocks, each promising files, and
    uses only the four documented variables (an unknown one would be empty under bash -u)."""
    found = blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(found) >= 8
    assert sum(bool(TRAINING.search(b)) for b in found) >= 3
    env = {k: f"/{k}" for k in ("CARD", "WORK", "BUNDLE", "DATA")}
    for b in found:
        assert promised(b, env), f"no '# makes:' line in:\n{b}"
        assert set(re.findall(r"\$\{?(\w+)", b)) <= set(env), b


def _bin(folder: Path) -> Path:
    """`kerascls` and `kerascls-edge` that run this tree with this interpreter."""
    folder.mkdir()
    for name, module in (("kerascls", "kerascls.cli"), ("kerascls-edge", "kerascls_edge")):
        (folder / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        (folder / name).chmod(0o755)
    return folder


def _card(root: Path) -> Path:
    """A camera card: photos and videos in DCIM/100MEDIA, named as cameras name them."""
    media = root / "DCIM" / "100MEDIA"
    media.mkdir(parents=True)
    if SHARED:
        for i, name in enumerate(CARD_PHOTOS, 1):
            shutil.copy2(PHOTOS / name, media / f"IMG_{i:04d}.JPG")
        for i, name in enumerate(CARD_VIDEOS, 1):
            shutil.copy2(ZAMBA / name, media / f"VID_{i:04d}{Path(name).suffix.upper()}")
        return root
    from tests.scenes import texture
    from tests.video_clips import render
    for i, cls in enumerate(("rings", "stripes", "rings"), 1):
        Image.fromarray(texture(cls, 641, 479, i)).save(media / f"IMG_{i:04d}.JPG", quality=90)
    render(media / "VID_0001.AVI", "mpeg4", 31, size=(106, 60))
    render(media / "VID_0002.MP4", "libx264", 25, size=(320, 180))
    return root


def _bundle(tmp: Path) -> Path:
    if SHARED:
        return coral_tflite(tmp)
    pytest.importorskip("tensorflow", reason="TensorFlow makes the stand-in bundle")
    from tests.bundle_scripts import MAKE_BUNDLES
    subprocess.run([sys.executable, "-c", MAKE_BUNDLES, str(tmp / "bundles")], check=True,
                   capture_output=True, timeout=600)
    return tmp / "bundles" / "u8"


@pytest.fixture(scope="module")
def guide_env(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("field_guide")
    env = {**os.environ, "CARD": str(_card(root / "card")), "WORK": str(root / "work"),
           "BUNDLE": str(_bundle(root)), "DATA": str(DATA.resolve()),
           "PATH": f"{_bin(root / 'bin')}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), str(ROOT / "export"),
                                                       os.environ.get("PYTHONPATH")))),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["_cwd"] = str(root)
    return env


def run_block(block: str, env: dict) -> None:
    """One block under bash -eu -o pipefail: exit 0, no traceback, its promised files there."""
    r = subprocess.run(["bash", "-eu", "-o", "pipefail", "-c", block], capture_output=True,
                       text=True, timeout=900, env={k: v for k, v in env.items() if k != "_cwd"},
                       cwd=env["_cwd"])
    assert r.returncode == 0 and "Traceback" not in r.stderr, \
        f"{block}\nexit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    for path in promised(block, env):
        assert path.exists(), f"{block}\ndid not make {path}"


def _device_blocks() -> list[str]:
    return [b for b in blocks(GUIDE.read_text(encoding="utf-8")) if not TRAINING.search(b)]


def test_device_steps_run_as_written(guide_env):
    """Steps 1-5 (no TensorFlow): copy, classify, CSV, review page, Camtrap DP, sorting."""
    for block in _device_blocks():
        run_block(block, guide_env)
    work = Path(guide_env["WORK"])
    media = sorted(p.name for p in (work / "card" / "DCIM" / "100MEDIA").iterdir())
    entries = {Path(e["file"]).name: e
               for e in json.loads((work / "results.json").read_text())["images"]}
    assert sorted(entries) == media and not any("failure" in e for e in entries.values())
    videos = [n for n in media if n.startswith("VID_")]
    for name in videos:  # one entry a video, its frames kept, a label for the video
        v = entries[name]["video"]
        assert v["frames_used"] == len(entries[name]["frames_processed"]) >= 1
        assert v["classifications"] and len(v["frames"]) == v["frames_used"]
    rows = list(csv.DictReader((work / "results.csv").open(encoding="utf-8")))
    assert sorted(r["file"].rsplit("/", 1)[-1] for r in rows if r["row"] == "video") == videos
    assert sum(r["row"] == "frame" for r in rows) == sum(
        entries[n]["video"]["frames_used"] for n in videos)
    page = (work / "review.html").read_text(encoding="utf-8")
    assert all(n in page or n in "".join(p.read_text(encoding="utf-8", errors="replace")
                                         for p in (work / "review_data").glob("*"))
               for n in videos)
    types = [r["fileMediatype"] for r in csv.DictReader((work / "media.csv").open())]
    assert sum(t.startswith("video/") for t in types) == len(videos)
    assert len(types) == len(media)
    manifest = list(csv.DictReader((work / "sorted" / "manifest.csv").open(encoding="utf-8")))
    assert len(manifest) == len(media)
    sorted_files = [p for p in (work / "sorted").rglob("*") if p.is_file()
                    and p.name != "manifest.csv"]
    assert sorted(p.name for p in sorted_files) == media  # every file once, none lost


@pytest.mark.slow  # two small trainings, an evaluation and an int8 export: minutes on 2 cores
def test_training_steps_run_as_written(guide_env):
    """Step 6: train from a labelled CSV (photos, then videos) and from MegaDetector output,
    evaluate, export, and classify the card with the new bundle (after the device steps,
    which make the card copy)."""
    if not SHARED:
        pytest.skip(f"the training examples use {DATA}/camtrap/ena24_small")
    if not (Path(guide_env["WORK"]) / "card").is_dir():
        for block in _device_blocks():
            run_block(block, guide_env)
    for block in blocks(GUIDE.read_text(encoding="utf-8")):
        if TRAINING.search(block):
            run_block(block, guide_env)
    work = Path(guide_env["WORK"])
    labels = (work / "run_md" / "bundle" / "labels.txt").read_text().splitlines()
    assert len(labels) >= 5  # the ENA24 species
    mine = json.loads((work / "mine.json").read_text())["images"]
    assert len(mine) == len(list((work / "card").rglob("*.*"))) and \
        not any("failure" in e for e in mine)
    assert np.isfinite(json.loads((work / "run_csv" / "metrics.json").read_text())["accuracy"])
    video_rows = list(csv.DictReader((work / "run_video" / "eval" / "predictions.csv").open(
        encoding="utf-8")))
    assert {r["row"] for r in video_rows} == {"video", "frame"}  # each test video and its frames

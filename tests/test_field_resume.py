"""Field-proof resume, output locks and bundle validation (issue 25, cases 3, 5-8, integrity).

A field station reruns over refilled SD cards (IMG_0001 again, other photo), starts a second run
by mistake, edits its allow-list between runs, and copies bundles around on cards. Each test
below failed on the code before issue 25: a stale or short result was reported as success.

The model is Google's Coral MobileNet v2 from ../shared/data (no TensorFlow needed except in the
export test); photos are Coral's sample photos, cut and re-encoded here at awkward sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge import runner  # noqa: E402
from kerascls_edge.bundle import EdgeError  # noqa: E402
from kerascls_edge.classifier import Classifier  # noqa: E402
from kerascls_edge.cli import main  # noqa: E402
from tests.shared_paths import CORAL, CORAL_MODEL, coral_labels  # noqa: E402

pytestmark = pytest.mark.skipif(not CORAL_MODEL.is_file(),
                                reason="the Coral model is in ../shared/data (absent here)")

ERR = re.compile(r"^kerascls-edge: error: \S.*$")
META = {"format": "kerascls-bundle", "format_version": 1, "architecture": "coral_mnv2",
        "task": "multiclass",
        "input": {"height": 224, "width": 224, "channels": 3, "dtype": "uint8",
                  "value_range": [0, 255], "resize": "stretch", "interpolation": "bilinear"},
        "output": {"activation": "softmax"}, "thresholds": {"default": 0.5},
        "empty_classes": ["background"]}
PHOTOS = {"parrot": CORAL / "parrot.jpg", "cat": CORAL / "cat.bmp",
          "hopper": CORAL / "grace_hopper.bmp"}


def make_bundle(d: Path, hashes: bool = False) -> Path:
    """A bundle around the Coral model; `hashes`: model.json lists each file's sha256 (worked
    out here with hashlib, not with the exporter's code)."""
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(CORAL_MODEL, d / "model.tflite")
    coral_labels(d / "labels.txt")
    meta = dict(META)
    if hashes:
        meta["files"] = {n: {"sha256": hashlib.sha256((d / n).read_bytes()).hexdigest()}
                         for n in ("model.tflite", "labels.txt")}
    (d / "model.json").write_text(json.dumps(meta))
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle")


def photo(path: Path, name: str, shift: int = 0, size=(301, 227)) -> Path:
    """A real photo (its first `shift` rows and columns cut) at an awkward size, saved as a
    camera JPEG."""
    img = Image.open(PHOTOS[name]).convert("RGB")
    img = img.crop((shift, shift, img.width, img.height)).resize(size, Image.Resampling.BICUBIC)
    img.save(path, "JPEG", quality=88)
    return path


def run(capsys, *args: str) -> tuple[int, str, dict]:
    """main(predict ...) in-process: (exit status, stderr, the summary line or {})."""
    rc = main(["predict", *args, "--threads", "1", "--decode_threads", "0",
               "--progress_every", "-1"])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    lines = cap.out.strip().splitlines()
    return rc, cap.err, json.loads(lines[-1]) if rc == 0 and lines else {}


def one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("kerascls-edge: error")]
    assert len(lines) == 1 and ERR.match(lines[0]), err
    return lines[0]


def results(out: Path) -> dict[str, list]:
    """file -> its top-3 [class id, confidence] of a MegaDetector results file."""
    return {im["file"]: im["detections"][0]["classifications"][:3]
            for im in json.loads(out.read_text())["images"]}


def labels_of(out: Path) -> dict[str, str]:
    md = json.loads(out.read_text())
    names = md["classification_categories"]
    return {f: names[k[0][0]] for f, k in results(out).items()}


# -- case 3: a second run on the same output, and results lost under a run ---------------------


def test_second_run_on_the_same_output_refuses_naming_the_first(bundle, tmp_path):
    imgs = tmp_path / "card"
    imgs.mkdir()
    n = 240
    for i in range(n):  # distinct files: each real file is classified once
        photo(imgs / f"IMG_{i:04d}.JPG", "parrot", shift=i % 40)
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "kerascls_edge", "predict", str(bundle), str(imgs), "-o",
           str(out), "--threads", "1", "--decode_threads", "1", "--checkpoint_every", "5",
           "--progress_every", "-1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "export")}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    partial = tmp_path / "r.json.partial"
    deadline = time.monotonic() + 120
    while not list(partial.glob("part-*.jsonl")) and first.poll() is None:
        assert time.monotonic() < deadline, "the first run wrote no checkpoint"
        time.sleep(0.01)
    second = subprocess.run(cmd + ["--overwrite"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert first.poll() is None, "the first run ended before the second started: inconclusive"
    assert second.returncode == 2
    line = one_error(second.stderr)
    assert f"pid {first.pid}" in line and str(out) in line
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["images"] == summary["processed"] == n
    assert sorted(results(out)) == sorted(f"IMG_{i:04d}.JPG" for i in range(n))
    assert not partial.exists() and not (tmp_path / ".r.json.lock").exists()


def test_results_lost_under_a_run_fail_it_and_publish_nothing(bundle, tmp_path, capsys):
    """Another program removes a checkpoint part while the run goes on: the run must not
    report success with fewer results than it processed (the old output stays)."""
    imgs = tmp_path / "card"
    imgs.mkdir()
    for i in range(6):
        photo(imgs / f"IMG_{i:04d}.JPG", "cat", shift=i)
    out = tmp_path / "r.json"
    out.write_text('{\n"info": {"format_version": "1.4", "runtime": "kerascls-edge 0"}}')
    before = out.read_bytes()
    clf = Classifier(bundle, threads=1)

    def consume_then_lose_a_part(clf, items, journal, opts, progress) -> None:
        runner._consume(clf, items, journal, opts, progress)
        sorted(journal.dir.glob("part-*.jsonl"))[0].unlink()  # e.g. a second run's cleanup

    opts = runner.Options(output=out, checkpoint_every=2, decode_threads=0, progress_every=-1)
    with pytest.raises(EdgeError, match=r"only 4 of the 6 results"):
        runner.predict(clf, [str(imgs)], opts, consume=consume_then_lose_a_part)
    assert out.read_bytes() == before
    assert not (tmp_path / ".r.json.tmp").exists()


# -- case 5: a refilled card reuses the names ----------------------------------------------------


def _same_size_in_place(path: Path, new: bytes) -> None:
    """Overwrite `path` in place (same inode) with `new` padded to its size, mtime preserved:
    what (dev, inode, size, mtime) cannot tell from the old photo."""
    st = path.stat()
    assert len(new) <= st.st_size
    with open(path, "r+b") as f:
        f.write(new + b"\0" * (st.st_size - len(new)))  # bytes after EOI: still a whole JPEG
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size,
                                                                 st.st_mtime_ns)


def test_refilled_card_with_reused_names_is_classified_again(bundle, tmp_path, capsys):
    card = tmp_path / "card"
    card.mkdir()
    for i, name in enumerate(["parrot", "hopper", "parrot", "cat"]):
        photo(card / f"IMG_000{i + 1}.JPG", name, shift=3 * i, size=(300, 300))
    out = tmp_path / "r.json"
    args = [str(bundle), str(card), "-o", str(out), "--keep_checkpoint"]
    assert run(capsys, *args)[0] == 0
    old = labels_of(out)
    assert old["IMG_0001.JPG"] == "macaw"
    # the card is formatted and refilled: IMG_0001 and IMG_0002 are new photos
    new_photos = tmp_path / "new"
    new_photos.mkdir()
    photo(new_photos / "IMG_0001.JPG", "cat", size=(260, 200))   # smaller file, padded
    photo(card / "IMG_0002.JPG", "cat", shift=5, size=(300, 300))  # replaced, new inode
    _same_size_in_place(card / "IMG_0001.JPG", (new_photos / "IMG_0001.JPG").read_bytes())
    (card / "IMG_0004.JPG").unlink()  # the new card holds 3 photos, then a 5th
    photo(card / "IMG_0005.JPG", "hopper", size=(280, 210))
    rc, err, summary = run(capsys, *args, "--resume")
    assert rc == 0, err
    assert (summary["processed"], summary["resumed"]) == (3, 1)  # before: (1, 4)
    assert (summary["changed"], summary["gone"]) == (2, 1)
    assert "1 result(s) in the checkpoint are of files no longer in the inputs" in err
    # the same card classified from scratch: the answer a resume must give
    fresh = tmp_path / "fresh.json"
    assert run(capsys, str(bundle), str(card), "-o", str(fresh))[0] == 0
    assert results(out) == results(fresh)
    assert labels_of(out)["IMG_0001.JPG"] != "macaw"
    # resumed again with nothing changed: nothing redone, each file once, newest result kept
    rc, err, summary = run(capsys, *args, "--resume")
    assert rc == 0 and (summary["resumed"], summary["processed"]) == (4, 0)
    assert results(out) == results(fresh)
    files = [im["file"] for im in json.loads(out.read_text())["images"]]
    assert sorted(files) == ["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0003.JPG", "IMG_0005.JPG"]


# -- case 6: resume under other settings ---------------------------------------------------------


@pytest.fixture
def detections_card(tmp_path) -> tuple[Path, Path]:
    card = tmp_path / "card"
    card.mkdir()
    images = []
    for i, (name, conf) in enumerate([("parrot", 0.9), ("cat", 0.35), ("hopper", 0.6)]):
        photo(card / f"IMG_000{i + 1}.JPG", name, shift=i)
        images.append({"file": f"IMG_000{i + 1}.JPG", "detections": [
            {"category": "1", "conf": conf, "bbox": [0.1, 0.15, 0.7, 0.6]}]})
    md = tmp_path / "md.json"
    md.write_text(json.dumps({"info": {"format_version": "1.4"},
                              "detection_categories": {"1": "animal"}, "images": images}))
    return card, md


@pytest.mark.parametrize("change", ["allow file edited", "detection threshold",
                                    "detections file edited", "top_k", "crop rule"])
def test_resume_under_other_settings_refuses_naming_what_differs(bundle, detections_card,
                                                                 tmp_path, capsys, change):
    card, md = detections_card
    b = make_bundle(tmp_path / "b")
    allow = tmp_path / "allow.txt"
    allow.write_text("macaw\ntabby, tabby cat\n")
    out = tmp_path / "r.json"
    base = [str(b), str(card), "-o", str(out), "--detections", str(md), "--allow", str(allow),
            "--keep_checkpoint"]
    assert run(capsys, *base)[0] == 0
    before = out.read_bytes()
    args, says = list(base), {"allow file edited": "--allow file",
                              "detection threshold": "--detection_threshold: 0.2 -> 0.5",
                              "detections file edited": "--detections file",
                              "top_k": "--top_k: 5 -> 3", "crop rule": "crop.padding"}[change]
    if change == "allow file edited":
        allow.write_text("macaw\n")  # same name, other content
    elif change == "detection threshold":
        args += ["--detection_threshold", "0.5"]
    elif change == "detections file edited":
        md.write_text(md.read_text().replace("0.35", "0.45"))
    elif change == "top_k":
        args += ["--top_k", "3"]
    else:
        meta = json.loads((b / "model.json").read_text())
        (b / "model.json").write_text(json.dumps({**meta, "crop": {"padding": 0.1}}))
    rc, err, _ = run(capsys, *args, "--resume")
    line = one_error(err)
    assert rc == 2 and "cannot resume" in line and says in line, line
    assert out.read_bytes() == before


def test_resume_with_the_same_settings_from_a_moved_allow_file(bundle, tmp_path, capsys):
    """Files are recorded by content: the same allow-list at another path still resumes."""
    card = tmp_path / "card"
    card.mkdir()
    for i in range(2):
        photo(card / f"IMG_000{i}.JPG", "parrot", shift=i)
    allow = tmp_path / "allow.txt"
    allow.write_text("macaw\n")
    out = tmp_path / "r.json"
    assert run(capsys, str(bundle), str(card), "-o", str(out), "--allow", str(allow),
               "--keep_checkpoint")[0] == 0
    moved = tmp_path / "moved.txt"
    allow.rename(moved)
    rc, err, summary = run(capsys, str(bundle), str(card), "-o", str(out), "--allow", str(moved),
                           "--resume")
    assert rc == 0 and summary["resumed"] == 2 and summary["processed"] == 0, err


# -- case 7: a detections file naming one image twice -------------------------------------------


@pytest.mark.parametrize("second", ["IMG_0002.JPG", "./IMG_0002.JPG"])
def test_detections_file_listing_a_file_twice_is_refused(bundle, detections_card, tmp_path,
                                                         capsys, second):
    card, md = detections_card
    data = json.loads(md.read_text())
    data["images"].append({"file": second, "detections": [
        {"category": "1", "conf": 0.8, "bbox": [0.5, 0.5, 0.2, 0.2]}]})
    md.write_text(json.dumps(data))
    out = tmp_path / "r.json"
    rc, err, _ = run(capsys, str(bundle), str(card), "-o", str(out), "--detections", str(md))
    line = one_error(err)
    assert rc == 2 and "images[3].file" in line and second in line and "twice" in line
    assert not out.exists()


# -- case 8: labels a result cannot tell apart ----------------------------------------------------


def _labels_with(b: Path, edit) -> Path:
    lines = (b / "labels.txt").read_text().splitlines()
    edit(lines)
    (b / "labels.txt").write_text("\n".join(lines) + "\n")
    return b / "labels.txt"


@pytest.mark.parametrize("edit, says", [
    (lambda ls: ls.__setitem__(7, ""), "line 8 is an empty class name"),
    (lambda ls: ls.__setitem__(7, "   \t"), "line 8 is an empty class name"),
    (lambda ls: ls.__setitem__(90, " Tench, TINCA tinca "),
     "line 91 'Tench, TINCA tinca' repeats line 2"),
    (lambda ls: ls.__setitem__(519, "CRANE"), "line 520 'CRANE' repeats line 136"),
])
def test_labels_with_empty_or_repeated_names_are_refused(tmp_path, capsys, edit, says):
    b = make_bundle(tmp_path / "b")
    labels = _labels_with(b, edit)
    card = tmp_path / "card"
    card.mkdir()
    photo(card / "IMG_0001.JPG", "parrot")
    out = tmp_path / "r.csv"
    rc, err, _ = run(capsys, str(b), str(card), "-o", str(out))
    line = one_error(err)
    assert rc == 2 and says in line and str(labels) in line, line
    assert not out.exists()
    # the same file given to a bare .tflite
    rc, err, _ = run(capsys, str(b / "model.tflite"), str(card), "-o", str(out), "--labels",
                     str(labels))
    assert rc == 2 and says in one_error(err)


def test_trailing_blank_lines_of_a_labels_file_are_fine(tmp_path, capsys):
    b = make_bundle(tmp_path / "b")
    (b / "labels.txt").write_text((b / "labels.txt").read_text() + "\n\n")
    assert len(Classifier(b, threads=1).labels) == 1001


def test_model_json_class_names_repeated_are_refused(tmp_path):
    b = make_bundle(tmp_path / "b")
    (b / "labels.txt").unlink()
    names = coral_labels(tmp_path / "l.txt").read_text().splitlines()
    names[3] = names[1]
    meta = json.loads((b / "model.json").read_text())
    (b / "model.json").write_text(json.dumps({**meta, "class_names": names}))
    with pytest.raises(EdgeError, match=r"class_names\[3\] 'tench, Tinca tinca' repeats "
                                        r"class_names\[1\]"):
        Classifier(b, threads=1)


# -- bundle integrity ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["labels edited", "model from elsewhere", "model cut",
                                    "labels missing"])
def test_bundle_file_differing_from_its_sha256_is_refused(tmp_path, capsys, damage):
    b = make_bundle(tmp_path / "b", hashes=True)
    card = tmp_path / "card"
    card.mkdir()
    photo(card / "IMG_0001.JPG", "parrot")
    out = tmp_path / "r.json"
    assert run(capsys, str(b), str(card), "-o", str(out))[0] == 0  # intact: it runs
    victim = b / ("labels.txt" if "labels" in damage else "model.tflite")
    if damage == "labels edited":
        _labels_with(b, lambda ls: ls.__setitem__(89, "macaw (edited)"))
    elif damage == "model from elsewhere":
        victim.write_bytes(victim.read_bytes()[:-1] + b"\x01")
    elif damage == "model cut":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    else:
        victim.unlink()
    rc, err, _ = run(capsys, str(b), str(card), "-o", str(out), "--overwrite")
    line = one_error(err)
    assert rc == 2 and victim.name in line, line
    assert ("sha256" in line) != (damage == "labels missing")


def test_bundle_without_file_hashes_still_loads(tmp_path):
    b = make_bundle(tmp_path / "b")
    assert "files" not in json.loads((b / "model.json").read_text())
    assert Classifier(b, threads=1).labels[89] == "macaw"


def test_export_writes_hashes_the_device_checks_and_refuses_bad_names(tmp_path):
    """kerascls's bundle writer on the real Coral model: model.json carries each file's sha256
    (checked here with hashlib) and kerascls-edge loads it; names labels.txt cannot carry
    are refused before anything is written."""
    E = pytest.importorskip("kerascls.tflite.export")
    names = coral_labels(tmp_path / "l.txt").read_text().splitlines()
    out = tmp_path / "bundle"
    E._write_bundle(out, CORAL_MODEL.read_bytes(), {**META, "class_names": names}, {})
    meta = json.loads((out / "model.json").read_text())
    for name in ("model.tflite", "labels.txt"):
        data = (out / name).read_bytes()
        assert meta["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(),
                                       "bytes": len(data)}
    assert (out / "labels.txt").read_text(encoding="utf-8").splitlines() == names
    assert Classifier(out, threads=1).labels == names
    for bad, says in [("", "empty"), ("crane", "repeats"), ("Crane", "repeats"),
                      ("two\nlines", "line break"), ("x\u2028y", "line break"),
                      (" padded", "space")]:
        edited = list(names)
        edited[7] = bad
        with pytest.raises(E.ExportError, match=says):
            E._write_bundle(tmp_path / "refused", b"tflite", {"class_names": edited}, {})
        assert not (tmp_path / "refused").exists()

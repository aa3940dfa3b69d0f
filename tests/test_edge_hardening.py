"""kerascls-edge against a careless or hostile user (issue 13): outputs that would destroy a
user's file, checkpoints of another model, link loops, unlistable folders, wrong types in
model.json and detection files, non-UTF-8 names.

The model is Google's Coral MobileNet v2 from ../shared/data (a model nobody here made), so no
TensorFlow is needed; images are rendered here. The CLI's `main` runs in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.cli import main  # noqa: E402
from tests.shared_paths import coral_labels  # noqa: E402

CORAL = ROOT.parent / "shared" / "data" / "models" / "coral"
ERR = re.compile(r"^kerascls-edge: error: \S.*$")

pytestmark = pytest.mark.skipif(not (CORAL / "mobilenet_v2_1.0_224_quant.tflite").is_file(),
                                reason="the Coral model is in ../shared/data (absent here)")


def make_bundle(d: Path, labels_edit: bool = False, **meta_overrides) -> Path:
    """A bundle directory around the Coral model (uint8 224×224×3, 1001 classes)."""
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(CORAL / "mobilenet_v2_1.0_224_quant.tflite", d / "model.tflite")
    labels = coral_labels(d / "labels.txt").read_text().splitlines()  # one "crane" renamed
    if labels_edit:
        labels[1] = "not a tench"
    (d / "labels.txt").write_text("\n".join(labels) + "\n")
    meta = {"format": "kerascls-bundle", "format_version": 1, "architecture": "coral_mnv2",
            "task": "multiclass",
            "input": {"height": 224, "width": 224, "channels": 3, "dtype": "uint8",
                      "value_range": [0, 255], "resize": "stretch",
                      "interpolation": "bilinear"},
            "output": {"activation": "softmax"}, "thresholds": {"default": 0.5},
            "empty_classes": ["background"]}
    meta.update(meta_overrides)
    (d / "model.json").write_text(json.dumps(meta))
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle")


def texture(path: Path, seed: int, size=(64, 48)) -> Path:
    """A photo-like image: smooth random blobs plus fine grain, saved by suffix."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(img, np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def folder(d: Path, n: int = 3) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        texture(d / f"img{i}.jpg", i)
    return d


def run(capsys, *args: str) -> tuple[int, str]:
    """main(args) in-process; (exit status, stderr), with no traceback allowed."""
    rc = main(["predict", *args, "--threads", "1", "--decode_threads", "0",
               "--progress_every", "-1"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def one_error(err: str) -> str:
    """The run's single error line (other stderr lines are LiteRT's INFO chatter)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("kerascls-edge: error")]
    assert len(lines) == 1 and ERR.match(lines[0]), err
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_leftovers(out: Path) -> None:
    """A refused run starts nothing: no checkpoint folder, no temp file."""
    assert not out.with_name(out.name + ".partial").exists()
    assert not out.with_name(f".{out.name}.tmp").exists()


# -- item 1: outputs that are inputs, images, devices, or someone else's file --------------------


def test_output_equal_to_an_input_is_refused_and_untouched(bundle, tmp_path, capsys):
    victim = texture(tmp_path / "victim.jpg", 1)
    before = digest(victim)
    rc, err = run(capsys, str(bundle), str(victim), "-o", str(victim), "--overwrite")
    assert rc == 2 and digest(victim) == before
    one_error(err)
    # the same file under another name (a hard link, no image suffix) is still an input
    alias = tmp_path / "alias"
    os.link(victim, alias)
    rc, err = run(capsys, str(bundle), str(alias), "-o", str(alias), "--overwrite")
    assert rc == 2 and "one of the inputs" in one_error(err) and digest(victim) == before
    # ... and so are the bundle's own files
    labels = bundle / "labels.txt"
    lab = digest(labels)
    rc, err = run(capsys, str(bundle), str(victim), "-o", str(labels), "--overwrite")
    assert rc == 2 and digest(labels) == lab
    no_leftovers(victim)


def test_image_suffix_output_is_refused(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs")
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(tmp_path / "out.PNG"))
    assert rc == 2 and "image suffix" in one_error(err)
    assert not (tmp_path / "out.PNG").exists()


def test_foreign_file_replaced_only_with_overwrite(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs")
    notes = tmp_path / "notes.txt"
    notes.write_text("my field notes\n")
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(notes))
    assert rc == 2 and "--overwrite" in one_error(err)
    assert notes.read_text() == "my field notes\n"
    no_leftovers(notes)
    rc, _ = run(capsys, str(bundle), str(imgs), "-o", str(notes), "--overwrite")
    assert rc == 0 and json.loads(notes.read_text())["images"]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_our_previous_result_is_replaced_without_overwrite(bundle, tmp_path, capsys, fmt):
    imgs = folder(tmp_path / "imgs", 2)
    out = tmp_path / f"out.{fmt}"
    assert run(capsys, str(bundle), str(imgs), "-o", str(out))[0] == 0
    texture(imgs / "new.jpg", 9)
    assert run(capsys, str(bundle), str(imgs), "-o", str(out))[0] == 0
    assert "new.jpg" in out.read_text()


def _special_outputs(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(fifo)
    found = {"fifo": fifo, "symlink to a fifo": link}
    if os.geteuid() == 0:  # a /dev/null twin: what `-o /dev/stdout` as root would replace
        dev = tmp_path / "null.json"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        found["char device"] = dev
    return found


def test_stdout_link_to_a_pipe_is_refused(bundle, tmp_path):
    """`-o /dev/stdout` with stdout a pipe, through a link of our own (never /dev's)."""
    img = texture(tmp_path / "a.jpg", 0)
    link = tmp_path / "stdout.json"
    link.symlink_to("/proc/self/fd/1")
    proc = subprocess.run([sys.executable, "-m", "kerascls_edge", "predict", str(bundle),
                           str(img), "-o", str(link), "--overwrite", "--threads", "1"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "export")})
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    assert os.path.islink(link)


def test_non_regular_outputs_are_refused_and_stay(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs", 1)
    for what, out in _special_outputs(tmp_path).items():
        rc, err = run(capsys, str(bundle), str(imgs), "-o", str(out), "--overwrite")
        assert rc == 2, what
        one_error(err)
        target = Path(os.path.realpath(out))
        assert not stat.S_ISREG(os.stat(target).st_mode), f"{what} was replaced"
        assert os.path.islink(out) == (what == "symlink to a fifo")


# -- item 2: an existing directory is refused before any inference ------------------------------


def test_directory_output_refused_before_inference(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs", 2)
    out = tmp_path / "results"
    out.mkdir()
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(out))
    assert rc == 2 and "directory" in one_error(err)
    assert "images (" not in err  # no progress line: nothing was classified
    no_leftovers(out)
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(tmp_path / "nowhere" / "r.json"))
    assert rc == 2 and "does not exist" in one_error(err)


def test_a_failed_final_write_names_the_output(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs", 1)
    out = tmp_path / "r.json"
    (tmp_path / ".r.json.tmp").mkdir()  # our temp file's name is taken by a folder
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(out))
    line = one_error(err)
    assert rc == 2 and str(out) in line and ".tmp" not in line


def test_write_errors_name_the_users_file_not_our_temp_file():
    from kerascls_edge.cli import _user_path

    out = "/data/run/results.json"
    assert _user_path("/data/run/.results.json.tmp", out) == out
    assert _user_path("/data/run/results.json.partial/.part-000003.jsonl.tmp", out) \
        .startswith(out + " (its checkpoint")


# -- item 3: a checkpoint belongs to one bundle --------------------------------------------------


def _interrupted(bundle: Path, imgs: Path, out: Path, capsys) -> Path:
    """A finished run whose checkpoint is kept: what an interrupted run leaves, plus output."""
    assert run(capsys, str(bundle), str(imgs), "-o", str(out), "--checkpoint_every", "1",
               "--keep_checkpoint")[0] == 0
    out.unlink()
    return out.with_name(out.name + ".partial")


def test_resume_refuses_other_model_even_without_meta(tmp_path, capsys):
    a = make_bundle(tmp_path / "a")
    b = make_bundle(tmp_path / "b", labels_edit=True)
    imgs = folder(tmp_path / "imgs", 2)
    out = tmp_path / "r.json"
    partial = _interrupted(a, imgs, out, capsys)
    (partial / "meta.json").unlink()
    rc, err = run(capsys, str(b), str(imgs), "-o", str(out), "--resume")
    assert rc == 2 and "meta.json" in one_error(err) and not out.exists()
    rc, err = run(capsys, str(a), str(imgs), "-o", str(out), "--resume")
    assert rc == 2  # the same model, but nothing proves it
    assert run(capsys, str(a), str(imgs), "-o", str(out), "--overwrite")[0] == 0


def test_resume_refuses_a_model_swapped_in_place(tmp_path, capsys):
    a = make_bundle(tmp_path / "a")
    imgs = folder(tmp_path / "imgs", 2)
    out = tmp_path / "r.json"
    _interrupted(a, imgs, out, capsys)
    make_bundle(a, labels_edit=True)  # same path, other labels
    rc, err = run(capsys, str(a), str(imgs), "-o", str(out), "--resume")
    assert rc == 2 and "bundle" in one_error(err)


@pytest.mark.parametrize("damage", ["truncated", "binary", "no file key", "foreign class"])
def test_corrupt_checkpoint_part_is_named_and_redone(bundle, tmp_path, capsys, damage):
    imgs = folder(tmp_path / "imgs", 3)
    out = tmp_path / "r.json"
    partial = _interrupted(bundle, imgs, out, capsys)
    part = sorted(partial.glob("part-*.jsonl"))[1]
    text = part.read_text()
    part.write_bytes({"truncated": text[: len(text) // 2].encode(),
                      "binary": os.urandom(200) + b"\n",
                      "no file key": b'{"detections": []}\n',
                      "foreign class": text.replace('[["', '[["99999').encode()}[damage])
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(out), "--resume")
    assert rc == 0, err
    assert part.name in err and "corrupt" in err
    files = [im["file"] for im in json.loads(out.read_text())["images"]]
    assert sorted(files) == ["img0.jpg", "img1.jpg", "img2.jpg"]


# -- item 4: walking folders ---------------------------------------------------------------------


def test_symlink_loop_visits_each_directory_once(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs", 2)
    folder(imgs / "sub", 1)
    (imgs / "sub" / "up").symlink_to("..")  # before: 40 levels deep, each file ~40 times
    out = tmp_path / "r.json"
    rc, _ = run(capsys, str(bundle), str(imgs), "--recursive", "-o", str(out))
    assert rc == 0
    files = sorted(im["file"] for im in json.loads(out.read_text())["images"])
    assert files == ["img0.jpg", "img1.jpg", "sub/img0.jpg"]


def test_self_referencing_link_keeps_its_folder(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs", 2)
    (imgs / "stray").symlink_to("stray")
    (imgs / "loop.jpg").symlink_to("loop.jpg")
    out = tmp_path / "r.json"
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(out))
    ims = {im["file"]: im for im in json.loads(out.read_text())["images"]}
    assert {"img0.jpg", "img1.jpg"} <= set(ims) and "failure" not in ims["img0.jpg"]
    assert ims["loop.jpg"]["failure"] and rc == 1  # reported, and the exit status says so
    assert "could not be read" in err


def _unlistable(d: Path) -> None:
    """A folder that cannot be listed: no permission, or (as root) a path over PATH_MAX."""
    locked = d / "locked"
    locked.mkdir()
    texture(locked / "hidden.jpg", 5)
    locked.chmod(0)
    try:
        os.listdir(locked)
    except PermissionError:
        return
    locked.chmod(0o755)
    fd = os.open(d, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 × 251 bytes > PATH_MAX (4096)
            os.mkdir("x" * 250, dir_fd=fd)
            new = os.open("x" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)


def test_unlistable_folder_is_a_failure_and_the_exit_status_says_so(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs", 1)
    _unlistable(imgs)
    out = tmp_path / "r.json"
    try:
        rc, err = run(capsys, str(bundle), str(imgs), "--recursive", "-o", str(out))
    finally:
        for p in (imgs / "locked",):
            if p.exists():
                p.chmod(0o755)
    assert rc == 1, err
    failures = [im for im in json.loads(out.read_text())["images"] if im.get("failure")]
    assert failures and all("cannot list folder" in f["failure"] for f in failures)
    assert "img0.jpg" in out.read_text()


# -- items 5 and 6: typed model.json and detection files, numeric flags -------------------------


@pytest.mark.parametrize("override, field", [
    ({"empty_classes": "lila"}, "empty_classes"),
    ({"input": "RGB"}, "input"),
    ({"input": {"channels": "three"}}, "input.channels"),
    ({"input": {"height": 224, "width": 224, "channels": 3, "value_range": [0, "x"]}},
     "input.value_range"),
    ({"thresholds": {"default": "high"}}, "thresholds.default"),
    ({"output": {"activation": 1}}, "output.activation"),
])
def test_model_json_wrong_types_give_one_line(tmp_path, capsys, override, field):
    b = make_bundle(tmp_path / "b", **override)
    img = texture(tmp_path / "a.jpg", 0)
    rc, err = run(capsys, str(b), str(img), "-o", str(tmp_path / "r.json"))
    line = one_error(err)
    assert rc == 2 and "model.json" in line and f" {field}:" in line


def _md(tmp_path: Path, det: dict) -> Path:
    (tmp_path / "imgs").mkdir()
    texture(tmp_path / "imgs" / "a.jpg", 0)
    md = {"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
          "images": [{"file": "a.jpg", "detections": [det]}]}
    p = tmp_path / "md.json"
    p.write_text(json.dumps(md))
    return p


@pytest.mark.parametrize("det, field", [
    ({"category": "1", "conf": 0.9}, "bbox"),
    ({"category": "1", "conf": "high", "bbox": [0, 0, 1, 1]}, "conf"),
    ({"category": "1", "conf": 0.9, "bbox": [0, 0, "1", 1]}, "bbox"),
    ({"category": 1, "conf": 0.9, "bbox": [0, 0, 1, 1]}, "category"),
])
def test_detection_file_wrong_types_give_one_line(bundle, tmp_path, capsys, det, field):
    md = _md(tmp_path, det)
    out = tmp_path / "r.json"
    rc, err = run(capsys, str(bundle), str(tmp_path / "imgs"), "--detections", str(md),
                  "-o", str(out))
    line = one_error(err)
    assert rc == 2 and str(md) in line and f"images[0].detections[0].{field}:" in line
    no_leftovers(out)


@pytest.mark.parametrize("flag, value", [("--sequence_gap", "nan"), ("--sequence_gap", "inf"),
                                         ("--sequence_gap", "-1"),
                                         ("--detection_threshold", "nan"),
                                         ("--decode_threads", "-2"),
                                         ("--threads", "100000")])
def test_nonsense_numbers_are_refused(bundle, tmp_path, capsys, flag, value):
    img = texture(tmp_path / "a.jpg", 0)
    rc = main(["predict", str(bundle), str(img), "-o", str(tmp_path / "r.json"), flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and flag in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


# -- item 6: names that are not UTF-8 ------------------------------------------------------------


def test_non_utf8_file_names_in_csv_and_resume(bundle, tmp_path, capsys):
    imgs = folder(tmp_path / "imgs", 1)
    raw = os.fsencode(imgs) + b"/caf\xe9.jpg"
    shutil.copy(imgs / "img0.jpg", raw)
    out = tmp_path / "r.csv"
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(out), "--keep_checkpoint")
    assert rc == 0, err
    text = out.read_bytes().decode("utf-8")  # valid UTF-8, the odd byte escaped
    assert "caf\\xe9.jpg" in text
    rc, err = run(capsys, str(bundle), str(imgs), "-o", str(out), "--resume")
    assert rc == 0, err
    js = tmp_path / "r.json"
    assert run(capsys, str(bundle), str(imgs), "-o", str(js))[0] == 0
    names = [im["file"] for im in json.loads(js.read_text())["images"]]
    assert os.fsencode(imgs / [n for n in names if n.startswith("caf")][0]) == raw


# -- item 8: the README's first command as root without sudo -------------------------------------


def test_readme_command_1_needs_no_sudo_binary(tmp_path):
    text = (ROOT / "README.md").read_text()
    cmd = next(ln.strip() for ln in text.splitlines() if "apt-get install" in ln)
    apt_part = cmd.split(" && pip ")[0]
    assert not re.match(r"^\s*sudo\s", apt_part)
    # run it with an apt-get that only reports what it was given, and no sudo on PATH
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "apt-get").write_text('#!/bin/sh\necho "apt-get $*" >> "$LOG"\n')
    (bindir / "apt-get").chmod(0o755)
    env = {"PATH": f"{bindir}:/bin:/usr/bin", "LOG": str(tmp_path / "log")}
    if shutil.which("sudo", path=env["PATH"]):
        pytest.skip("sudo is installed in /bin or /usr/bin here")
    proc = subprocess.run(["sh", "-c", apt_part], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "apt-get install -y dataset-fashion-mnist" in (tmp_path / "log").read_text()


def test_fifo_named_like_an_image_is_a_failure_not_a_hang(bundle, tmp_path):
    imgs = folder(tmp_path / "imgs", 1)
    os.mkfifo(imgs / "pipe.jpg")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "kerascls_edge", "predict", str(bundle),
                           str(imgs), "-o", str(out), "--threads", "1"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "export")})
    assert proc.returncode == 1, proc.stderr
    ims = {im["file"]: im for im in json.loads(out.read_text())["images"]}
    assert "not a regular file" in ims["pipe.jpg"]["failure"] and "failure" not in ims["img0.jpg"]


def test_deeply_nested_json_is_one_line(bundle, tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    img = texture(tmp_path / "a.jpg", 0)
    b = make_bundle(tmp_path / "b")
    (b / "model.json").write_text(deep)
    rc, err = run(capsys, str(b), str(img), "-o", str(tmp_path / "r.json"))
    assert rc == 2 and "model.json" in one_error(err)
    (tmp_path / "imgs").mkdir()
    md = tmp_path / "md.json"
    md.write_text(deep)
    rc, err = run(capsys, str(bundle), str(tmp_path / "imgs"), "--detections", str(md),
                  "-o", str(tmp_path / "r2.json"))
    assert rc == 2 and "md.json" in one_error(err)


def test_bundle_whose_model_is_a_fifo_is_refused_not_a_hang(tmp_path):
    b = make_bundle(tmp_path / "b")
    (b / "model.tflite").unlink()
    os.mkfifo(b / "model.tflite")
    img = texture(tmp_path / "a.jpg", 0)
    proc = subprocess.run([sys.executable, "-m", "kerascls_edge", "predict", str(b), str(img),
                           "-o", str(tmp_path / "r.json")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT / "export")})
    assert proc.returncode == 2 and "no model.tflite" in proc.stderr

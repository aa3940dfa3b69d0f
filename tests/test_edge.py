"""kerascls_edge on bundles and images the tests make themselves (no ../shared/data needed).

TensorFlow is used only to make small .tflite bundles, in a subprocess; the runtime under test
never imports it (one test proves that with TensorFlow blocked).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "export"
sys.path.insert(0, str(EXPORT))

from kerascls_edge import Classifier, EdgeError  # noqa: E402
from kerascls_edge.cli import main  # noqa: E402
from kerascls_edge.decode import Preprocess, decode, to_channels  # noqa: E402
from kerascls_edge.sequences import split_sequences  # noqa: E402
from tests.bundle_scripts import MAKE_BUNDLES  # noqa: E402

LABELS = ["empty", "red", "blue"]
GREY_LABELS = ["empty", "bright"]
COLOURS = {"red": (230, 20, 30), "blue": (10, 40, 220), "grey": (128, 128, 128)}



@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    """Four tiny bundles (uint8/int8 int8-quantized, float with logits, greyscale)."""
    pytest.importorskip("tensorflow", reason="TensorFlow is needed (in a subprocess) to make "
                                             "the test bundles")
    out = tmp_path_factory.mktemp("bundles")
    proc = subprocess.run([sys.executable, "-c", MAKE_BUNDLES, str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def solid(path: Path, colour, size=(80, 60), fmt=None, mode="RGB") -> Path:
    Image.new(mode, size, colour).save(path, fmt)
    return path


# -- decoding (no model) -------------------------------------------------------------------


def test_resize_modes_stretch_crop_pad() -> None:
    img = Image.new("RGB", (96, 32), (0, 200, 0))
    img.paste((200, 0, 0), (0, 0, 32, 32))
    img.paste((0, 0, 200), (64, 0, 96, 32))
    crop = decode(img, Preprocess(16, 16, 3, "crop")).arrays[0]
    assert (crop[..., 1] > 150).all(), "centre crop keeps only the green middle"
    pad = decode(img, Preprocess(30, 30, 3, "pad")).arrays[0]
    assert pad.shape == (30, 30, 3) and pad[:8].max() == 0 and pad[-8:].max() == 0
    rows = np.flatnonzero(pad.max(axis=(1, 2)) > 0)  # inner 30×10 (0.3125 × 96×32) at y=10
    assert (rows[0], rows[-1]) == (10, 19)
    assert pad[15, 15, 1] > 150
    stretch = decode(img, Preprocess(16, 48, 3, "stretch")).arrays[0]
    assert stretch[8, 2, 0] > 150 and stretch[8, 24, 1] > 150 and stretch[8, 45, 2] > 150


def test_modes_convert_to_rgb_or_grey(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert to_channels(rgba, 3).getpixel((0, 0)) == (10, 20, 30)  # alpha dropped, as tf does
    pal = Image.new("P", (8, 8), 3)
    pal.putpalette([0, 0, 0] * 3 + [250, 5, 5] + [0, 0, 0] * 252)
    assert to_channels(pal, 3).getpixel((0, 0)) == (250, 5, 5)
    i16 = Image.fromarray(np.full((8, 8), 32896, np.uint16))
    assert to_channels(i16, 3).getpixel((0, 0)) == (128, 128, 128)  # scaled, not clipped
    assert to_channels(Image.new("RGB", (4, 4), (255, 255, 255)), 1).mode == "L"
    cmyk = tmp_path / "c.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(cmyk)
    r, g, b = decode(cmyk, Preprocess(8, 8)).arrays[0][4, 4]
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_and_time_from_jpeg(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 60, 20))  # white top half
    exif = Image.Exif()
    exif[274] = 3  # rotated 180: stored upside down
    exif.get_ifd(0x8769)[36867] = "2024:05:06 07:08:09"
    p = tmp_path / "r.jpg"
    img.rotate(180).save(p, exif=exif.tobytes(), quality=95)
    out = decode(p, Preprocess(20, 30))
    arr = out.arrays[0]
    assert arr[:8].mean() > 200 and arr[-8:].mean() < 50
    assert out.datetime == "2024-05-06 07:08:09"


def test_draft_decodes_large_jpeg_at_reduced_scale(tmp_path: Path) -> None:
    from kerascls_edge import decode as dec
    p = solid(tmp_path / "big.jpg", (200, 10, 10), size=(3200, 2400))
    img, _ = dec.load_upright(p, Preprocess(224, 224))
    assert img.size == (400, 300)  # 1/8: the smallest libjpeg scale still >= 224
    img, _ = dec.load_upright(p, Preprocess(224, 224, 3, "pad"))
    assert img.size == (400, 300)
    img, _ = dec.load_upright(p, Preprocess(224, 224), regions=[(0.4, 0.4, 0.1, 0.1)])
    assert img.size[0] >= 224 / 0.1  # a small crop needs the full resolution


def test_sequences_split_by_gap() -> None:
    recs = [{"file": f"a/{i}.jpg", "_t": t} for i, t in enumerate([0, 2, 4, 100, 101, 500])]
    recs.append({"file": "a/x.jpg", "_t": None})
    groups = split_sequences(recs, gap=10)
    assert groups == [[0, 1, 2], [3, 4], [5], [6]]


# -- bundles -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["u8", "i8", "f32logits"])
def test_bundle_variants_match_keras(bundles: Path, name: str) -> None:
    clf = Classifier(bundles / name, threads=1)
    assert clf.labels == LABELS and clf.spec.dtype == {"u8": "uint8", "i8": "int8",
                                                       "f32logits": "float32"}[name]
    probe = np.stack([np.full((32, 32, 3), c, np.uint8) for c in COLOURS.values()])
    probs = clf.predict_array(probe)
    ref = np.load(bundles / "probe_probs.npy")
    np.testing.assert_allclose(probs, ref, atol=0.04)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    assert [LABELS[i] for i in probs.argmax(1)] == ["red", "blue", "empty"]


def test_classify_and_greyscale_bundle(bundles: Path, tmp_path: Path) -> None:
    clf = Classifier(bundles / "u8", threads=1)
    assert clf.classify(solid(tmp_path / "r.png", COLOURS["red"]), top_k=2)[0][0] == "red"
    assert clf.classify(Image.new("RGB", (50, 50), COLOURS["blue"]))[0][0] == "blue"
    grey = Classifier(bundles / "grey", threads=1)
    assert grey.spec.channels == 1 and grey.labels == GREY_LABELS
    assert grey.classify(solid(tmp_path / "w.jpg", (240, 240, 240)))[0][0] == "bright"
    assert grey.classify(solid(tmp_path / "d.png", (10, 10, 10)))[0][0] == "empty"


def test_bad_inputs_give_one_line_errors(bundles: Path, tmp_path: Path, capsys) -> None:
    img = solid(tmp_path / "a.png", COLOURS["red"])
    assert main(["predict", str(tmp_path / "nope"), str(img), "-o", str(tmp_path / "o.json")]) == 2
    assert main(["predict", str(bundles / "u8"), str(tmp_path / "missing"), "-o",
                 str(tmp_path / "o.json")]) == 2
    bad = tmp_path / "badbundle"
    bad.mkdir()
    (bad / "model.tflite").write_bytes(b"not a model")
    assert main(["predict", str(bad), str(img), "-o", str(tmp_path / "o.json")]) == 2
    assert main(["predict", str(bundles / "u8"), str(img), "-o", str(tmp_path / "o.json"),
                 "--labels", str(tmp_path / "none.txt")]) == 2
    assert main(["predict", str(bundles / "u8")]) == 2  # argparse usage error
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sum(line.startswith("kerascls-edge: error:") for line in err.splitlines()) == 4
    with pytest.raises(EdgeError):
        Classifier(bundles / "u8", labels=["only", "two"])


def _awkward_images(d: Path) -> dict[str, bool]:
    """Files a camera-trap card can hold; value: should the image be readable."""
    d.mkdir(parents=True, exist_ok=True)
    solid(d / "ok.jpg", COLOURS["red"])
    solid(d / "blank.png", COLOURS["grey"])
    Image.new("RGBA", (40, 30), (*COLOURS["blue"], 128)).save(d / "alpha.png")
    Image.new("P", (40, 30), 0).save(d / "palette.gif")
    Image.fromarray(np.full((30, 40), 50000, np.uint16)).save(d / "grey16.png")
    Image.new("LA", (40, 30), (200, 255)).save(d / "la.png")
    Image.new("1", (40, 30), 1).save(d / "bilevel.bmp")
    Image.new("RGB", (40, 30), COLOURS["blue"]).save(d / "x.webp")
    Image.new("RGB", (40, 30), COLOURS["blue"]).save(d / "x.tiff")
    (d / "zero.jpg").write_bytes(b"")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(500))
    (d / "text.png").write_text("this is not an image\n")
    noise = np.random.default_rng(1).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(d / "full.jpg")
    raw = (d / "full.jpg").read_bytes()
    (d / "cut.jpg").write_bytes(raw[: len(raw) * 7 // 10])  # cut inside the scan data
    (d / "head.jpg").write_bytes(raw[:300])  # cut inside the headers: unreadable
    (d / "notes.txt").write_text("ignored: not an image extension")
    return {"ok.jpg": True, "blank.png": True, "alpha.png": True, "palette.gif": True,
            "grey16.png": True, "la.png": True, "bilevel.bmp": True, "x.webp": True,
            "x.tiff": True, "zero.jpg": False, "corrupt.jpg": False, "text.png": False,
            "cut.jpg": True, "full.jpg": True, "head.jpg": False}


def test_predict_awkward_files_to_megadetector_and_csv(bundles: Path, tmp_path: Path) -> None:
    expect = _awkward_images(tmp_path / "imgs")
    out = tmp_path / "res.json"
    assert main(["predict", str(bundles / "u8"), str(tmp_path / "imgs"), "-o", str(out),
                 "--threads", "1", "--top_k", "2", "--checkpoint_every", "3"]) == 0
    d = json.loads(out.read_text())
    assert not (tmp_path / "res.json.partial").exists()
    by_file = {im["file"]: im for im in d["images"]}
    assert set(by_file) == set(expect)
    for name, readable in expect.items():
        assert ("failure" in by_file[name]) == (not readable), name
    assert by_file["ok.jpg"]["detections"][0]["classifications"][0][0] == "1"  # red
    assert by_file["blank.png"]["detections"] == []  # top class "empty": no detection
    assert by_file["alpha.png"]["detections"][0]["classifications"][0][0] == "2"  # blue
    assert by_file["zero.jpg"]["detections"] is None
    assert by_file["cut.jpg"]["warnings"] and "warnings" not in by_file["full.jpg"]
    assert d["classification_categories"] == {"0": "empty", "1": "red", "2": "blue"}
    assert d["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert d["info"]["format_version"] == "1.6" and d["info"]["classifier"] == "tiny_u8"
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    res = v.validate_batch_results(str(out))["validation_results"]
    assert res["errors"] == [] and res["warnings"] == []
    csv_out = tmp_path / "res.csv"
    assert main(["predict", str(bundles / "u8"), str(tmp_path / "imgs"), "-o", str(csv_out),
                 "--threads", "1"]) == 0
    rows = {r.split(",")[0]: r for r in csv_out.read_text().splitlines()[1:]}
    assert set(rows) == set(expect) and rows["ok.jpg"].split(",")[1] == "red"


def test_bursts_are_smoothed_beside_per_image_results(bundles: Path, tmp_path: Path) -> None:
    d = tmp_path / "cam1"
    d.mkdir()
    for i, (colour, secs) in enumerate([("red", 0), ("red", 2), ("grey", 4), ("blue", 300)]):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = f"2024:01:01 10:{secs // 60:02d}:{secs % 60:02d}"
        Image.new("RGB", (40, 30), COLOURS[colour]).save(d / f"{i}.jpg", exif=exif.tobytes())
    out = tmp_path / "s.json"
    assert main(["predict", str(bundles / "u8"), str(d), "-o", str(out), "--smooth", "mean",
                 "--sequence_gap", "10", "--threads", "1"]) == 0
    ims = {im["file"]: im for im in json.loads(out.read_text())["images"]}
    assert ims["0.jpg"]["sequence"]["id"] == ims["2.jpg"]["sequence"]["id"]
    assert ims["0.jpg"]["sequence"]["frames"] == 3 and ims["3.jpg"]["sequence"]["frames"] == 1
    assert ims["2.jpg"]["detections"] == []  # its own result stays "empty"
    assert ims["2.jpg"]["sequence"]["classifications"][0][0] == "1"  # the burst says red


def test_edge_runs_with_tensorflow_blocked(bundles: Path, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    solid(tmp_path / "imgs" / "a.jpg", COLOURS["red"])
    out = tmp_path / "o.json"
    code = textwrap.dedent(f'''
        import importlib.abc, sys
        BLOCKED = ("tensorflow", "keras", "tf_keras", "kerascls", "jax", "torch")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked for this test: " + name)
        sys.meta_path.insert(0, Block())
        sys.modules["tensorflow"] = None
        sys.path.insert(0, {str(EXPORT)!r})
        from kerascls_edge.cli import main
        from kerascls_edge import Classifier
        rc = main(["predict", {str(bundles / "u8")!r}, {str(tmp_path / "imgs")!r},
                   "-o", {str(out)!r}, "--threads", "1"])
        assert rc == 0, rc
        clf = Classifier({str(bundles / "u8")!r})
        assert clf.classify({str(tmp_path / "imgs" / "a.jpg")!r})[0][0] == "red"
        loaded = [m for m, mod in sys.modules.items()
                  if m.split(".")[0] in BLOCKED and mod is not None]
        assert not loaded, loaded
        print("TF-FREE-OK")
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "TF-FREE-OK" in proc.stdout, proc.stderr[-2000:]
    assert json.loads(out.read_text())["images"][0]["file"] == "a.jpg"


def test_kill_9_then_resume_gives_exactly_one_result_per_image(bundles: Path,
                                                               tmp_path: Path) -> None:
    imgs = tmp_path / "many"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    src = imgs / "000.png"  # a PNG large enough to take a few ms to decode (no JPEG draft)
    Image.fromarray(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)).save(src, compress_level=1)
    n = 300
    for i in range(1, n):  # copies: hard links are one real file, listed once
        shutil.copyfile(src, imgs / f"{i:03d}.png")
    out = tmp_path / "r.json"
    partial = tmp_path / "r.json.partial"
    cmd = [sys.executable, "-m", "kerascls_edge", "predict", str(bundles / "u8"), str(imgs),
           "-o", str(out), "--checkpoint_every", "5", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(EXPORT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(partial.glob("part-*.jsonl"))) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    # Without --resume the checkpoint is not thrown away silently.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["resumed"] >= 15 and summary["processed"] == n - summary["resumed"]
    files = [im["file"] for im in json.loads(out.read_text())["images"]]
    assert len(files) == n and sorted(files) == sorted(f"{i:03d}.png" for i in range(n))
    assert not partial.exists()


def test_detections_flow_on_self_made_megadetector_file(bundles: Path, tmp_path: Path) -> None:
    img = Image.new("RGB", (200, 100), COLOURS["grey"])
    img.paste(COLOURS["red"], (0, 0, 50, 50))  # a "red animal" top-left, a "blue" one right
    img.paste(COLOURS["blue"], (150, 50, 200, 100))
    img.save(tmp_path / "a.jpg", quality=95)
    det = lambda cat, conf, box: {"category": cat, "conf": conf, "bbox": box}  # noqa: E731
    md = {"info": {"format_version": "1.4", "detector": "md_v5a.0.0"},
          "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
          "classification_categories": {"0": "old"},
          "images": [
              {"file": "a.jpg", "detections": [det("1", 0.9, [0.02, 0.04, 0.2, 0.4]),
                                               det("1", 0.8, [0.77, 0.54, 0.2, 0.4]),
                                               det("1", 0.05, [0.4, 0.4, 0.1, 0.1]),
                                               det("2", 0.9, [0.3, 0.1, 0.2, 0.5])]},
              {"file": "missing.jpg", "detections": [det("1", 0.9, [0, 0, 1, 1])]},
              {"file": "bad.jpg", "failure": "Failure image access", "detections": None}]}
    (tmp_path / "md.json").write_text(json.dumps(md))
    out = tmp_path / "out.json"
    assert main(["predict", str(bundles / "u8"), str(tmp_path), "--detections",
                 str(tmp_path / "md.json"), "-o", str(out), "--threads", "1"]) == 0
    d = json.loads(out.read_text())
    a, missing, bad = d["images"]
    assert [x.get("classifications", [[None]])[0][0] for x in a["detections"]] == \
        ["1", "2", None, None]  # red, blue; below threshold and person left alone
    assert missing["detections"][0]["bbox"] == [0, 0, 1, 1] and "not classified" in \
        missing["warnings"][0]
    assert bad == md["images"][2]
    assert d["classification_categories"] == {"0": "empty", "1": "red", "2": "blue"}
    assert d["info"]["format_version"] == "1.6" and d["info"]["detector"] == "md_v5a.0.0"
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    assert v.validate_batch_results(str(out))["validation_results"]["errors"] == []


def test_pip_installs_export_alone(tmp_path: Path) -> None:
    """`pip install ./export`: a distribution with only numpy/Pillow/LiteRT/Jinja2/PyAV deps."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-build-isolation", "--target", str(tmp_path / "site"),
                           str(EXPORT)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "setuptools" in proc.stderr:
        pytest.skip("setuptools unavailable for an offline build")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = next((tmp_path / "site").glob("kerascls_edge-*.dist-info")) / "METADATA"
    deps = sorted(Requirement(line.split(":", 1)[1]).name.lower()
                  for line in meta.read_text().splitlines() if line.startswith("Requires-Dist"))
    assert deps == ["ai-edge-litert", "av", "jinja2", "numpy", "pillow"]
    assert (tmp_path / "site" / "bin" / "kerascls-edge").exists()
    for leftover in ("build", "kerascls_edge.egg-info"):  # in-tree build droppings
        shutil.rmtree(EXPORT / leftover, ignore_errors=True)


def test_keep_checkpoint_then_resume_classifies_only_new_files(bundles: Path, tmp_path: Path,
                                                                capsys) -> None:
    d = tmp_path / "card"
    d.mkdir()
    for i in range(3):
        solid(d / f"{i}.jpg", COLOURS["red"])
    out = tmp_path / "r.csv"
    cmd = ["predict", str(bundles / "u8"), str(d), "-o", str(out), "--threads", "1",
           "--keep_checkpoint"]
    assert main(cmd) == 0
    for i in range(3, 5):
        solid(d / f"{i}.jpg", COLOURS["blue"])
    capsys.readouterr()
    assert main(cmd + ["--resume"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["processed"] == 2 and summary["resumed"] == 3
    rows = [r.split(",") for r in out.read_text().splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("0.jpg", "red"), ("1.jpg", "red"), ("2.jpg", "red"),
                                            ("3.jpg", "blue"), ("4.jpg", "blue")]


def test_trailing_bytes_after_jpeg_end_are_not_truncation(tmp_path):
    """Some cameras append data after the end marker; only a missing marker is a cut file."""
    from kerascls_edge.decode import _jpeg_end_missing
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)).save(
        buf, "JPEG", quality=95)
    data = buf.getvalue()
    (tmp_path / "trailing.jpg").write_bytes(data + bytes(20_000))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.jpg").write_bytes(data)
    assert not _jpeg_end_missing(tmp_path / "trailing.jpg")
    assert not _jpeg_end_missing(tmp_path / "whole.jpg")
    assert _jpeg_end_missing(tmp_path / "cut.jpg")


def test_default_decode_threads_reach_every_core():
    """Decoding costs more than a small model, so by default it gets every core."""
    from kerascls_edge.runner import default_decode_threads
    cores = os.cpu_count() or 1
    assert default_decode_threads(2) == max(3, cores)
    assert default_decode_threads(cores) == cores + 1


def test_decode_workers_classify_on_their_own_interpreters(tmp_path, monkeypatch):
    """With one-thread interpreters (predict's default) each decode worker runs its own
    interpreter on what it decoded: the same records, in the same order, as decoding and
    classifying inline, a corrupt file still its own failure entry, and no more
    interpreters than workers."""
    from tests.shared_paths import ENA24, coral_tflite
    frames = sorted(ENA24.glob("*.jpg"))[:6] if ENA24.is_dir() else []
    if not frames:
        pytest.skip(f"needs real camera-trap frames in {ENA24}")
    cards = tmp_path / "card"
    cards.mkdir()
    for i, f in enumerate(frames * 2):
        shutil.copy(f, cards / f"IMG_{i:04d}.JPG")
    (cards / "IMG_9999.JPG").write_bytes(frames[0].read_bytes()[:300])  # cut in the header
    model = coral_tflite(tmp_path)
    made = []
    replica = Classifier.replica
    monkeypatch.setattr(Classifier, "replica", lambda self: made.append(1) or replica(self))
    out = {}
    for name, workers in (("inline", "0"), ("workers", "3")):
        rc = main(["predict", str(model), str(cards), "-o", str(tmp_path / f"{name}.json"),
                   "--decode_threads", workers, "--progress_every", "-1"])
        assert rc == 0
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())["images"]
    assert len(made) == 2  # the workers' first thread takes the main interpreter
    assert [r["file"] for r in out["workers"]] == [r["file"] for r in out["inline"]]
    assert out["workers"] == out["inline"]
    assert sum("failure" in r for r in out["workers"]) == 1
    from kerascls_edge.runner import invoke_in_workers
    two = Classifier(str(model), threads=2)
    assert not invoke_in_workers(two, 3) and not invoke_in_workers(Classifier(str(model),
                                                                              threads=1), 1)

"""What a field station hands the tools (issue 25, cases 10, 11, 13, 14, 15): links, FIFOs,
devices and image bombs.

- 10: each real file is listed once, however many links lead to it (a linked file beside its
  target, a `--sort_into` tree of links next to the card, hard links, an argument twice).
- 11: training refuses (or, with --allow_duplicate_files, warns about) one image under two
  classes or in two splits: a class folder linked to another, copies across split folders.
- 13: a FIFO named like an image, or /dev/zero / a FIFO given as --labels, --allow,
  --detections or a results file, is a failure entry or one error line: never a hang or an
  endless read.
- 14/15: a progressive JPEG whose coefficients alone take hundreds of MB, an ICO named .JPG
  holding a huge PNG, and a WebP under the pixel cap that decodes through ~16 B/px are
  refused from their headers: `kerascls-edge predict` stays under 300 MB (peak RSS of the
  child process).

The model is Google's Coral MobileNet v2 from ../shared/data (nobody here made it); images
are rendered here. Runs that could hang or read without end on a broken build run in a
child process with a timeout and an address-space limit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge import decode as dec  # noqa: E402
from kerascls_edge.cli import main  # noqa: E402
from tests.memory import run_measured  # noqa: E402
from tests.shared_paths import CORAL_MODEL, coral_labels  # noqa: E402

needs_coral = pytest.mark.skipif(not CORAL_MODEL.is_file(),
                                 reason="the Coral model is in ../shared/data (absent here)")
ERR = re.compile(r"^kerascls-edge: error: \S.*$")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "export")}
NOT_REGULAR = "not a regular file"
MB300 = 300


# -- helpers -------------------------------------------------------------------------------


def texture(path: Path, seed: int, size=(64, 48), **save) -> Path:
    """A photo-like image: smooth random blobs plus fine grain, saved by suffix."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(img, np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, **save)
    return path


def smooth(w: int, h: int, seed: int = 0) -> Image.Image:
    """Large smooth blobs (no grain): a big frame that compresses to little, fast."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return low.resize((w, h), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    if not CORAL_MODEL.is_file():
        pytest.skip("the Coral model is in ../shared/data (absent here)")
    d = tmp_path_factory.mktemp("field") / "bundle"
    d.mkdir()
    shutil.copy(CORAL_MODEL, d / "model.tflite")
    coral_labels(d / "labels.txt")
    (d / "model.json").write_text(json.dumps({
        "format": "kerascls-bundle", "format_version": 1, "architecture": "coral_mnv2",
        "task": "multiclass",
        "input": {"height": 224, "width": 224, "channels": 3, "dtype": "uint8",
                  "value_range": [0, 255], "resize": "stretch", "interpolation": "bilinear"},
        "output": {"activation": "softmax"}, "thresholds": {"default": 0.5},
        "empty_classes": ["background"]}))
    return d


def predict(capsys, *args: str) -> tuple[int, str]:
    """`kerascls-edge predict` in-process; (exit status, stderr), no traceback allowed."""
    rc = main(["predict", *args, "--threads", "1", "--decode_threads", "0",
               "--progress_every", "-1"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _limit_memory() -> None:
    """In the child: a broken build reading /dev/zero dies at 3 GB instead of filling RAM."""
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def edge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`kerascls-edge ARGS` in a child process (a hang fails the test, it cannot block it)."""
    return subprocess.run([sys.executable, "-m", "kerascls_edge", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, preexec_fn=_limit_memory)


def one_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and ERR.match(lines[0]), stderr
    assert "Traceback" not in stderr
    return lines[0]


def peak_rss_mb(*args: str, timeout: float = 300) -> tuple[int, int, str]:
    """(exit status, peak RSS in MB, stderr) of `kerascls-edge ARGS` in a fresh process
    (tests/memory.py: pytest's own pages, ~1 GB with TensorFlow, don't count)."""
    proc, peak = run_measured([sys.executable, "-m", "kerascls_edge", *args], timeout=timeout,
                              env=ENV)
    return proc.returncode, int(peak), proc.stderr[-4000:]


def results(path: Path) -> dict[str, dict]:
    return {im["file"]: im for im in json.loads(path.read_text())["images"]}


# -- case 10: each real file once ----------------------------------------------------------


@needs_coral
def test_each_real_file_is_listed_once_however_many_links_lead_to_it(bundle, tmp_path,
                                                                      capsys):
    card = tmp_path / "card"
    (card / "DCIM").mkdir(parents=True)
    for i in (1, 2, 3):
        texture(card / "DCIM" / f"IMG_000{i}.JPG", i)
    (card / "IMG_0001_link.JPG").symlink_to("DCIM/IMG_0001.JPG")  # a link beside the tree
    (card / "sorted" / "deer").mkdir(parents=True)  # what --sort_into (link mode) makes
    (card / "sorted" / "deer" / "IMG_0002.JPG").symlink_to(card / "DCIM" / "IMG_0002.JPG")
    (card / "backup").mkdir()
    os.link(card / "DCIM" / "IMG_0003.JPG", card / "backup" / "IMG_0003.JPG")  # hard link
    texture(tmp_path / "elsewhere.jpg", 9)
    (card / "outside.jpg").symlink_to(tmp_path / "elsewhere.jpg")  # the only way to it
    out = tmp_path / "r.json"
    rc, _ = predict(capsys, str(bundle), str(card), "--recursive", "-o", str(out))
    assert rc == 0
    # the first path in listing order wins: a folder's files (name order), then its
    # subfolders (name order, upper case first)
    assert sorted(results(out)) == ["DCIM/IMG_0002.JPG", "DCIM/IMG_0003.JPG",
                                    "IMG_0001_link.JPG", "outside.jpg"]

    out2 = tmp_path / "r2.json"
    d = card / "DCIM"
    rc, _ = predict(capsys, str(bundle), str(d / "IMG_0002.JPG"), str(d / "IMG_0002.JPG"),
                    str(card / "sorted" / "deer" / "IMG_0002.JPG"), str(d / "IMG_0001.JPG"),
                    "-o", str(out2))
    assert rc == 0
    assert sorted(results(out2)) == ["DCIM/IMG_0001.JPG", "DCIM/IMG_0002.JPG"]

    out3 = tmp_path / "r3.json"  # a folder and a file in it: listed by the folder only
    rc, _ = predict(capsys, str(bundle), str(d), str(d / "IMG_0001.JPG"), "-o", str(out3))
    assert rc == 0 and sorted(results(out3)) == [f"IMG_000{i}.JPG" for i in (1, 2, 3)]


@needs_coral
def test_a_link_listed_before_its_target_in_one_folder_stands_for_it(bundle, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    texture(imgs / "zebra.jpg", 1)
    (imgs / "a_link.jpg").symlink_to("zebra.jpg")
    texture(imgs / "m.jpg", 2)
    out = tmp_path / "r.json"
    rc, _ = predict(capsys, str(bundle), str(imgs), "-o", str(out))
    assert rc == 0 and sorted(results(out)) == ["a_link.jpg", "m.jpg"]


# -- case 11: one image under two classes or in two splits ------------------------------------


def _classes(root: Path, names: dict[str, int], suffix: str = ".jpg", seed: int = 0) -> None:
    for k, (c, n) in enumerate(names.items()):
        (root / c).mkdir(parents=True)
        for i in range(n):
            texture(root / c / f"{c}{i}{suffix}", seed + 100 * k + i, size=(40, 30))


def _prepare(spec: str, run: Path, allow: bool = False):
    from kerascls.config import TrainConfig
    from kerascls.data.runs import prepare_splits
    from kerascls.data.sources import load_source

    cfg = TrainConfig(data=spec, allow_duplicate_files=allow, val_fraction=0.2,
                      test_fraction=0.2)
    run.mkdir()
    return prepare_splits(load_source(spec), cfg, run)


def test_a_class_folder_linked_to_another_is_refused_naming_both_paths(tmp_path):
    from kerascls.errors import UserError

    data = tmp_path / "data"
    _classes(data, {"cat": 5, "dog": 5})
    (data / "lynx").symlink_to("cat")
    with pytest.raises(UserError) as err:
        _prepare(f"folder:{data}", tmp_path / "run")
    msg = str(err.value)
    assert "\n" not in msg and "--allow_duplicate_files" in msg
    paths = re.findall(r"(\S+\.jpg) \(", msg)
    assert len(paths) == 2 and {Path(p).parent.name for p in paths} == {"cat", "lynx"}
    assert os.path.samefile(*paths)
    assert not (tmp_path / "run" / "splits").exists()  # refused before the lists


def test_allow_duplicate_files_trains_with_a_warning(tmp_path, caplog):
    data = tmp_path / "data"
    _classes(data, {"cat": 5, "dog": 5})
    (data / "lynx").symlink_to("cat")
    with caplog.at_level(logging.WARNING, logger="kerascls.data"):
        splits = _prepare(f"folder:{data}", tmp_path / "run", allow=True)
    warned = [r.getMessage() for r in caplog.records if "--allow_duplicate_files" in
              r.getMessage()]
    assert len(warned) == 1 and "(and 4 more)" in warned[0]  # 5 cat images, each twice
    assert sum(len(v) for v in splits.values()) == 15
    assert (tmp_path / "run" / "splits" / "train.csv").is_file()


def test_copies_across_split_folders_are_found_by_content(tmp_path):
    """BMPs of one size: different pictures share a size (read and compared, not flagged);
    a byte-identical copy in test/ is one image in two splits."""
    from kerascls.data.duplicates import find_duplicates
    from kerascls.errors import UserError

    data = tmp_path / "data"
    _classes(data / "train", {"cat": 4, "dog": 4}, ".bmp")
    _classes(data / "test", {"cat": 2, "dog": 2}, ".bmp", seed=50)
    sizes = {p.stat().st_size for p in data.rglob("*.bmp")}
    assert len(sizes) == 1  # every file shares its size: the content decides
    assert _prepare(f"folder:{data}", tmp_path / "ok")  # no duplicate among them
    shutil.copy(data / "train" / "dog" / "dog2.bmp", data / "test" / "dog" / "dog_copy.bmp")
    with pytest.raises(UserError, match=r"identical files \(copies\): in two splits"):
        _prepare(f"folder:{data}", tmp_path / "run")

    from kerascls.data.records import Record
    frame = str(data / "train" / "cat" / "cat0.bmp")  # two animals in one frame: two boxes
    two_boxes = [Record(frame, ("cat",), bbox=(1, 1, 9, 9)),
                 Record(frame, ("dog",), bbox=(20, 5, 9, 9))]
    assert find_duplicates({"train": two_boxes, "val": [], "test": []}) == []
    one_box = two_boxes[:1] + [Record(frame, ("dog",), bbox=(1, 1, 9, 9))]
    (dup,) = find_duplicates({"train": one_box, "val": [], "test": []})
    assert dup.why == "one image under two classes" and dup.how == "one file"


@pytest.mark.slow
def test_train_cli_refuses_a_linked_class_folder_in_one_line(tmp_path, cli):
    data = tmp_path / "data"
    _classes(data, {"cat": 5, "dog": 5})
    (data / "lynx").symlink_to("cat")
    run = tmp_path / "run"
    out = cli("train", "--data", f"folder:{data}", "--arch", "small_cnn", "--epochs", "1",
              "--image_size", "32", "--output_dir", str(run), check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("kerascls: error: ") and "--allow_duplicate_files" in last
    assert not run.exists()


# -- case 13: FIFOs and devices never hang a reader ----------------------------------------


@needs_coral
@pytest.mark.parametrize("flag", ["--labels", "--allow", "--detections"])
def test_device_or_fifo_as_a_text_input_is_one_error_line(bundle, tmp_path, flag):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    texture(imgs / "a.jpg", 0)
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    for source in ("/dev/zero", str(fifo)):
        proc = edge("predict", str(bundle), str(imgs), flag, source,
                    "-o", str(tmp_path / "r.json"), "--threads", "1")
        assert proc.returncode == 2, proc.stderr[-2000:]
        line = one_error(proc.stderr)
        assert source in line and NOT_REGULAR in line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("command", ["report", "convert"])
def test_device_or_fifo_as_the_results_file_is_one_error_line(tmp_path, command):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    extra = ["--to", "csv"] if command == "convert" else []
    out = tmp_path / ("page.html" if command == "report" else "out.csv")
    for source in ("/dev/zero", str(fifo)):
        proc = edge(command, source, *extra, "-o", str(out))
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert NOT_REGULAR in one_error(proc.stderr)


def _md_with_boxes(path: Path, files: list[str]) -> Path:
    box = [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.6, 0.7]},
           {"category": "1", "conf": 0.8, "bbox": [0.0, 0.0, 0.05, 0.06]}]
    path.write_text(json.dumps({
        "info": {"format_version": "1.4", "detector": "MDv5a"},
        "detection_categories": {"1": "animal"},
        "images": [{"file": f, "detections": box} for f in files]}))
    return path


@needs_coral
def test_fifo_named_like_an_image_never_hangs_any_command(bundle, tmp_path):
    """Listing records the FIFO; every later reader (capture times, crops of 2+ boxes,
    thumbnails, the Camtrap DP conversion) skips it instead of blocking on it."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    texture(imgs / "a.jpg", 1, size=(320, 240))
    texture(imgs / "b.jpg", 2, size=(320, 240))
    os.mkfifo(imgs / "pipe.jpg")

    pkg = tmp_path / "pkg"
    proc = edge("predict", str(bundle), str(imgs), "--format", "camtrapdp", "-o", str(pkg),
                "--threads", "1")
    assert proc.returncode == 1, proc.stderr[-2000:]  # one unreadable entry: exit 1
    assert NOT_REGULAR in results(pkg / "megadetector.json")["pipe.jpg"]["failure"]
    assert (pkg / "media.csv").is_file()

    md = _md_with_boxes(tmp_path / "md.json", ["a.jpg", "pipe.jpg", "b.jpg"])
    out = tmp_path / "crops.json"
    proc = edge("predict", str(bundle), str(imgs), "--detections", str(md), "-o", str(out),
                "--threads", "1")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    got = results(out)
    assert NOT_REGULAR in got["pipe.jpg"]["warnings"][0]
    assert all("classifications" in d for d in got["a.jpg"]["detections"])

    proc = edge("report", str(out), "-o", str(tmp_path / "page.html"), "--image_dir",
                str(imgs))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = edge("convert", str(out), "--to", "camtrapdp", "-o", str(tmp_path / "pkg2"),
                "--image_dir", str(imgs))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "pkg2" / "observations.csv").is_file()


# -- cases 14/15: memory bombs are refused from their headers ----------------------------------


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def zero_png(w: int, h: int) -> bytes:
    """An RGBA w×h PNG of zeros, written row by row (never holding the pixels)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 4 * w)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


def ico_holding(path: Path, png: bytes) -> Path:
    """An ICO whose one entry is a PNG (Pillow decodes it inside Image.open)."""
    head = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32,
                                                      len(png), 22)
    path.write_bytes(head + png)
    return path


def bombs(d: Path, scale: int = 1) -> dict[str, Path]:
    """Small files whose decode would take hundreds of MB (scale 2: the issue's 13000²)."""
    d.mkdir(exist_ok=True)
    n = 6500 * scale
    smooth(n, n).save(d / "progressive.jpg", progressive=True, subsampling=0, quality=75)
    return {"progressive.jpg": d / "progressive.jpg",
            "icon.JPG": ico_holding(d / "icon.JPG", zero_png(n, n)),
            "under_cap.webp": _webp(d / "under_cap.webp")}


def _webp(path: Path) -> Path:
    smooth(4890, 4890, 1).save(path, quality=30, method=0)  # 23.9 MP: under the pixel cap
    return path


@needs_coral
def test_image_bombs_are_refused_before_decoding_and_predict_stays_under_300_mb(bundle,
                                                                                tmp_path):
    files = bombs(tmp_path / "bombs")
    ok = tmp_path / "bombs" / "camera_progressive.jpg"  # what a camera or editor writes
    smooth(3000, 2000, 2).save(ok, progressive=True, quality=85)
    assert all(f.stat().st_size < 4_000_000 for f in files.values())
    out = tmp_path / "r.json"
    rc, rss, err = peak_rss_mb("predict", str(bundle), *map(str, files.values()), str(ok),
                               "-o", str(out), "--threads", "1", "--progress_every", "-1")
    assert rc == 0, err[-2000:]
    assert rss <= MB300, f"peak RSS {rss} MB"
    got = results(out)
    assert "failure" not in got["camera_progressive.jpg"], got["camera_progressive.jpg"]
    assert "progressive JPEG of 6500×6500 needs" in got["progressive.jpg"]["failure"]
    assert "not an image the device reads" in got["icon.JPG"]["failure"]
    assert "WebP of 4890×4890 needs" in got["under_cap.webp"]["failure"]
    for name in files:
        assert "--max_pixels" in got[name]["failure"] or name == "icon.JPG"


@needs_coral
def test_png_bomb_capture_times_and_crop_sizes_read_headers_only(bundle, tmp_path):
    """Pillow's PNG getexif() decodes the whole image: the Camtrap DP capture time of a
    failed frame and the crop planning of 2+ boxes must not ask it for a PNG over the cap."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "bomb.png").write_bytes(zero_png(9000, 9000))  # 81 MP RGBA: 324 MB decoded
    texture(imgs / "a.jpg", 5, size=(320, 240))
    rc, rss, err = peak_rss_mb("predict", str(bundle), str(imgs), "--format", "camtrapdp",
                               "-o", str(tmp_path / "pkg"), "--threads", "1")
    assert rc == 0 and rss <= MB300, (rss, err[-2000:])
    assert "pixel cap" in results(tmp_path / "pkg" / "megadetector.json")["bomb.png"]["failure"]
    md = _md_with_boxes(tmp_path / "md.json", ["bomb.png", "a.jpg"])
    out = tmp_path / "crops.json"
    rc, rss, err = peak_rss_mb("predict", str(bundle), str(imgs), "--detections", str(md),
                               "-o", str(out), "--threads", "1")
    assert rc == 0 and rss <= MB300, (rss, err[-2000:])
    assert "pixel cap" in results(out)["bomb.png"]["warnings"][0]


@pytest.mark.slow
@needs_coral
def test_the_issues_13000_pixel_bombs_alone_at_default_settings(bundle, tmp_path):
    for name, f in bombs(tmp_path / "bombs", scale=2).items():
        out = tmp_path / f"{name}.json"
        rc, rss, err = peak_rss_mb("predict", str(bundle), str(f), "-o", str(out))
        assert rc == 0, err[-2000:]
        assert rss <= MB300, f"{name}: peak RSS {rss} MB"
        assert results(out)[f.name]["failure"]


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _header(sof: int, w: int, h: int, sampling: list[int], scan_components: int) -> bytes:
    comps = b"".join(bytes([i + 1, s, 0]) for i, s in enumerate(sampling))
    frame = _segment(sof, bytes([8]) + struct.pack(">HH", h, w) + bytes([len(sampling)])
                     + comps)
    scan = _segment(0xDA, bytes([scan_components]) + bytes(2 * scan_components) + b"\0\x3f\0")
    return b"\xff\xd8" + _segment(0xE0, b"JFIF\0\1\1\0\0\1\0\1\0\0") + frame + scan


def test_jpeg_headers_give_the_coefficient_memory_by_hand(tmp_path):
    """Hand-worked: 100×75 4:2:0 is Y 13→14 × 10 blocks, Cb and Cr 7 × 5 blocks (the
    chroma planes are 50 × 38 samples), 128 B per block: 17,920 + 2 × 4,480 = 26,880 B."""
    import io

    f = io.BytesIO(_header(0xC2, 100, 75, [0x22, 0x11, 0x11], 1))
    f.seek(5)
    frame = dec.jpeg_frame(f)
    assert f.tell() == 5  # the position is put back for Pillow
    assert frame.progressive and frame.buffered
    assert frame.sampling == ((2, 2), (1, 1), (1, 1))
    assert frame.coefficient_bytes() == 26_880
    baseline = dec.jpeg_frame(io.BytesIO(_header(0xC0, 100, 75, [0x11] * 3, 3)))
    assert not baseline.buffered and baseline.coefficient_bytes() == 3 * 13 * 10 * 128
    multi = dec.jpeg_frame(io.BytesIO(_header(0xC0, 100, 75, [0x11] * 3, 1)))
    assert multi.scans_one_by_one and multi.buffered  # one component per scan: buffered
    assert dec.jpeg_frame(io.BytesIO(b"\x89PNG\r\n\x1a\n")) is None
    assert dec.jpeg_frame(io.BytesIO(b"\xff\xd8\xff")) is None  # cut in the headers


def test_progressive_budget_boundary_is_the_header_arithmetic(tmp_path):
    """Pillow's own progressive 4:2:0 JPEG of 100×75 decoded at full scale needs the
    26,880 B of coefficients plus 4 B × 7,500 output pixels = 56,880 B; the budget is
    6 B per pixel of the cap: 9,480 px allows it, 9,479 px (56,874 B) does not."""
    p = texture(tmp_path / "p.jpg", 3, size=(100, 75), progressive=True, subsampling=2)
    pre = dec.Preprocess(75, 100)
    assert dec.decode(p, pre, max_pixels=9480).arrays[0].shape == (75, 100, 3)
    with pytest.raises(ValueError, match=r"^progressive JPEG of 100×75 needs 0 MB .*pixel cap"):
        dec.decode(p, pre, max_pixels=9479)
    assert dec.decode(p, pre, max_pixels=None).arrays  # no cap (training): no budget


def test_only_the_device_formats_are_opened(tmp_path):
    ico = ico_holding(tmp_path / "x.jpg", zero_png(64, 64))
    with pytest.raises(Exception, match="not an image the device reads"):
        dec.decode(ico, dec.Preprocess(8, 8))
    for name, save in (("a.gif", {}), ("a.tif", {}), ("a.webp", {}), ("a.bmp", {}),
                       ("a.png", {}), ("a.jpg", {"progressive": True})):
        out = dec.decode(texture(tmp_path / name, 4, **save), dec.Preprocess(16, 16))
        assert out.arrays[0].shape == (16, 16, 3), name
    os.mkfifo(tmp_path / "fifo.jpg")
    with pytest.raises(ValueError, match=NOT_REGULAR):
        dec.decode(tmp_path / "fifo.jpg", dec.Preprocess(8, 8))

"""Train = evaluate = device: the training pipeline yields the pixels ``kerascls_edge`` feeds.

Issue 12: a 597×448 frame was trained on as its blown-up top-left quarter (48.8 grey levels
from the device's view) and letterboxing disagreed on most frames. Here every decoder path of
``file_dataset`` (``auto``, ``tf``, ``pil``), every resize mode and three input sizes are
compared per image with ``kerascls_edge.decode.decode`` on textured pictures rendered here
(multi-scale noise, hard edges, gradients — flat colours look the same after any resize) at
awkward sizes, EXIF orientations and pixel formats; the same over ../shared/data/camtrap.
Geometry (DCT scale, letterbox size and offset) is also pinned by hand-worked numbers and by
Pillow called directly, so a bug in the shared definition cannot hide behind parity.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls.data import transforms as T
from kerascls.data.decode import RATIOS, plan, preprocess
from kerascls.data.pipeline import PipelineOptions, file_dataset
from kerascls.data.records import Record, check_files
from kerascls_edge import decode as edge
from kerascls_edge.decode import Preprocess
from tests.bundle_scripts import MAKE_BUNDLE
from tests.pictures import render, texture

CAMTRAP = ROOT.parent / "shared" / "data" / "camtrap"
SIZES = [(224, 224), (96, 96), (96, 160)]
MODES = ("stretch", "crop", "pad")
DECODERS = ("auto", "tf", "pil")


def training_view(records: list[Record], size, mode: str, decoder: str) -> np.ndarray:
    """file_dataset in eval mode (default options but the decoder): N×H×W×3 float."""
    opts = PipelineOptions(size, 16, resize=mode, decoder=decoder, cache="none",
                           deterministic=True)
    y = np.zeros(len(records), np.int64)
    return np.concatenate([x.numpy() for x, _ in file_dataset(records, y, opts)])


def device_view(records: list[Record], size, mode: str) -> np.ndarray:
    pre = Preprocess(size[0], size[1], 3, mode)
    return np.stack([edge.decode(r.path, pre).arrays[0] for r in records]).astype(np.float32)


def per_image_diff(records: list[Record], size, mode: str, decoder: str) -> dict[str, float]:
    got = training_view(records, size, mode, decoder)
    want = device_view(records, size, mode)
    assert got.shape == want.shape
    diff = np.abs(got - want).reshape(len(records), -1).mean(axis=1)
    return {Path(r.path).name: float(d) for r, d in zip(records, diff)}


def assert_parity(records: list[Record], sizes=SIZES, modes=MODES, decoders=DECODERS) -> None:
    bad = []
    for size in sizes:
        for mode in modes:
            for decoder in decoders:
                for name, d in per_image_diff(records, size, mode, decoder).items():
                    if d > 1.0:
                        bad.append(f"{name} {size} {mode} {decoder}: {d:.2f}")
    assert not bad, "training pixels differ from the device's:\n" + "\n".join(bad)


def _checked(paths: list[str]) -> list[Record]:
    result = check_files([Record(p, ("x",)) for p in paths])
    assert not result.bad, result.bad
    return result.records


# -- the issue's reproduction --------------------------------------------------------------


def test_issue_597x448_jpeg_alone_in_a_folder(tmp_path):
    """Default options (decoder auto): was 48.8 grey levels (the top-left quarter, blown up)."""
    recs = _checked([render(tmp_path, "frame.jpg", 597, 448, quality=90)])
    (x, _), = file_dataset(recs, np.zeros(1), PipelineOptions((224, 224)))  # all defaults
    d = np.abs(x.numpy()[0] - device_view(recs, (224, 224), "stretch")[0]).mean()
    assert d <= 1.0, d
    (p,) = [plan(r, preprocess((224, 224))) for r in recs]
    assert RATIOS[p.branch] == 2 and p.box == (0, 0, 299, 224)  # 448/2 = 224 still covers


# -- rendered pictures: sizes, orientations, formats ----------------------------------------

AWKWARD = [("caltech.jpg", 2048, 1494), ("ocelot.jpg", 1046, 802), ("big.jpg", 4000, 3000),
           ("small.jpg", 597, 448), ("prime.jpg", 1009, 757), ("tiny.jpg", 211, 157),
           ("portrait.jpg", 750, 1333), ("column.jpg", 1, 500), ("row.jpg", 500, 1)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[Record]:
    d = tmp_path_factory.mktemp("rendered")
    paths = [render(d, n, w, h, seed=i, quality=90) for i, (n, w, h) in enumerate(AWKWARD)]
    paths += [render(d, f"o{o}.jpg", 1046, 802, seed=20 + o, orientation=o, quality=90)
              for o in range(1, 9)]
    paths += [render(d, "grey.jpg", 800, 600, 30, "L", quality=90),
              render(d, "cmyk.jpg", 800, 600, 31, "CMYK", quality=90),
              render(d, "prog.jpg", 1280, 960, 32, progressive=True, quality=85),
              render(d, "s444.jpg", 900, 700, 42, subsampling=0, quality=92),
              render(d, "s422.jpg", 900, 700, 43, subsampling=1, quality=92),
              render(d, "restart.jpg", 1500, 1000, 44, restart_marker_blocks=4),
              render(d, "camera.mpo", 1600, 1200, 45, save_all=True, quality=90,
                     append_images=[Image.new("RGB", (160, 120))], format="MPO"),
              render(d, "rgb.png", 640, 480, 33), render(d, "grey.png", 333, 251, 34, "L"),
              render(d, "alpha.png", 640, 480, 35, "RGBA"), render(d, "la.png", 300, 200, 36, "LA"),
              render(d, "i16.png", 640, 480, 37, "I;16"),
              render(d, "pal.png", 640, 480, 38, "P"), render(d, "palt.png", 640, 480, 39, "P+t"),
              render(d, "pic.bmp", 500, 375, 40), render(d, "rot.png", 640, 480, 41,
                                                         orientation=6)]
    return _checked(paths)


def test_rendered_pictures_224_every_path_and_mode(rendered):
    assert_parity(rendered, sizes=[(224, 224)])


def test_rendered_pictures_small_and_non_square_graph_path(rendered):
    assert_parity(rendered, sizes=[(96, 96), (96, 160)], decoders=("tf",))


@pytest.mark.slow
def test_rendered_pictures_every_path_mode_and_size(rendered):
    assert_parity(rendered)


def test_tf_path_is_graph_decoded_for_jpegs(rendered):
    """The tf path's JPEGs really go through graph ops (not silently through Pillow)."""
    jpegs = [r for r in rendered if r.fmt == 0]
    assert all(plan(r, preprocess((224, 224))).branch < len(RATIOS) for r in jpegs)


def test_crop_boxes_and_greyscale_models_match_the_device(tmp_path):
    """COCO boxes (upright pixels) = the device's detector regions (normalized), any path."""
    paths = [render(tmp_path, "a.jpg", 2048, 1494, 1, quality=90),
             render(tmp_path, "r.jpg", 1046, 802, 2, orientation=6, quality=90),
             render(tmp_path, "p.png", 640, 480, 3, "RGBA")]
    boxes = [(300.5, 200, 700, 500), (10, 20, 400, 150), (0, 0, 639, 479.5)]
    recs = check_files([Record(p, ("x",), bbox=b) for p, b in zip(paths, boxes)]).records
    assert len(recs) == 3
    for mode in MODES:
        pre = Preprocess(96, 160, 3, mode)
        want = []
        for r in recs:
            w, h = (r.height, r.width) if r.orientation in (5, 6, 7, 8) else (r.width, r.height)
            x, y, bw, bh = r.bbox
            want.append(edge.decode(r.path, pre, [(x / w, y / h, bw / w, bh / h)]).arrays[0])
        for decoder in DECODERS:
            got = training_view(recs, (96, 160), mode, decoder)
            diff = np.abs(got - np.stack(want)).reshape(3, -1).mean(axis=1)
            assert diff.max() <= 1.0, (mode, decoder, diff)
    grey = PipelineOptions((64, 64), 4, channels=1, cache="none")
    whole = _checked(paths)
    got = np.concatenate([x.numpy() for x, _ in file_dataset(whole, np.zeros(3), grey)])
    want = np.stack([edge.decode(r.path, Preprocess(64, 64, 1)).arrays[0] for r in whole])
    np.testing.assert_array_equal(got, want)


def test_evaluate_and_export_samples_are_the_device_pixels(tmp_path):
    """`evaluate` and export calibration/parity read images through the same pipeline."""
    from kerascls.data.runs import sample_file_images, sample_records
    for c, cls in enumerate(("deer", "fox")):
        (tmp_path / cls).mkdir()
        for i in range(5):
            render(tmp_path / cls, f"{i}.jpg", 597 + 131 * i, 448 + 57 * i, 10 * c + i,
                   orientation=1 + (i + c) % 8, quality=90)
    spec = f"folder:{tmp_path}"
    x, _ = sample_file_images(spec, "train", 6, (224, 224, 3), seed=0)
    recs = sample_records(spec, "train", 6, 0, None)
    diff = np.abs(x - device_view(recs, (224, 224), "stretch")).reshape(len(recs), -1)
    assert len(recs) == 6 and diff.mean(axis=1).max() <= 1.0


# -- geometry pinned independently ---------------------------------------------------------


def _letterbox_rows(arr: np.ndarray) -> tuple[int, int]:
    """First and last row holding picture (any non-zero pixel)."""
    rows = np.flatnonzero(arr.reshape(arr.shape[0], -1).max(axis=1) > 0)
    return int(rows[0]), int(rows[-1])


@pytest.mark.parametrize("w,h,size,inner,offset", [
    # (image w, h), target (h, w), hand-worked inner (w, h) and offset (x, y)
    (300, 100, (224, 224), (224, 75), (0, 74)),    # 100·224/300 = 74.67 → 75; (224−75)//2 = 74
    (100, 301, (224, 224), (74, 224), (75, 0)),    # 100·224/301 = 74.4 → 74; (224−74)//2 = 75
    (1000, 1000, (96, 160), (96, 96), (32, 0)),    # square into 160 wide: (160−96)//2 = 32
    (1001, 500, (96, 96), (96, 48), (0, 24)),      # 500·96/1001 = 47.95 → 48
])
def test_letterbox_size_and_offset_hand_worked(w, h, size, inner, offset):
    """Device letterbox = Pillow's own resize of the whole picture, pasted where worked out."""
    pic = Image.fromarray(texture(w, h, 5))
    got = edge.decode(pic.copy(), Preprocess(size[0], size[1], 3, "pad")).arrays[0]
    want = np.zeros((size[0], size[1], 3), np.uint8)
    x, y = offset
    want[y:y + inner[1], x:x + inner[0]] = np.asarray(
        pic.resize(inner, Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(got, want)


def test_training_letterbox_offset_hand_worked(tmp_path):
    """The training pipeline's margins, by value: rows 0–73 and 149–223 zero, 74–148 picture."""
    recs = _checked([render(tmp_path, "wide.jpg", 300, 100, quality=95)])
    for decoder in DECODERS:
        x = training_view(recs, (224, 224), "pad", decoder)[0]
        assert _letterbox_rows(x) == (74, 148), decoder
        assert x[74:149].min() > 0, decoder  # the picture fills its rows: no 1-pixel gap


def test_dct_scale_choice_hand_worked(tmp_path):
    """The largest 1/r whose decode still covers the target (both sides; pad: one side)."""
    cases = [((597, 448), "stretch", 2), ((4000, 3000), "stretch", 8), ((2048, 1494), "crop", 4),
             ((1046, 802), "stretch", 2), ((1046, 802), "pad", 4), ((500, 1), "pad", 1),
             ((5000, 3), "pad", 2),
             ((211, 157), "stretch", 1)]
    for (w, h), mode, want in cases:
        assert edge.reduction((w, h), Preprocess(224, 224, 3, mode), [(0, 0, 1, 1)]) == want
    path = render(tmp_path, "s.jpg", 597, 448, quality=90)
    img, _ = edge.load_upright(path, Preprocess(224, 224))
    assert img.size == (299, 224)  # libjpeg really decoded at 1/2
    thin = render(tmp_path, "thin.jpg", 5000, 3, quality=90)
    img, _ = edge.load_upright(thin, Preprocess(224, 224, 3, "pad"))
    assert img.size == (2500, 2)


def test_training_resize_matches_pillow_directly():
    """transforms.resize (stretch) is Pillow's antialiased bilinear resize, not aliased."""
    pic = texture(403, 301, 7)
    got = T.resize(tf.constant(pic), (96, 128)).numpy()
    want = np.asarray(Image.fromarray(pic).resize((128, 96), Image.Resampling.BILINEAR), float)
    assert np.abs(got - want).mean() < 0.5
    crop = T.resize(tf.constant(pic), (64, 64), "crop").numpy()
    box = ((403 - 301) / 2, 0, (403 + 301) / 2, 301)
    want = np.asarray(Image.fromarray(pic).resize((64, 64), Image.Resampling.BILINEAR, box=box))
    assert np.abs(crop - want).mean() < 0.5


# -- the device's memory and broken files (issue 13, items 5 and 7) ------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, w: int, h: int, colour_type: int = 0) -> Path:
    """A w×h PNG of zeros, written without ever holding the pixels (13000² is 194 KB)."""
    import zlib
    channels = {0: 1, 2: 3, 6: 4}[colour_type]
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + w * channels)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)
                     + _png_chunk(b"IEND", b""))
    return path


def garbage_jpeg(path: Path, tail: bytes, w: int = 12000, h: int = 12000) -> Path:
    """A valid JPEG header declaring w×h, then ``tail`` instead of its data, and an end marker."""
    import io
    buf = io.BytesIO()
    Image.fromarray(texture(64, 64)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    sos = data.index(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    path.write_bytes(bytes(data[:scan]) + tail + b"\xff\xd9")
    return path


def test_garbage_jpeg_is_a_failure_not_a_grey_picture(tmp_path):
    rng = np.random.default_rng(0)
    no_ff = rng.integers(0, 255, 50_000, dtype=np.uint8).tobytes()
    tails = {"random": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
             "zeros": bytes(50_000), "no_markers": no_ff, "short": b"\x12\x34" * 100}
    for name, tail in tails.items():
        bad = garbage_jpeg(tmp_path / f"{name}.jpg", tail)
        with pytest.raises(OSError):
            edge.decode(bad, Preprocess(224, 224), strict=True)
        with pytest.raises(OSError, match="JPEG data ends early.*most of it would be grey"):
            edge.decode(bad, Preprocess(224, 224))
    # no false alarm on complete files, however little data they need
    for i, kw in enumerate(({"optimize": True}, {"progressive": True}, {})):
        p = tmp_path / f"flat{i}.jpg"
        Image.new("RGB", (4000, 3000), (0, 0, 0)).save(p, **kw)
        assert edge.jpeg_coverage(p) == 1.0
        assert not edge.decode(p, Preprocess(224, 224), strict=True).warnings
    real = tmp_path / "real.jpg"
    Image.fromarray(texture(1600, 1200)).save(real, quality=90)
    assert edge.jpeg_coverage(real) == 1.0
    (bad,) = check_files([Record(str(tmp_path / "zeros.jpg"), ("x",))]).bad  # nor trained on
    assert "truncated" in bad.reason
    cut = tmp_path / "cut.jpg"  # an ordinary truncation keeps its warning, not a failure
    cut.write_bytes(real.read_bytes()[: real.stat().st_size * 2 // 3])
    assert edge.decode(cut, Preprocess(224, 224)).warnings == [edge.TRUNCATED_WARNING]


def test_pixel_cap_refuses_before_decoding(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 300_000
    with pytest.raises(ValueError, match="pixel cap"):
        edge.decode(bomb, Preprocess(224, 224))
    ok = edge.decode(bomb_png(tmp_path / "ok.png", 4000, 3000, 6), Preprocess(224, 224))
    assert ok.arrays[0].shape == (224, 224, 3) and ok.arrays[0].max() == 0


def test_large_non_jpeg_reduction_matches_whole_image_conversion(tmp_path):
    """Strip-wise convert+reduce gives what converting then reducing the whole image gives."""
    for mode in ("P+t", "RGBA", "I;16", "L"):
        path = render(tmp_path, f"r{len(mode)}{mode[0]}.png", 950, 900, 3, mode)
        img = Image.open(path)
        factor = edge.reduction(img.size, Preprocess(224, 224), [(0, 0, 1, 1)])
        assert factor == 4
        want = edge.to_channels(img, 3).reduce(factor)
        got = edge._reduce_converted(img, factor, 3)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))



PEAK_RSS = textwrap.dedent(r'''
    import resource, subprocess, sys
    proc = subprocess.run([sys.executable, "-m", "kerascls_edge", *sys.argv[1:]],
                          capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-2000:])
    print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
''')


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edge") / "bundle"
    proc = subprocess.run([sys.executable, "-c", MAKE_BUNDLE, str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def peak_rss_mb(bundle: Path, images: list[Path], out: Path, *flags: str) -> tuple[int, int]:
    """(exit status, peak RSS in MB) of `kerascls-edge predict` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "export")}
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, "predict", str(bundle),
                           *map(str, images), "-o", str(out), *flags],
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    code, rss = proc.stdout.split()
    return int(code), int(rss)


def bombs(d: Path) -> list[Path]:
    """Bomb-like PNG, BMP and TIFF files: small on disk, huge (or just under the cap) decoded."""
    d.mkdir(exist_ok=True)
    files = [bomb_png(d / "grey13000.png", 13000, 13000),         # 194 KB, 169 MP
             bomb_png(d / "rgba4800.png", 4800, 4800, 6)]          # just under the 24 MP cap
    big = Image.new("RGB", (4800, 4800), (9, 9, 9))
    big.save(d / "lzw4800.tiff", compression="tiff_lzw")
    big.convert("P").save(d / "pal4800.bmp")
    Image.new("L", (7000, 7000)).save(d / "grey7000.tiff", compression="tiff_lzw")
    return files + [d / "lzw4800.tiff", d / "pal4800.bmp", d / "grey7000.tiff"]


def test_peak_rss_on_bomb_like_files_stays_under_300_mb(bundle, tmp_path):
    import json
    files = bombs(tmp_path / "bombs")
    out = tmp_path / "out.json"
    _, rss = peak_rss_mb(bundle, files, out, "--decode_threads", "0")
    assert rss < 300, f"peak RSS {rss} MB"
    results = {Path(r["file"]).name: r for r in json.loads(out.read_text())["images"]}
    assert set(results) == {f.name for f in files}
    for name in ("grey13000.png", "grey7000.tiff"):
        assert "pixel cap" in results[name]["failure"]
    for name in ("rgba4800.png", "lzw4800.tiff", "pal4800.bmp"):
        assert "failure" not in results[name], results[name]


def test_max_pixels_flag_sets_the_cap(bundle, tmp_path):
    import json
    png = tmp_path / "two_mp.png"
    Image.fromarray(texture(2000, 1000)).save(png)
    for flag, failed in (("1000000", True), ("0", False), ("2000000", False)):
        out = tmp_path / f"cap{flag}.json"
        peak_rss_mb(bundle, [png], out, "--max_pixels", flag)
        (entry,) = json.loads(out.read_text())["images"]
        assert ("pixel cap" in entry.get("failure", "")) == failed, (flag, entry)


@pytest.mark.slow
def test_peak_rss_each_bomb_alone_default_settings(bundle, tmp_path):
    for f in bombs(tmp_path / "bombs"):
        _, rss = peak_rss_mb(bundle, [f], tmp_path / f"{f.name}.json")
        assert rss < 300, f"{f.name}: peak RSS {rss} MB"


# -- real frames ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not CAMTRAP.is_dir(), reason=f"camera-trap frames not found at {CAMTRAP}")
def test_every_readable_camtrap_frame_every_path():
    files = sorted(str(p) for p in CAMTRAP.rglob("*")
                   if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    records = check_files([Record(f, ("x",)) for f in files]).records
    assert len(records) >= 60
    assert_parity(records, sizes=[(224, 224), (96, 160)])

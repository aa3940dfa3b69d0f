"""The device decoder's contract (``kerascls_edge.decode``) pinned by independent values.

Every expected value is worked by hand or computed by Pillow / NumPy directly (never by the
decoder's own helpers): DCT-scale choice, letterbox and centre-crop geometry, region boxes,
EXIF orientation and capture time, bit-depth scaling, strip-wise reduction, truncation and
pixel-cap refusals. TensorFlow-free and fast (the mutation run of decode.py uses this file).
"""

from __future__ import annotations

import calendar
import io
import os
import struct
from datetime import datetime

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from kerascls_edge import decode as dec
from kerascls_edge.decode import Preprocess

BILINEAR = Image.Resampling.BILINEAR
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _pillow_strict_about_truncation(monkeypatch):
    """Pillow's default; an earlier test's import (megadetector) may have flipped it."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)


def texture(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Smooth gradients plus noise: every pixel differs, no flat margins hide a shift."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 / max(w, 1), y * 200 / max(h, 1), (x + y) * 100 / (w + h)], -1)
    arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


# -- DCT-scale choice and geometry ---------------------------------------------------------


@pytest.mark.parametrize("size, pre, regions, factor", [
    ((3200, 2400), Preprocess(224, 224), [(0, 0, 1, 1)], 8),  # 10.7 x room
    ((800, 800), Preprocess(100, 100), [(0, 0, 1, 1)], 8),  # exactly 8 x: still 8
    ((1000, 500), Preprocess(224, 224), [(0, 0, 1, 1)], 2),  # 4.46 x 2.23: the smaller side
    ((1000, 500), Preprocess(224, 224, 3, "crop"), [(0, 0, 1, 1)], 2),
    ((1000, 500), Preprocess(224, 224, 3, "pad"), [(0, 0, 1, 1)], 4),  # pad: the fitting side
    ((400, 800), Preprocess(100, 50), [(0, 0, 1, 1)], 8),  # (h, w) = (100, 50): 8 and 8
    ((800, 400), Preprocess(100, 50), [(0, 0, 1, 1)], 4),  # 16 and 4
    ((3200, 2400), Preprocess(224, 224), [(0.5, 0.5, 0.5, 0.5)], 4),  # 7.1 x 5.4
    ((3200, 2400), Preprocess(224, 224), [(0, 0, 1, 1), (0, 0, 0.1, 0.1)], 1),  # the worst
    ((3200, 2400), Preprocess(224, 224), [(0, 0, 0, 0)], 1),  # empty region: full scale
    ((3200, 2400), Preprocess(1, 1), [(0, 0, 1 / 3200, 1)], 1),  # 1 px wide: room 1
    ((3200, 2400), Preprocess(1, 1), [(0, 0, 1, 1 / 2400)], 1),  # 1 px high
    ((4, 4000), Preprocess(1, 1, 3, "pad"), [(0, 0, 1, 1)], 4),  # no side below 1 px
    ((6, 4000), Preprocess(1, 1, 3, "pad"), [(0, 0, 1, 1)], 4),
])
def test_reduction_by_hand(size, pre, regions, factor):
    assert dec.reduction(size, pre, regions) == factor


def test_reduced_size_rounds_up():
    assert dec.reduced_size((401, 300), 8) == (51, 38)
    assert dec.reduced_size((400, 299), 4) == (100, 75)
    assert dec.reduced_size((7, 5), 1) == (7, 5)


@pytest.mark.parametrize("size, region, pre, box, inner, offset", [
    ((200, 100), (0, 0, 1, 1), Preprocess(50, 60), (0, 0, 200, 100), (60, 50), (0, 0)),
    ((200, 100), (0, 0, 1, 1), Preprocess(50, 50, 3, "crop"), (50, 0, 150, 100), (50, 50),
     (0, 0)),
    ((100, 200), (0, 0, 1, 1), Preprocess(50, 50, 3, "crop"), (0, 50, 100, 150), (50, 50),
     (0, 0)),
    ((300, 100), (0, 0, 1, 1), Preprocess(50, 100, 3, "crop"), (50, 0, 250, 100), (100, 50),
     (0, 0)),
    ((200, 100), (0, 0, 0.5, 0.5), Preprocess(50, 50, 3, "crop"), (25, 0, 75, 50), (50, 50),
     (0, 0)),
    ((100, 200), (0, 0.5, 0.5, 0.5), Preprocess(50, 50, 3, "crop"), (0, 125, 50, 175),
     (50, 50), (0, 0)),
    ((200, 100), (0.5, 0, 0.5, 0.5), Preprocess(50, 50, 3, "crop"), (125, 0, 175, 50),
     (50, 50), (0, 0)),
    ((100, 400), (0, 0, 1, 1), Preprocess(50, 100, 3, "crop"), (0, 175, 100, 225), (100, 50),
     (0, 0)),
    ((200, 100), (0, 0, 1, 1), Preprocess(60, 60, 3, "pad"), (0, 0, 200, 100), (60, 30),
     (0, 15)),
    ((100, 100), (0, 0, 1, 1), Preprocess(40, 100, 3, "pad"), (0, 0, 100, 100), (40, 40),
     (30, 0)),
    ((4, 1), (0, 0, 1, 1), Preprocess(10, 10, 3, "pad"), (0, 0, 4, 1), (10, 2), (0, 4)),
    ((1000, 1), (0, 0, 1, 1), Preprocess(10, 10, 3, "pad"), (0, 0, 1000, 1), (10, 1), (0, 4)),
    ((1, 1000), (0, 0, 1, 1), Preprocess(10, 10, 3, "pad"), (0, 0, 1, 1000), (1, 10), (4, 0)),
    ((200, 100), (0.25, 0.5, 0.5, 0.5), Preprocess(10, 10, 3, "pad"), (50, 50, 150, 100),
     (10, 5), (0, 2)),
    ((200, 100), (0.25, 0, 0.5, 0.5), Preprocess(10, 10, 3, "pad"), (50, 0, 150, 50),
     (10, 5), (0, 2)),
])
def test_geometry_by_hand(size, region, pre, box, inner, offset):
    g = dec.geometry(size, region, pre)
    assert g.box == pytest.approx(box) and g.inner == inner and g.offset == offset


@pytest.mark.parametrize("region, box", [
    ((-0.1, -0.2, 0.5, 0.5), (0, 0, 40, 15)),  # clamped at the top-left
    ((1.2, 0.99, 0.5, 0.5), (99, 49, 100, 50)),  # outside: the last pixel, never empty
    ((0.5, 0.5, 0, 0), (50, 25, 51, 26)),  # empty: one pixel
    ((0.1, 0.2, 0.3, 0.4), (10, 10, 40, 30)),
])
def test_region_pixel_box_by_hand(region, box):
    assert dec._pixel_box((100, 50), region) == pytest.approx(box)


@pytest.mark.parametrize("region, size, padding, square, expected", [
    ((0.2, 0.3, 0.2, 0.1), (1000, 500), 0.5, False, (0.1, 0.25, 0.4, 0.2)),
    ((0.2, 0.3, 0.2, 0.1), (1000, 500), 0.5, True, (0.1, 0.0, 0.4, 0.75)),  # clipped at top
    ((0.5, 0.5, 0.1, 0.4), (1000, 500), 0.0, True, (0.45, 0.5, 0.2, 0.4)),
    ((0.5, 0.45, 0.2, 0.1), (1000, 500), 0.0, True, (0.5, 0.3, 0.2, 0.4)),  # 200 px
    ((0.9, 0.1, 0.2, 0.2), (1000, 500), 0.0, False, (0.9, 0.1, 0.1, 0.2)),
    ((0.1, 0.9, 0.2, 0.2), (1000, 500), 0.0, False, (0.1, 0.9, 0.2, 0.1)),
    ((0.0, 1.5, 0.1, 0.1), (1000, 500), 0.0, False, (0.0, 1.0, 0.1, 0.0)),
    ((1.5, 0.0, 0.2, 0.2), (1000, 500), 0.0, False, (1.0, 0.0, 0.0, 0.2)),
    ((-0.5, -0.5, 0.2, 0.2), (1000, 500), 0.0, False, (0.0, 0.0, 0.0, 0.0)),
    ((0.4, 0.4, 0.2, 0.2), (100, 100), 0.0, False, (0.4, 0.4, 0.2, 0.2)),
])
def test_crop_region_by_hand(region, size, padding, square, expected):
    assert dec.crop_region(region, size, padding, square) == pytest.approx(expected)


def test_crop_region_defaults_to_the_box_itself():
    assert dec.crop_region((0.2, 0.3, 0.2, 0.1), (1000, 500)) == pytest.approx((0.2, 0.3, 0.2, 0.1))


# -- pixels against Pillow directly --------------------------------------------------------


@pytest.mark.parametrize("interp, resample", [
    ("bilinear", Image.Resampling.BILINEAR), ("nearest", Image.Resampling.NEAREST),
    ("bicubic", Image.Resampling.BICUBIC), ("area", Image.Resampling.BOX),
    ("lanczos", Image.Resampling.LANCZOS), ("bogus", Image.Resampling.BILINEAR),
])
def test_resize_region_is_pillows_resize_of_the_hand_box(interp, resample):
    img = texture(64, 48)
    got = dec.resize_region(img, (0.25, 0.5, 0.5, 0.25), Preprocess(6, 10, 3, "stretch", interp))
    want = np.asarray(img.resize((10, 6), resample, box=(16, 24, 48, 36)))
    np.testing.assert_array_equal(got, want)


def test_decode_defaults_stretch_bilinear_whole_image():
    img = texture(64, 48, seed=1)
    out = dec.decode(img, Preprocess(12, 20))
    assert len(out.arrays) == 1 and out.warnings == []
    want = np.asarray(img.resize((20, 12), Image.Resampling.BILINEAR, box=(0, 0, 64, 48)))
    np.testing.assert_array_equal(out.arrays[0], want)


def test_decode_crop_and_pad_modes_against_pillow():
    img = texture(64, 32, seed=2)
    crop = dec.decode(img, Preprocess(16, 16, 3, "crop")).arrays[0]
    want = np.asarray(img.resize((16, 16), BILINEAR, box=(16, 0, 48, 32)))
    np.testing.assert_array_equal(crop, want)
    pad = dec.decode(img, Preprocess(20, 20, 3, "pad")).arrays[0]  # s = 0.3125: 20 x 10 at y 5
    want = np.zeros((20, 20, 3), np.uint8)
    want[5:15] = np.asarray(img.resize((20, 10), BILINEAR, box=(0, 0, 64, 32)))
    np.testing.assert_array_equal(pad, want)
    grey = texture(32, 64, seed=2, mode="L")
    pad = dec.decode(grey, Preprocess(20, 20, 1, "pad")).arrays[0]
    want = np.zeros((20, 20, 1), np.uint8)
    want[:, 5:15, 0] = np.asarray(grey.resize((10, 20), BILINEAR, box=(0, 0, 32, 64)))
    np.testing.assert_array_equal(pad, want)


@pytest.mark.parametrize("lenient", [False, True])  # True: as after `import megadetector`
def test_an_open_pillow_jpeg_is_decoded_as_given(tmp_path, monkeypatch, lenient):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient)
    p = tmp_path / "o.jpg"
    p.write_bytes(jpeg_bytes(texture(40, 30, seed=18)))
    with Image.open(p) as im:
        out = dec.decode(im, Preprocess(30, 40))
        assert out.warnings == []
        np.testing.assert_array_equal(out.arrays[0], np.asarray(im.convert("RGB")))


def test_decode_one_array_per_region_in_order():
    img = texture(40, 40, seed=3)
    regions = ((0, 0, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5))
    out = dec.decode(img, Preprocess(5, 5), regions=iter(regions))
    assert len(out.arrays) == 2
    np.testing.assert_array_equal(out.arrays[1], np.asarray(img.resize((5, 5), BILINEAR,
                                                                       box=(20, 20, 40, 40))))


# -- EXIF: orientation and capture time ----------------------------------------------------


@pytest.mark.parametrize("orientation", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_orientation_matches_pillows_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[274] = orientation
    p = tmp_path / "o.png"
    texture(24, 16, seed=4).save(p, exif=exif.tobytes())
    with Image.open(p) as im:
        upright = ImageOps.exif_transpose(im) if 1 <= orientation <= 8 else im.copy()
    w, h = upright.size
    assert dec.upright_file_size(p) == (w, h)
    got = dec.decode(p, Preprocess(h, w)).arrays[0]
    np.testing.assert_array_equal(got, np.asarray(upright.convert("RGB")))


def test_orientation_that_is_not_a_number_is_ignored(tmp_path):
    ifd = (b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHI", 274, 2, 2)
           + b"x\x00\x00\x00" + struct.pack(">I", 0))  # Orientation as the text "x"
    p = tmp_path / "x.png"
    img = texture(24, 16, seed=17)
    img.save(p, exif=b"Exif\x00\x00" + ifd)
    assert dec.upright_file_size(p) == (24, 16)
    np.testing.assert_array_equal(dec.decode(p, Preprocess(16, 24)).arrays[0], np.asarray(img))


def test_upright_size_swaps_for_the_transposing_orientations():
    img = Image.new("RGB", (30, 20))
    assert [dec._upright_size(img, o) for o in range(1, 9)] == [(30, 20)] * 4 + [(20, 30)] * 4


def _exif_jpeg(tmp_path, original=None, plain=None):
    exif = Image.Exif()
    if plain is not None:
        exif[306] = plain
    if original is not None:
        exif.get_ifd(0x8769)[36867] = original
    p = tmp_path / "t.jpg"
    p.write_bytes(jpeg_bytes(texture(16, 16), exif=exif.tobytes()))
    os.utime(p, (1_000_000_000, 1_000_000_000))
    return p


def test_capture_time_prefers_datetime_original_then_datetime_then_mtime(tmp_path):
    t2024 = calendar.timegm((2024, 5, 6, 7, 8, 9))
    out = dec.decode(_exif_jpeg(tmp_path, "2024:05:06 07:08:09", "2020:01:01 00:00:00"),
                     Preprocess(4, 4))
    assert (out.capture_time, out.datetime) == (t2024, "2024-05-06 07:08:09")
    out = dec.decode(_exif_jpeg(tmp_path, None, "2020:01:02 03:04:05\x00 "), Preprocess(4, 4))
    assert (out.capture_time, out.datetime) == (calendar.timegm((2020, 1, 2, 3, 4, 5)),
                                                "2020-01-02 03:04:05")
    out = dec.decode(_exif_jpeg(tmp_path, "not a date", None), Preprocess(4, 4))
    assert (out.capture_time, out.datetime) == (1_000_000_000, None)
    out = dec.decode(_exif_jpeg(tmp_path, " 2024:05:06 07:08:09 extra", None), Preprocess(4, 4))
    assert out.datetime == "2024-05-06 07:08:09"
    assert dec._parse_exif_time("\x00 2024:05:06 07:08:09") == datetime(2024, 5, 6, 7, 8, 9)
    assert dec.capture_time(texture(4, 4), None) == (None, None)
    assert dec.capture_time(texture(4, 4), tmp_path / "missing.jpg") == (None, None)


# -- channels and bit depth ----------------------------------------------------------------


def test_sixteen_and_thirty_two_bit_greys_scale_to_eight_bits_by_hand():
    # 51529 / 257 = 200.502: 201 (65536 as the white level would give 200.498: 200)
    i16 = Image.fromarray(np.array([[0, 129, 1000, 51529, 65535]], np.uint16))  # I;16: 65535
    assert list(np.asarray(dec.to_channels(i16, 1)).ravel()) == [0, 1, 4, 201, 255]
    wide = Image.fromarray(np.array([[0, 128, 1000, 51529, 65535]], np.int32), "I")  # 16-bit
    assert list(np.asarray(dec.to_channels(wide, 1)).ravel()) == [0, 0, 4, 201, 255]
    just = Image.fromarray(np.array([[0, 256]], np.int32), "I")  # 256 > 255: already 16-bit
    assert list(np.asarray(dec.to_channels(just, 1)).ravel()) == [0, 1]
    narrow = Image.fromarray(np.array([[0, 128, 200, 255]], np.int32), "I")  # ≤ 255: 8-bit
    assert list(np.asarray(dec.to_channels(narrow, 1)).ravel()) == [0, 128, 200, 255]
    assert list(np.asarray(dec.to_channels(narrow, 1, top=65535.0)).ravel()) == [0, 0, 1, 1]
    f = Image.fromarray(np.array([[-5.0, 12.6, 300.0, 100.4]], np.float32), "F")  # clipped
    assert list(np.asarray(dec.to_channels(f, 1)).ravel()) == [0, 13, 255, 100]
    rgb = dec.to_channels(i16, 3)
    assert rgb.mode == "RGB" and rgb.getpixel((2, 0)) == (4, 4, 4)


def test_colour_to_grey_is_itu_601_and_palette_keeps_its_colours():
    assert dec.to_channels(Image.new("RGB", (2, 2), (200, 100, 50)), 1).getpixel((0, 0)) == 124
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 250, 5, 5] + [0, 0, 0] * 254)
    pal.info["transparency"] = 0
    assert dec.to_channels(pal, 3).getpixel((0, 0)) == (250, 5, 5)
    assert dec.to_channels(Image.new("LA", (2, 2), (77, 0)), 3).getpixel((0, 0)) == (77, 77, 77)
    grey = Image.new("L", (2, 2), 9)
    assert dec.to_channels(grey, 1) is grey  # already the target: no copy


def test_strip_wise_reduction_equals_whole_image_conversion(monkeypatch):
    """Small strips (8 rows of 102 px) with a white level only the bottom rows reveal."""
    monkeypatch.setattr(dec, "STRIP_PIXELS", 700)
    arr = np.array(texture(102, 62, seed=5, mode="L"), np.int32)
    arr[40:] *= 200  # only the lower strips exceed 255: the whole image is 16-bit
    img = Image.fromarray(arr, "I")
    want = Image.fromarray(np.round(arr * (255.0 / 65535.0)).astype(np.uint8), "L").reduce(4)
    got = dec._reduce_converted(img, 4, 1)
    assert got.size == (26, 16)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    rgb = texture(102, 62, seed=6)
    got = dec._reduce_converted(rgb, 4, 3)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(rgb.reduce(4)))
    got = dec._reduce_converted(rgb, 1, 1)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(rgb.convert("L")))
    got = dec._reduce_converted(rgb, 2, 3)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(rgb.reduce(2)))
    got = dec._reduce_converted(rgb, 4, 1)  # converted to grey first, then reduced
    np.testing.assert_array_equal(np.asarray(got), np.asarray(rgb.convert("L").reduce(4)))


def test_large_non_jpeg_is_reduced_while_converted(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    img = texture(100, 60, seed=7)
    img.save(p)
    monkeypatch.setattr(dec, "REDUCE_ABOVE", 6000)  # exactly 100 x 60: not above
    got, _ = dec.load_upright(p, Preprocess(10, 10))
    assert got.size == (100, 60)
    monkeypatch.setattr(dec, "REDUCE_ABOVE", 5999)
    got, _ = dec.load_upright(p, Preprocess(10, 10))  # room 6: factor 4
    np.testing.assert_array_equal(np.asarray(got), np.asarray(img.reduce(4)))
    got, _ = dec.load_upright(p, Preprocess(10, 10, 1))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(img.convert("L").reduce(4)))
    exif = Image.Exif()
    exif[274] = 6
    rot = tmp_path / "rot.png"
    img.save(rot, exif=exif.tobytes())  # upright 60 x 100
    got, _ = dec.load_upright(rot, Preprocess(25, 10))  # upright room 6 x 4: 4 (stored: 2)
    assert got.size == (15, 25)


# -- JPEG draft (DCT-scaled decode) --------------------------------------------------------


def test_draft_scale_uses_the_upright_size_and_the_grey_decoder(tmp_path):
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[274] = 6  # stored 600 x 800, upright 800 x 600
    p.write_bytes(jpeg_bytes(texture(600, 800, seed=8), exif=exif.tobytes()))
    img, _ = dec.load_upright(p, Preprocess(100, 50))  # upright room 16 x 6: 1/4 (stored: 1/8)
    assert img.size == (200, 150)
    g = tmp_path / "g.jpg"
    g.write_bytes(jpeg_bytes(texture(800, 600, seed=9)))
    with Image.open(g) as im:
        im.draft("L", (100, 75))
        want = np.asarray(im.convert("L"))
    img, _ = dec.load_upright(g, Preprocess(50, 50, 1))  # 1/8, libjpeg's own grey
    assert img.mode == "L" and img.size == (100, 75)
    np.testing.assert_array_equal(np.asarray(img), want)
    assert dec._open(g, Preprocess(50, 50, 1), [(0, 0, 1, 1)]).mode == "L"  # libjpeg's Y only
    assert dec._open(g, Preprocess(50, 50, 3), [(0, 0, 1, 1)]).mode == "RGB"
    assert dec.load_upright(g, Preprocess(300, 300))[0].size == (400, 300)  # room 2.7 x 2: 1/2
    png = tmp_path / "p.png"
    texture(800, 600, seed=9).save(png)
    assert dec.load_upright(png, Preprocess(50, 50))[0].size == (800, 600)


@pytest.mark.parametrize("w, h", [(8, 4000), (4000, 8)])
def test_draft_never_asks_for_less_than_one_pixel(tmp_path, w, h):
    p = tmp_path / "thin.jpg"
    p.write_bytes(jpeg_bytes(Image.new("L", (w, h), 77)))
    img, _ = dec.load_upright(p, Preprocess(1, 1, 1, "pad"))  # 1/8: the 8-pixel side to 1
    assert img.size == (w // 8, h // 8)


@pytest.mark.parametrize("w, h", [(800, 600), (600, 800)])
def test_whole_image_is_the_default_region_for_the_dct_scale(tmp_path, w, h):
    p = tmp_path / "d.jpg"
    p.write_bytes(jpeg_bytes(texture(w, h, seed=16)))
    with Image.open(p) as im:  # room min(w, h) / 100 = 6: 1/4
        im.draft("RGB", (w // 4, h // 4))
        want = np.asarray(im.resize((100, 100), BILINEAR))
    np.testing.assert_array_equal(dec.decode(p, Preprocess(100, 100)).arrays[0], want)


# -- refusals: pixel cap, empty, truncated, garbage ----------------------------------------


def test_pixel_cap_counts_pixels_after_the_draft(tmp_path, monkeypatch):
    p = tmp_path / "c.jpg"
    p.write_bytes(jpeg_bytes(texture(800, 600, seed=10)))
    assert dec.decode(p, Preprocess(50, 50), max_pixels=7500).arrays  # 100 x 75 after 1/8
    with pytest.raises(ValueError) as err:
        dec.decode(p, Preprocess(50, 50), max_pixels=7499)
    assert str(err.value) == ("JPEG of 100×75 = 0.0 MP decodes over the 0.007499 MP pixel cap "
                              "(raise it with --max_pixels)")
    monkeypatch.setattr(dec, "max_pixels_default", 7499)
    with pytest.raises(ValueError, match="pixel cap"):
        dec.decode(p, Preprocess(50, 50))
    assert dec.decode(p, Preprocess(50, 50), max_pixels=None).arrays
    assert dec.decode(p, Preprocess(50, 50), max_pixels=0).arrays


def test_default_pixel_cap_is_24_megapixels(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("L", (4810, 5000)).save(p)  # 24.05 MP, printed 24.1
    with pytest.raises(ValueError, match=r"PNG of 4810×5000 = 24\.1 MP .* the 24 MP pixel cap"):
        dec.decode(p, Preprocess(8, 8))


def test_empty_file_is_one_clear_error(tmp_path):
    p = tmp_path / "e.jpg"
    p.write_bytes(b"")
    with pytest.raises(OSError, match=r"^empty file \(0 bytes\)$"):
        dec.decode(p, Preprocess(8, 8))


def _cut_jpeg(tmp_path) -> tuple[bytes, os.PathLike]:
    data = jpeg_bytes(texture(256, 256, seed=11))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) * 2 // 3])
    return data, p


def test_truncated_jpeg_decodes_with_a_warning_unless_strict(tmp_path):
    _, p = _cut_jpeg(tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    out = dec.decode(p, Preprocess(16, 16))
    assert out.warnings == [dec.TRUNCATED_WARNING] and out.arrays[0].shape == (16, 16, 3)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the process-wide switch is put back
    with pytest.raises(OSError, match="truncated"):
        dec.decode(p, Preprocess(16, 16), strict=True)
    assert dec.load_upright(p, Preprocess(16, 16))[1].warnings == [dec.TRUNCATED_WARNING]


def test_truncated_jpeg_when_pillow_already_tolerates_truncation(tmp_path, monkeypatch):
    data, p = _cut_jpeg(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert dec.decode(p, Preprocess(16, 16)).warnings == [dec.TRUNCATED_WARNING]
    with pytest.raises(OSError, match=r"^image file is truncated \(no JPEG end marker\)$"):
        dec.decode(p, Preprocess(16, 16), strict=True)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data)
    assert dec.decode(whole, Preprocess(16, 16), strict=True).warnings == []
    png = tmp_path / "whole.png"
    texture(16, 16).save(png)
    assert dec.decode(png, Preprocess(16, 16), strict=True).warnings == []


def test_cut_png_is_decoded_with_the_warning_too(tmp_path):
    buf = io.BytesIO()
    texture(64, 64, seed=12).save(buf, "PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(buf.getvalue()[:-200])
    assert dec.decode(p, Preprocess(8, 8)).warnings == [dec.TRUNCATED_WARNING]
    with pytest.raises(OSError):
        dec.decode(p, Preprocess(8, 8), strict=True)


def test_end_marker_is_found_across_a_chunk_boundary_and_not_in_app_segments(tmp_path):
    data = jpeg_bytes(texture(128, 128, seed=13))
    p = tmp_path / "t.jpg"
    p.write_bytes(data + bytes(100))
    assert not dec._jpeg_end_missing(p, chunk=101)  # FF | D9 split between two reads
    assert not dec._jpeg_end_missing(p, chunk=7)
    # a decoy end marker in an APP15 segment just before the scan (as in EXIF thumbnails)
    app = b"\xff\xef" + (2 + 6).to_bytes(2, "big") + b"\xff\xd9\xff\xd9\x00\x00"
    sos = data.index(b"\xff\xda")
    long_app = _segment(0xE1, bytes(300))  # a length over 255: both bytes count
    p.write_bytes(data[:2] + long_app + data[2:sos] + app + data[sos: len(data) // 2])
    assert dec._jpeg_end_missing(p, chunk=16)
    p.write_bytes(data[:sos])  # cut where the scan would start
    assert dec._jpeg_end_missing(p)
    assert not dec._jpeg_end_missing(tmp_path / "missing.jpg")


def test_tiny_whole_jpeg_has_its_end_marker(tmp_path):
    """A few bytes of scan data: the marker sits right after the scan header."""
    p = tmp_path / "tiny.jpg"
    p.write_bytes(jpeg_bytes(Image.new("L", (8, 8), 90)))
    assert not dec._jpeg_end_missing(p)
    p.write_bytes(p.read_bytes()[:-2])
    assert dec._jpeg_end_missing(p)


def test_only_truncation_errors_are_retried():
    assert dec._is_truncation(OSError("image file is truncated (3 bytes not processed)"))
    assert dec._is_truncation(OSError("broken data stream when reading image file"))
    assert not dec._is_truncation(OSError("cannot identify image file 'x.jpg'"))


def test_corrupt_png_data_is_decoded_with_the_warning(tmp_path):
    buf = io.BytesIO()
    texture(64, 64, seed=15).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 40: idat + 70] = bytes(30)  # Pillow: "broken data stream"
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    assert dec.decode(p, Preprocess(8, 8)).warnings == [dec.TRUNCATED_WARNING]
    with pytest.raises(OSError, match="broken data stream"):
        dec.decode(p, Preprocess(8, 8), strict=True)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _sof(h: int, w: int, sampling: list[int], marker: int = 0xC0) -> bytes:
    comps = b"".join(bytes([i + 1, s, 0]) for i, s in enumerate(sampling))
    return _segment(marker, bytes([8]) + h.to_bytes(2, "big") + w.to_bytes(2, "big")
                    + bytes([len(sampling)]) + comps)


def test_mcu_count_by_hand():
    assert dec._mcu_count(_sof(100, 200, [0x22, 0x11, 0x11])[4:]) == 13 * 7  # 16 x 16 MCUs
    assert dec._mcu_count(_sof(100, 200, [0x21, 0x11, 0x11])[4:]) == 13 * 13  # 16 x 8
    assert dec._mcu_count(_sof(100, 200, [0x12, 0x11, 0x11])[4:]) == 25 * 7  # 8 x 16
    assert dec._mcu_count(_sof(100, 200, [0x11])[4:]) == 25 * 13  # 8 x 8
    assert dec._mcu_count(_sof(100, 200, [0x00])[4:]) == 25 * 13  # invalid 0: taken as 1
    assert dec._mcu_count(_sof(100, 200, [])[4:]) == 25 * 13  # no components: 8 x 8


@pytest.mark.parametrize("scan, coverage", [
    (b"\x12" * 500 + b"\xff\xd9", 0.4),  # 500 of the 1250 bytes 10000 MCUs need
    (b"\x12" * 100 + b"\xff\x00\xff\xd3" + b"\x34" * 96 + b"\xff\xd9", 0.16),  # stuffing, RST
    (b"\x12" * 2000, 1.0),
    (b"\x12" * 625, 0.5),  # the file just ends
], ids=["marker", "stuffing", "enough", "end"])
def test_jpeg_coverage_by_hand(tmp_path, scan, coverage):
    p = tmp_path / "g.jpg"
    sos = _segment(0xDA, bytes([1, 1, 0, 0, 63, 0]))
    p.write_bytes(b"\xff\xd8" + _segment(0xE0, b"JFIF\x00" + bytes(9))
                  + _segment(0xE1, bytes(300))  # a length over 255: both bytes count
                  + _sof(800, 800, [0x11]) + sos + scan)
    assert dec.jpeg_coverage(p) == pytest.approx(coverage)
    p.write_bytes(b"\xff\xd8" + _sof(100, 200, [0x11]) + sos + scan)  # 325 MCUs: 41 bytes
    assert dec.jpeg_coverage(p) == 1.0  # 8 · 41 / 325 > 1, capped


def test_jpeg_coverage_is_one_when_it_cannot_tell(tmp_path):
    p = tmp_path / "x.jpg"
    sos = _segment(0xDA, bytes([1, 1, 0, 0, 63, 0]))
    p.write_bytes(b"\x89PNG" + bytes(100))
    assert dec.jpeg_coverage(p) == 1.0
    p.write_bytes(b"\xff\xd8" + _sof(800, 800, [0x11], marker=0xC9) + sos + b"\x12" * 10)
    assert dec.jpeg_coverage(p) == 1.0  # arithmetic coding: no bound
    p.write_bytes(b"\xff\xd8" + _sof(800, 800, [0x11]) + b"\x00\xda")  # no SOS marker
    assert dec.jpeg_coverage(p) == 1.0
    p.write_bytes(b"\xff\xd8" + _sof(800, 800, [0x11]))  # ends after the frame header
    assert dec.jpeg_coverage(p) == 1.0
    p.write_bytes(b"\xff\xd8" + _sof(800, 800, [0x11], marker=0xC9) + sos)  # no MCU count
    assert dec.jpeg_coverage(p) == 1.0
    short = _segment(0xC0, bytes([8, 0, 100, 0, 200, 3, 1, 0x11, 0]))  # 3 components, 1 given
    p.write_bytes(b"\xff\xd8" + short + sos + b"\x12" * 10)
    assert dec.jpeg_coverage(p) == 1.0


def test_garbage_after_a_huge_header_is_refused(tmp_path):
    data = bytearray(jpeg_bytes(texture(64, 64, seed=14, mode="L")))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = (4096).to_bytes(2, "big") + (4096).to_bytes(2, "big")
    p = tmp_path / "g.jpg"
    p.write_bytes(bytes(data))
    sos = data.index(b"\xff\xda")
    scan = len(data) - (sos + 2 + int.from_bytes(data[sos + 2: sos + 4], "big")) - 2
    share = round(100 * 8 * scan / (512 * 512))  # bytes between scan header and end marker
    assert 1 <= share <= 9  # against 512 x 512 MCUs of 8 x 8, at ≥ 1 bit each
    with pytest.raises(OSError, match=rf"^JPEG data ends early: at most {share} % of the "
                                      r"declared image is there \(most of it would be grey\)$"):
        dec.decode(p, Preprocess(8, 8))
    with pytest.raises(OSError, match=r"there$"):
        dec.decode(p, Preprocess(8, 8), strict=True)


def test_flat_tail_by_hand():
    arr = np.tile(np.arange(0, 28, 4, dtype=np.uint8), (10, 1))  # 10 x 7, every row textured
    arr[6:] = 128
    arr[7, 3] = 130  # max - min = 2 still counts as flat
    assert dec._flat_tail(Image.fromarray(arr)) == pytest.approx(0.4)
    arr[8, 3] = 131  # 3: a textured row
    assert dec._flat_tail(Image.fromarray(arr)) == pytest.approx(0.1)
    assert dec._flat_tail(Image.new("L", (5, 5), 7)) == 1.0
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2, 0, 0] = 9  # colour varies across the row's channels
    assert dec._flat_tail(Image.fromarray(rgb)) == pytest.approx(0.5)

"""Image-file data: sources, file checks, splits, decoding and transforms, on images made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from kerascls.data import transforms as T
from kerascls.data.decode import decode_record, loader, plan, plan_columns, preprocess, upright_size
from kerascls.data.pipeline import (
    PipelineOptions,
    class_weights,
    encode_labels,
    file_dataset,
    oversample,
)
from kerascls.data.records import Record, check_files, read_split_csv, write_split_csv
from kerascls.data.sources import load_source
from kerascls.data.splits import split_records


def _picture(h: int = 48, w: int = 64) -> np.ndarray:
    """An asymmetric colour picture: any wrong flip or rotation shows."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, np.zeros_like(x)], -1).astype(np.uint8)
    img[: h // 4, : w // 4] = (255, 255, 255)  # a white corner at top-left
    return img


def _save(path, array: np.ndarray, orientation: int = 1, mode: str | None = None, **kw):
    im = Image.fromarray(array)
    im = im.convert(mode) if mode else im
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    im.save(path, **kw)
    return str(path)


def _decode_eager(rec: Record, decoder: str = "tf") -> np.ndarray:
    """Full-size decode (the target is the image's or box's own size: no scaling at all)."""
    w, h = rec.bbox[2:] if rec.bbox else upright_size(rec)
    return decode_record(rec, (int(h), int(w)), decoder=decoder)


def _checked(*paths: str, labels=("a",)) -> list[Record]:
    return check_files([Record(p, labels) for p in paths]).records


@pytest.fixture
def awkward(tmp_path):
    """A folder of the files camera-trap data really contains."""
    pic = _picture()
    files = {"rgb.jpg": _save(tmp_path / "rgb.jpg", pic, quality=98),
             "rgba.png": _save(tmp_path / "rgba.png", pic, mode="RGBA"),
             "grey.png": _save(tmp_path / "grey.png", pic, mode="L"),
             "cmyk.jpg": _save(tmp_path / "cmyk.jpg", pic, mode="CMYK", quality=98),
             "pic.bmp": _save(tmp_path / "pic.bmp", pic)}
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "rgb.jpg").read_bytes()[:600])
    return tmp_path, files, pic


def test_check_files_reports_broken_ones_once(awkward):
    root, files, _ = awkward
    recs = [Record(str(root / n), ("a",)) for n in ["empty.jpg", "notes.jpg", "cut.jpg",
                                                    *files]]
    result = check_files(recs + recs[:3])
    reasons = {b.path.rsplit("/", 1)[-1]: b.reason for b in result.bad}
    assert set(reasons) == {"empty.jpg", "notes.jpg", "cut.jpg"}
    assert "zero-byte" in reasons["empty.jpg"] and "not an image" in reasons["notes.jpg"]
    assert "truncated" in reasons["cut.jpg"].lower()
    assert {r.path for r in result.records} == set(files.values())


@pytest.mark.parametrize("name", ["rgb.jpg", "rgba.png", "grey.png", "cmyk.jpg", "pic.bmp"])
def test_formats_decode_to_rgb(awkward, name):
    _, files, pic = awkward
    (rec,) = _checked(files[name])
    got = _decode_eager(rec).astype(float)
    want = pic.astype(float)
    if name == "grey.png":
        want = np.asarray(Image.fromarray(pic).convert("L").convert("RGB"), float)
    assert got.shape == pic.shape and np.abs(got - want).mean() < 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    path = _save(tmp_path / f"o{orientation}.jpg", _picture(), orientation, quality=98)
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), float)
    (rec,) = _checked(path)
    got = _decode_eager(rec)
    assert got.shape == want.shape and np.abs(got - want).mean() < 3
    pre = preprocess(got.shape[:2])
    load = loader("tf", [plan(rec, pre)], pre)
    ds = tf.data.Dataset.from_tensor_slices(plan_columns([plan(rec, pre)])).map(
        lambda *cols: load(tf.constant(path), *cols))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), got)


def test_dct_scaled_decode_and_pillow_path_agree(tmp_path):
    big = np.asarray(Image.fromarray(_picture()).resize((800, 600)))
    path = _save(tmp_path / "big.jpg", big, 6, quality=95)
    (rec,) = _checked(path)
    p = plan(rec, preprocess((64, 64)))
    assert p.branch == 3 and p.box == (0, 0, 75, 100)  # 1/8 scale: 600/8 = 75 ≥ 64, upright
    graph = decode_record(rec, (64, 64), decoder="tf")
    pil = decode_record(rec, (64, 64), decoder="pil")
    assert graph.shape == pil.shape == (64, 64, 3)
    assert np.abs(graph.astype(float) - pil).mean() < 1


def test_box_crop_is_in_upright_pixels(tmp_path):
    pic = _picture(96, 128)
    path = _save(tmp_path / "p.png", pic)
    (rec,) = check_files([Record(path, ("a",), bbox=(0, 0, 32, 24))]).records
    np.testing.assert_array_equal(_decode_eager(rec), pic[:24, :32])


@pytest.mark.parametrize("mode", T.RESIZE_MODES)
def test_resize_modes_eager_and_in_map(mode):
    image = tf.constant(_picture(40, 80))
    eager = T.resize(image, (32, 32), mode).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(image).map(
        lambda x: T.resize(x, (32, 32), mode)))).numpy()
    assert eager.shape == (32, 32, 3) and eager.dtype == np.float32
    np.testing.assert_allclose(eager, mapped, atol=1e-4)
    if mode == "pad":   # letterbox: zero rows above and below
        assert eager[:7].max() == 0 and eager[-7:].max() == 0 and eager[16].max() > 0
    if mode == "crop":  # the centre square: the white corner is cut away
        assert eager[0, 0].min() < 200


def test_random_resized_crop_eager_and_in_map():
    image = tf.constant(_picture(), tf.float32)
    seed = tf.constant([1, 2], tf.int64)
    eager = T.random_resized_crop(image, (24, 24), seed).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(image).map(
        lambda x: T.random_resized_crop(x, (24, 24), seed)))).numpy()
    assert eager.shape == (24, 24, 3)
    np.testing.assert_allclose(eager, mapped, atol=1e-3)  # stateless: same seed, same crop


@pytest.mark.parametrize("name", ["flip", "randaugment", "erasing", "mixup", "cutmix"])
def test_keras_augmentations_eager_and_in_map(name):
    images = tf.constant(np.stack([_picture(32, 32)] * 4), tf.float32)
    labels = tf.one_hot([0, 1, 2, 0], 3)
    fn = T.batch_augmenter([name], seed=1)
    x, y = fn(images, labels)
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 3)
    x2, y2 = next(iter(tf.data.Dataset.from_tensors((images, labels)).map(fn)))
    assert x2.shape == (4, 32, 32, 3) and y2.shape == (4, 3)
    for out in (x, x2):
        assert 0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.5
    np.testing.assert_allclose(tf.reduce_sum(y2, -1), 1, atol=1e-5)  # mixed labels sum to 1


def test_unknown_augmentation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown augmentation 'zoom'"):
        T.parse_augment("flip,zoom")


def _camera_records(n_loc: int = 8, per: int = 6) -> list[Record]:
    return [Record(f"/x/{loc}_{i}.jpg", (f"c{(loc + i) % 3}",), location=f"site{loc}",
                   seq_id=f"s{loc}_{i // 2}") for loc in range(n_loc) for i in range(per)]


def test_split_by_location_never_shares_a_site():
    recs = _camera_records()
    parts = split_records(recs, 0.25, 0.25, seed=3)
    sites = {s: {r.location for r in v} for s, v in parts.items()}
    assert all(sites.values())
    assert not (sites["train"] & sites["val"] or sites["train"] & sites["test"]
                or sites["val"] & sites["test"])
    assert sum(map(len, parts.values())) == len(recs)
    assert parts == split_records(recs, 0.25, 0.25, seed=3)  # seeded, reproducible
    assert {c for r in parts["train"] for c in r.labels} == {"c0", "c1", "c2"}


def test_split_by_sequence_when_sites_are_unknown():
    recs = [Record(r.path, r.labels, seq_id=r.seq_id) for r in _camera_records()]
    parts = split_records(recs, 0.2, 0.2, seed=0)
    seqs = [{r.seq_id for r in v} for v in parts.values()]
    assert sum(map(len, seqs)) == len(set().union(*seqs))


def test_split_file_round_trip(tmp_path):
    recs = [Record("/a.jpg", ("x", "y"), "L1", "S1", "2020-01-01 10:00:00", (1.0, 2.0, 3.0, 4.0)),
            Record("/b.jpg", ("x",))]
    write_split_csv(recs, tmp_path / "s.csv")
    assert read_split_csv(tmp_path / "s.csv") == recs


def _folder(root, counts: dict[str, int]):
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            _save(root / cls / f"{i}.jpg", _picture(), quality=90)
    return root


def test_folder_source_and_errors(tmp_path):
    src = load_source(f"folder:{_folder(tmp_path / 'd', {'cat': 2, 'dog': 3})}")
    assert src.class_names == ["cat", "dog"] and len(src.records) == 5
    (tmp_path / "d" / "owl").mkdir()
    with pytest.raises(ValueError, match="class 'owl' has no image"):
        load_source(f"folder:{tmp_path / 'd'}")
    with pytest.raises(ValueError, match="label 'cat' .* not in the class list"):
        load_source(f"folder:{_folder(tmp_path / 'e', {'cat': 1})}", classes=["dog"])
    broken = tmp_path / "f" / "cat"
    broken.mkdir(parents=True)
    (broken / "x.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="no readable image"):
        load_source(f"folder:{tmp_path / 'f'}")
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("ftp:somewhere")


def test_folder_with_split_folders(tmp_path):
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        _folder(tmp_path / split, {"a": n, "b": n})
    src = load_source(f"folder:{tmp_path}")
    parts = src.splits(0.1, 0.1, 0)
    assert {k: len(v) for k, v in parts.items()} == {"train": 8, "val": 2, "test": 4}


def test_csv_multilabel_binary_and_weights(tmp_path):
    for i in range(4):
        _save(tmp_path / f"{i}.png", _picture())
    (tmp_path / "l.csv").write_text("filepath,label,location\n0.png,deer|fox,A\n"
                                    "1.png,deer,A\n2.png,empty,B\n3.png,deer,B\n")
    src = load_source(f"csv:{tmp_path / 'l.csv'}")
    assert src.multilabel and src.records[0].location == "A"
    y = encode_labels(src.records, src.class_names, "multilabel")
    np.testing.assert_array_equal(y, [[1, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="task=multilabel"):
        encode_labels(src.records, src.class_names, "multiclass")
    single = src.records[1:]
    assert encode_labels(single, ["empty", "deer"], "binary").ravel().tolist() == [1, 0, 1]
    assert class_weights(single, ["empty", "deer"]) == {0: 1.5, 1: 0.75}
    assert sorted(r.labels[0] for r in oversample(single)) == ["deer", "deer", "empty", "empty"]


def test_file_dataset_batches_deterministically(tmp_path):
    src = load_source(f"folder:{_folder(tmp_path / 'd', {'a': 3, 'b': 3})}")
    y = encode_labels(src.records, src.class_names, "multiclass", one_hot=True)
    opts = PipelineOptions((32, 32), batch_size=4, training=True, deterministic=True,
                           augment=("flip", "rrc", "mixup"), resize="crop")
    runs = [[(x.numpy(), t.numpy()) for x, t in file_dataset(src.records, y, opts)]
            for _ in range(2)]
    assert [x.shape for x, _ in runs[0]] == [(4, 32, 32, 3), (2, 32, 32, 3)]
    for (x1, y1), (x2, y2) in zip(*runs):
        np.testing.assert_allclose(x1, x2, atol=1e-3)
        np.testing.assert_allclose(y1, y2, atol=1e-6)


def test_bad_files_json_and_splits_written(tmp_path):
    from kerascls.data.runs import prepare_splits
    from kerascls.training.config import TrainConfig
    root = _folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "zero.jpg").write_bytes(b"")
    src = load_source(f"folder:{root}")
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(data=f"folder:{root}", val_fraction=0.2, test_fraction=0.2,
                      allow_duplicate_files=True)  # _folder saves one picture ten times
    parts = prepare_splits(src, cfg, run)
    bad = json.loads((run / "bad_files.json").read_text())
    assert [b["path"].rsplit("/", 1)[-1] for b in bad] == ["zero.jpg"]
    for name, recs in parts.items():
        assert [r.path for r in read_split_csv(run / "splits" / f"{name}.csv")] == \
            [r.path for r in recs]

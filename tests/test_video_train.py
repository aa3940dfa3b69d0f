"""Training on videos (issue 27): every sampled frame of a clip is an example with the clip's
label, sampled by the device's rule, and a clip never straddles splits.

Clips are rendered here (tests/video_data.py: a shape crossing a textured scene, in MPEG-4/AVI,
H.264/MP4 and MJPEG/MKV); expected frame numbers are worked out by hand from the sampling rule
(a 16-frame clip at 4 fps sampled every 0.5 s: frames 0, 2, …, 14), and expected pixels come
from the rendered source frames, not from the decoder under test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerascls.data.pipeline import PipelineOptions, encode_labels, file_dataset
from kerascls.data.records import VideoRule, read_split_csv, write_split_csv
from kerascls.data.sources import load_source
from kerascls.data.splits import split_records
from tests.video_data import CLASSES, encode, frames_of, render_videos

RULE = VideoRule(0.5, 32)  # 16 frames at 4 fps: t = 0, 0.25, … 3.75 s → every 2nd frame
EVERY_SECOND = tuple(range(0, 16, 2))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return render_videos(tmp_path_factory.mktemp("clips"), per_class=3, sites=3)


def _frames_by_path(records) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        out.setdefault(r.path, []).append(r.frame)
    return out


def test_csv_videos_become_one_example_per_sampled_frame(clips):
    src = load_source(f"csv:{clips}", video=RULE)
    rows = list(csv.DictReader(open(clips)))
    by_path = _frames_by_path(src.records)
    assert len(by_path) == len(rows) == 9 and not src.bad
    for row in rows:
        path = str(clips.parent / row["filepath"])
        assert by_path[path] == list(EVERY_SECOND), path  # sampled by presentation time
        assert {r.labels for r in src.records if r.path == path} == {(row["label"],)}
        assert {r.location for r in src.records if r.path == path} == {row["location"]}
    assert {Path(p).suffix.lower() for p in by_path} == {".avi", ".mp4", ".mkv"}


def test_max_frames_spreads_the_samples_evenly(clips):
    # 8 candidates (0 … 3.5 s), 3 kept: candidates round(j·7/2) = 0, 4 (3.5 rounds up), 7
    src = load_source(f"csv:{clips}", video=VideoRule(0.5, 3))
    assert set(map(tuple, _frames_by_path(src.records).values())) == {(0, 8, 14)}


def test_folder_source_takes_videos_beside_photos(tmp_path):
    for k, kind in enumerate(("bar", "pole")):
        d = tmp_path / kind
        d.mkdir()
        encode(d / f"{kind}.MP4", frames_of(kind, 16, 64, 48, k), "libx264",
               {"preset": "ultrafast"}, 4)
        Image.fromarray(frames_of(kind, 3, 64, 48, 9)[1]).save(d / f"{kind}.jpg", quality=90)
    (tmp_path / "bar" / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI junk")
    src = load_source(f"folder:{tmp_path}", video=RULE)
    frames = _frames_by_path(src.records)
    assert frames[str(tmp_path / "bar" / "bar.MP4")] == list(EVERY_SECOND)
    assert frames[str(tmp_path / "pole" / "pole.jpg")] == [-1]  # a photo stays one example
    (bad,) = src.bad  # a broken video is recorded and skipped, never a crash
    assert bad.path.endswith("broken.avi") and "video" in bad.reason
    # photos and video frames in one dataset: each example is what the device feeds the model
    from kerascls_edge.decode import Preprocess, decode
    from kerascls_edge.video import decode_frames
    pre = Preprocess(30, 40, 3, "pad", "bilinear")
    y = encode_labels(src.records, src.class_names, "multiclass")
    got = np.concatenate([x.numpy() for x, _ in file_dataset(
        src.records, y, PipelineOptions((30, 40), 8, resize="pad", video=RULE, decoder="pil"))])
    device = {p: {f.frame_number: f.pixels for f in decode_frames(p, pre, 0.5, 32).frames}
              for p in frames if p.endswith(".MP4")}
    for r, image in zip(src.records, got):
        want = device[r.path][r.frame] if r.frame >= 0 else decode(r.path, pre).arrays[0]
        np.testing.assert_array_equal(image, want)


def test_splits_keep_every_frame_of_a_video_and_every_video_of_a_site(clips, tmp_path):
    src = load_source(f"csv:{clips}", video=RULE)
    parts = split_records(src.records, 0.3, 0.3, seed=1)
    home: dict[str, str] = {}
    for split, recs in parts.items():
        for r in recs:
            for key in (r.path, r.location):
                assert home.setdefault(key, split) == split, key
    # a split list names each frame, and reads back exactly
    write_split_csv(parts["train"], tmp_path / "train.csv")
    def key(r):
        return (r.path, r.labels, r.location, r.frame)
    assert [key(r) for r in read_split_csv(tmp_path / "train.csv")] == \
        [key(r) for r in parts["train"]]


def test_training_pixels_are_the_rendered_frames(clips):
    """The pipeline's frame i is rendered frame i (the closest of all 16), within codec loss."""
    src = load_source(f"csv:{clips}", video=RULE)
    recs = [r for r in src.records if r.path.endswith(".avi")][:8]  # one clip, MPEG-4
    (path,) = {r.path for r in recs}
    name = Path(path).name
    kind, j = name.split("_")[0], int(name.split("_")[1])
    seed = CLASSES.index(kind) * 1000 + j
    rendered = [np.asarray(Image.fromarray(a).resize((48, 32), Image.BILINEAR), np.float32)
                for a in frames_of(kind, 16, 96, 64, seed)]
    opts = PipelineOptions((32, 48), 8, video=RULE)
    y = encode_labels(recs, src.class_names, "multiclass")
    got = np.concatenate([x.numpy() for x, _ in file_dataset(recs, y, opts)])
    for r, image in zip(recs, got):
        errors = [np.abs(image - ref).mean() for ref in rendered]
        assert int(np.argmin(errors)) == r.frame and errors[r.frame] < 12, (r.frame, errors)


def test_camtrapdp_video_media_with_media_and_event_observations(tmp_path):
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    for name, kind, seed in (("a.AVI", "bar", 1), ("b.mp4", "pole", 2), ("c.mp4", "bar", 3)):
        codec = "mpeg4" if name.endswith("AVI") else "libx264"
        encode(media_dir / name, frames_of(kind, 16, 64, 48, seed), codec,
               {"preset": "ultrafast"} if codec == "libx264" else {}, 4)
    _table(tmp_path / "deployments.csv", ["deploymentID", "locationID"],
           [["d1", "L1"], ["d2", "L2"]])
    _table(tmp_path / "media.csv",
           ["mediaID", "deploymentID", "timestamp", "filePath", "fileMediatype"],
           [["m1", "d1", "2024-05-01T10:00:00Z", "media/a.AVI", "video/x-msvideo"],
            ["m2", "d2", "2024-05-01T11:00:00Z", "media/b.mp4", "video/mp4"],
            ["m3", "d2", "2024-05-02T11:00:00Z", "media/c.mp4", "video/mp4"]])
    obs_cols = ["observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
                "observationLevel", "observationType", "scientificName", "bboxX", "bboxY",
                "bboxWidth", "bboxHeight"]
    _table(tmp_path / "observations.csv", obs_cols, [
        ["o1", "d1", "m1", "e1", "2024-05-01T10:00:00Z", "2024-05-01T10:00:10Z", "media",
         "animal", "Bar bar", "0.1", "0.1", "0.5", "0.5"],  # a box on a video: whole video
        ["o2", "d2", "", "e2", "2024-05-01T10:59:00Z", "2024-05-01T11:01:00Z", "event",
         "animal", "Pole pole", "", "", "", ""]])  # event-level: labels m2, not m3
    pkg = tmp_path / "datapackage.json"
    pkg.write_text(json.dumps({"resources": [
        {"name": n, "path": f"{n}.csv"} for n in ("deployments", "media", "observations")]}))
    src = load_source(f"camtrapdp:{pkg}", crop_boxes=True, video=RULE)
    frames = _frames_by_path(src.records)
    a, b = str(media_dir / "a.AVI"), str(media_dir / "b.mp4")
    assert set(frames) == {a, b}  # c.mp4 is outside every event: no label, not trained on
    assert frames[a] == frames[b] == list(EVERY_SECOND)
    assert {(r.path, r.labels, r.location, r.bbox) for r in src.records} == {
        (a, ("Bar bar",), "L1", None), (b, ("Pole pole",), "L2", None)}


def _table(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_the_bundle_contract_carries_the_sampling_rule(tmp_path):
    import keras

    from kerascls.config import TrainConfig
    from kerascls.models.registry import create_model
    from kerascls.runs import LoadedRun
    from kerascls.tflite.export import contract
    from kerascls_edge import video
    from kerascls_edge.bundle import spec_from_json

    model = create_model("small_cnn", 3, (16, 16, 3), widths=[4, 8, 8])
    cfg = TrainConfig(arch="small_cnn", data="csv:x.csv", class_names=["a", "b", "c"],
                      input_shape=[16, 16, 3], frame_every=0.25, max_frames=7)
    meta = contract(LoadedRun(model, cfg, tmp_path / "model.keras"), "int8")
    assert meta["input"]["video"] == {"frame_every": 0.25, "max_frames": 7}
    spec = spec_from_json(tmp_path / "model.tflite", meta, cfg.class_names)
    assert (spec.video["frame_every"], spec.video["max_frames"]) == (0.25, 7)  # device reads it
    # a photo run's bundle says the defaults, the device's own
    photo = contract(LoadedRun(model, TrainConfig(class_names=["a", "b", "c"]), tmp_path), "int8")
    assert photo["input"]["video"] == {"frame_every": video.DEFAULT_FRAME_EVERY,
                                       "max_frames": video.DEFAULT_MAX_FRAMES} \
        == {"frame_every": 1.0, "max_frames": 32}
    keras.backend.clear_session()


ZAMBA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camtrap" / \
    "zamba_videos"


@pytest.mark.skipif(not ZAMBA.is_dir(), reason=f"shared zamba clips not found ({ZAMBA})")
def test_zamba_training_frames_are_the_frames_the_device_classifies(tmp_path):
    """Acceptance: for every shared clip (AVI/MPEG-4, MP4/H.264, 1 and 30 fps, spaces and
    non-ASCII paths) the frames the training pipeline reads are the device's, by index and
    pixel, with the device's preprocessing read from the bundle contract export writes."""
    import keras

    from kerascls.config import TrainConfig
    from kerascls.models.registry import create_model
    from kerascls.runs import LoadedRun
    from kerascls.tflite.export import contract
    from kerascls_edge.bundle import spec_from_json
    from kerascls_edge.decode import Preprocess
    from kerascls_edge.video import decode_frames, is_video

    clips = sorted(p.resolve() for p in ZAMBA.rglob("*") if p.is_file() and is_video(p))
    assert len(clips) == 17
    labels = tmp_path / "labels.csv"  # zamba's clips carry no ground truth: placeholders
    _table(labels, ["filepath", "label"], [[str(p), "ab"[i % 2]] for i, p in enumerate(clips)])
    cfg = TrainConfig(data=f"csv:{labels}", class_names=["a", "b"], input_shape=[40, 56, 3],
                      resize="crop", frame_every=2.0, max_frames=12)
    model = create_model("small_cnn", 2, (40, 56, 3), widths=[4, 8, 8])
    spec = spec_from_json(tmp_path / "model.tflite",
                          contract(LoadedRun(model, cfg, tmp_path / "model.keras"), "int8"),
                          cfg.class_names)
    keras.backend.clear_session()
    pre = Preprocess(spec.height, spec.width, spec.channels, spec.resize, spec.interpolation)
    rule = VideoRule(spec.video["frame_every"], spec.video["max_frames"])
    src = load_source(cfg.data, video=rule)
    assert not src.bad and {Path(r.path) for r in src.records} == set(clips)
    y = encode_labels(src.records, src.class_names, "multiclass")
    opts = PipelineOptions((40, 56), 16, resize="crop", video=rule)
    got = np.concatenate([x.numpy() for x, _ in file_dataset(src.records, y, opts)])
    for clip in clips:
        device = decode_frames(clip, pre, rule.frame_every, rule.max_frames)
        rows = [i for i, r in enumerate(src.records) if Path(r.path) == clip]
        assert [src.records[i].frame for i in rows] == device.frames_processed, clip
        assert 1 <= len(rows) <= 12
        np.testing.assert_array_equal(got[rows], np.stack([f.pixels for f in device.frames]))


def test_md_source_leaves_video_entries_out_and_says_so(clips, caplog):
    # MegaDetector video results box detector frames the sampling rule need not take: md:
    # trains on the photos' boxes and counts the videos it left out
    from kerascls.data.camtrap_sources import CropRule, DetectionOptions, md_source
    from tests.pictures import photo

    root = clips.parent
    photo(root / "IMG_0001.JPG", seed=3, size=(131, 97))
    video, other = [r["filepath"] for r in csv.DictReader(open(clips))][:2]
    box = {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4]}
    md = {"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
          "images": [{"file": video, "frame_rate": 4.0, "frames_processed": [0],
                      "detections": [{**box, "frame_number": 0}]},
                     {"file": "IMG_0001.JPG", "detections": [box]},
                     {"file": other, "frame_rate": 4.0, "frames_processed": [0, 4],
                      "detections": [{**box, "frame_number": 4}]}]}
    (root / "md.json").write_text(json.dumps(md))
    with open(root / "md_labels.csv", "w") as f:
        f.write(f"filepath,label\n{video},deer\nIMG_0001.JPG,fox\n{other},deer\n")
    opts = DetectionOptions(0.2, ("animal",), CropRule(0.0, False, 0), "")
    with caplog.at_level("WARNING"):
        src = md_source(f"{root / 'md.json'}:{root / 'md_labels.csv'}", opts)
    assert [(Path(r.path).name, r.labels, r.bbox) for r in src.records] == [
        ("IMG_0001.JPG", ("fox",), (0.1, 0.2, 0.3, 0.4))]
    assert ": 2 video entries are left out" in caplog.text

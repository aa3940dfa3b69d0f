"""`kerascls-edge predict` on videos: listing, per-frame and per-video results, outputs.

The model is the shared Coral int8 MobileNet (a real third-party .tflite); the per-video label
is checked against the mean of frame probabilities computed here from the same frames, and
the MegaDetector file against MegaDetector's own validator.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerascls_edge import video
from tests.shared_paths import CORAL_MODEL, DATA, coral_tflite
from tests.video_clips import render, texture

ZAMBA = DATA / "camtrap" / "zamba_videos"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    if not CORAL_MODEL.is_file():
        pytest.skip(f"shared data missing: {CORAL_MODEL}")
    return coral_tflite(tmp_path_factory.mktemp("coral"))


def edge(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`kerascls-edge ARGS` in a child with a timeout: a hang or a traceback fails the test."""
    r = subprocess.run([sys.executable, "-m", "kerascls_edge", *args, "--progress_every", "-1"],
                       capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def validate(path: Path) -> None:
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    res = validate_batch_results(str(path))["validation_results"]
    assert res["errors"] == [] and res["warnings"] == [], res


def test_zamba_clips_every_clip_gets_a_result(model, tmp_path):
    if not ZAMBA.is_dir():
        pytest.skip(f"shared data missing: {ZAMBA}")
    out = tmp_path / "md.json"
    r = edge("predict", str(model), str(ZAMBA), "--recursive", "-o", str(out))
    assert r.returncode == 0, r.stderr
    validate(out)
    md = json.loads(out.read_text())
    clips = sorted(p for p in ZAMBA.rglob("*") if video.is_video(p))
    assert sorted(e["file"] for e in md["images"]) == sorted(
        p.relative_to(ZAMBA).as_posix() for p in clips)
    from kerascls_edge.classifier import Classifier

    clf = Classifier(model, threads=1)
    for entry in md["images"]:
        assert "failure" not in entry and entry["frame_rate"] > 0
        d = video.decode_video(ZAMBA / entry["file"], clf.preprocess)
        assert entry["frames_processed"] == d.video.frames_processed
        v = entry["video"]
        assert v["rule"] == "mean" and v["frames_used"] == len(d.arrays)
        assert [f["frame_number"] for f in v["frames"]] == entry["frames_processed"]
        assert {det["frame_number"] for det in entry["detections"]} <= \
            set(entry["frames_processed"])
        mean = clf.predict_array(np.stack(d.arrays)).mean(axis=0)  # the documented rule
        assert int(v["classifications"][0][0]) == int(np.argmax(mean))
        assert v["classifications"][0][1] == pytest.approx(mean.max(), abs=1e-4)


def _card(root: Path) -> dict[str, int]:
    """A camera card: rendered clips of two codecs, a photo, broken videos, in subfolders.
    Returns each video's frame count."""
    (root / "site A" / "cam1").mkdir(parents=True)
    (root / "site B").mkdir()
    render(root / "site A" / "cam1" / "CLIP0001.AVI", "mpeg4", 47)
    render(root / "site A" / "clip2.mp4", "libx264", 25, size=(120, 80))
    render(root / "site B" / "clip3.MKV", "mjpeg", 12)
    Image.fromarray(texture(75, 101, 5)).save(root / "site B" / "photo.jpg", quality=90)
    (root / "site B" / "empty.mp4").write_bytes(b"")
    (root / "site B" / "garbage.avi").write_bytes(np.random.default_rng(3).bytes(4000))
    (root / "notes.txt").write_text("not an input")
    return {"site A/cam1/CLIP0001.AVI": 47, "site A/clip2.mp4": 25, "site B/clip3.MKV": 12}


def test_card_with_videos_photos_and_broken_files(model, tmp_path):
    card = tmp_path / "card"
    _card(card)
    out = tmp_path / "run.json"
    r = edge("predict", str(model), str(card), "--recursive", "-o", str(out),
             "--checkpoint_every", "1", "--keep_checkpoint")
    assert r.returncode == 0, r.stderr
    validate(out)
    entries = {e["file"]: e for e in json.loads(out.read_text())["images"]}
    assert sorted(entries) == ["site A/cam1/CLIP0001.AVI", "site A/clip2.mp4",
                               "site B/clip3.MKV", "site B/empty.mp4", "site B/garbage.avi",
                               "site B/photo.jpg"]
    # 10 fps clips, a frame a second: 4.6 s -> 0..4 s, 2.4 s -> 0..2 s, 1.1 s -> 0, 1 s
    assert entries["site A/cam1/CLIP0001.AVI"]["frames_processed"] == [0, 10, 20, 30, 40]
    assert entries["site A/clip2.mp4"]["frames_processed"] == [0, 10, 20]
    assert entries["site B/clip3.MKV"]["frames_processed"] == [0, 10]
    for name in ("site B/empty.mp4", "site B/garbage.avi"):
        e = entries[name]
        assert e["failure"].startswith("VideoError: ") and e["detections"] is None
        assert e["frame_rate"] == -1.0 and e["frames_processed"] == []
    assert "frame_rate" not in entries["site B/photo.jpg"]
    # the journal holds one record per video (a video is one item)
    recs = [json.loads(line) for p in sorted((tmp_path / "run.json.partial").glob("part-*"))
            for line in p.read_text().splitlines() if line.strip()]
    assert sorted(r["file"] for r in recs) == sorted(entries)


def test_csv_rows_and_sampling_flags(model, tmp_path):
    card = tmp_path / "card"
    frames = _card(card)
    out = tmp_path / "run.csv"
    r = edge("predict", str(model), str(card), "--recursive", "-o", str(out),
             "--frame_every", "0.5", "--max_frames", "2", "--sort_into",
             str(tmp_path / "sorted"), "--sort_threshold", "0")
    assert r.returncode == 0, r.stderr
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    # 0.5 s candidates, at most 2 kept: the first and the last candidate
    want = {"site A/cam1/CLIP0001.AVI": ["0", "45"], "site A/clip2.mp4": ["0", "20"],
            "site B/clip3.MKV": ["0", "10"]}
    for name in frames:
        video_row, *frame_rows = by_file[name]
        assert video_row["row"] == "video" and video_row["frames_used"] == "2"
        assert video_row["label"] and float(video_row["confidence"]) > 0
        assert [r["row"] for r in frame_rows] == ["frame", "frame"]
        assert [r["frame_number"] for r in frame_rows] == want[name]
        assert frame_rows[0]["frame_time"] == "0.000"
    # --sort_into files a video by its video row's label, not by one of its frames'
    from kerascls_edge.sortinto import _folder_name

    with open(tmp_path / "sorted" / "manifest.csv", newline="", encoding="utf-8") as f:
        folders = {Path(r["source"]).relative_to(card).as_posix(): r["folder"]
                   for r in csv.DictReader(f)}
    for name in frames:
        assert folders[name] == _folder_name(by_file[name][0]["label"], 255)
    photo, = by_file["site B/photo.jpg"]
    assert photo["row"] == "" and photo["label"]
    failed, = by_file["site B/garbage.avi"]
    assert failed["failure"].startswith("VideoError") and failed["row"] == "video"


def test_resume_refuses_other_sampling(model, tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    render(card / "a.avi", "mpeg4", 30)
    out = tmp_path / "run.json"
    assert edge("predict", str(model), str(card), "-o", str(out),
                "--keep_checkpoint").returncode == 0
    r = edge("predict", str(model), str(card), "-o", str(out), "--resume", "--max_frames", "3")
    assert r.returncode == 2 and "--max_frames" in r.stderr, r.stderr
    r = edge("predict", str(model), str(card), "-o", str(out), "--resume")
    assert r.returncode == 0 and json.loads(r.stdout)["resumed"] == 1, r.stderr


def test_output_with_a_video_suffix_is_refused(model, tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    render(card / "a.avi", "mpeg4", 12)
    r = edge("predict", str(model), str(card), "-o", str(tmp_path / "out.mp4"))
    assert r.returncode == 2 and "video suffix" in r.stderr


def test_corrupt_video_record_in_checkpoint_is_named_and_redone(model, tmp_path):
    """A checkpoint part whose video block names a class the model lacks is set aside and the
    video classified again (not written out to crash the CSV writer or mislead a reader)."""
    card = tmp_path / "card"
    card.mkdir()
    render(card / "a.avi", "mpeg4", 30)
    render(card / "b.mp4", "libx264", 30)
    out = tmp_path / "run.csv"
    assert edge("predict", str(model), str(card), "-o", str(out), "--checkpoint_every", "1",
                "--keep_checkpoint").returncode == 0
    out.unlink()
    part = sorted((tmp_path / "run.csv.partial").glob("part-*.jsonl"))[0]
    rec = json.loads(part.read_text())
    rec["video"]["frames"][-1]["classifications"][0][0] = "99999"  # only the video block
    part.write_text(json.dumps(rec) + "\n")
    r = edge("predict", str(model), str(card), "-o", str(out), "--resume")
    assert r.returncode == 0 and part.name in r.stderr and "corrupt" in r.stderr, r.stderr
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert sorted((r["file"], r["row"]) for r in rows) == [
        ("a.avi", "frame"), ("a.avi", "frame"), ("a.avi", "frame"), ("a.avi", "video"),
        ("b.mp4", "frame"), ("b.mp4", "frame"), ("b.mp4", "frame"), ("b.mp4", "video")]

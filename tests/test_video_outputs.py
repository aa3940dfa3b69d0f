"""Videos through every output of `kerascls-edge predict` (issue 27, the device side).

The sampling contract in model.json, the per-video rule, MegaDetector video results as
`--detections`, Camtrap DP (checked by frictionless), the review page's frame strip,
`--sort_into` and `--resume`. Expectations are hand-worked or come from an independent
reading: a plain sequential PyAV decode of every frame (not kerascls_edge.video), MegaDetector's
validator and the standard's own schemas. Clips are rendered by tests/video_clips.py.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from kerascls_edge import video
from kerascls_edge.cli import main
from tests.browser import CHROMIUM, browser
from tests.camtrapdp_check import STANDARD, rows, validate
from tests.shared_paths import CORAL_MODEL, DATA, coral_labels
from tests.video_clips import render

av = pytest.importorskip("av")
ZAMBA = DATA / "camtrap" / "zamba_videos"
needs_coral = pytest.mark.skipif(not CORAL_MODEL.is_file(),
                                 reason=f"shared data missing: {CORAL_MODEL}")


def bundle(d: Path, input_video: dict | None = None, crop: dict | None = None) -> Path:
    """A bundle folder around the shared Coral model: model.json says `input.video` (and
    `crop`) when given; `background` (ImageNet's class 0) is the empty class."""
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "model.tflite").exists():
        (d / "model.tflite").symlink_to(CORAL_MODEL)
    coral_labels(d / "labels.txt")
    meta: dict = {"format": "kerascls-bundle", "format_version": 1, "name": "coral",
                  "input": {"height": 224, "width": 224, "resize": "stretch"},
                  "output": {"activation": "softmax"}, "empty_classes": ["background"]}
    if input_video is not None:
        meta["input"]["video"] = input_video
    if crop is not None:
        meta["crop"] = crop
    (d / "model.json").write_text(json.dumps(meta))
    return d


def edge(capsys, *args: str) -> tuple[int, str, str]:
    """`kerascls-edge ARGS` in this process (fast); (rc, stdout, stderr)."""
    extra = ["--progress_every", "-1", "--threads", "1"] if args[0] == "predict" else []
    rc = main([*args, *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return rc, out, err


def validate_md(path: Path) -> None:
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    res = validate_batch_results(str(path))["validation_results"]
    assert res["errors"] == [] and res["warnings"] == [], res


def frame_image(path: Path, number: int):
    """Frame `number` (0-based, presentation order) by a plain sequential decode, with the
    documented platform-exact settings (simple IDCT, bit-exact RGB conversion)."""
    from av.video.reformatter import Interpolation as I  # noqa: E741
    from PIL import Image

    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.options = {"flags": "+bitexact", "idct": "simple"}
        for i, f in enumerate(c.decode(video=0)):
            if i == number:
                return Image.fromarray(f.to_ndarray(
                    format="rgb24", interpolation=I.BILINEAR | I.BITEXACT | I.ACCURATE_RND))
    raise AssertionError(f"{path} has no frame {number}")


# -- 2. the per-video rule -----------------------------------------------------------------------


def test_video_scores_rules_hand_worked():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4]])
    np.testing.assert_allclose(video.video_scores(p), [0.3, 0.5, 0.2])  # mean, the default
    np.testing.assert_allclose(video.video_scores(p, "mean"), [0.3, 0.5, 0.2])
    np.testing.assert_allclose(video.video_scores(p, "max"), [0.2, 0.7, 0.1])  # frame 1: 0.7
    tie = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert video.video_scores(tie, "max").tolist() == [0.5, 0.5]
    np.testing.assert_allclose(video.video_scores(p[2:], "max"), p[2])  # one frame: itself
    assert video.VIDEO_RULES == ("mean", "max") and video.DEFAULT_VIDEO_RULE == "mean"
    with pytest.raises(ValueError, match="median"):
        video.video_scores(p, "median")
    with pytest.raises(ValueError, match="frames"):
        video.video_scores(np.zeros((0, 3)))


# -- 1. the sampling rule is the bundle's ----------------------------------------------------------


def test_resolve_sampling():
    r = video.resolve_sampling(None)
    assert (r.frame_every, r.max_frames, r.rule, r.note) == (1.0, 32, "mean", None)
    r = video.resolve_sampling(None, 0.5, 4)  # an older bundle: the flags, nothing to say
    assert (r.frame_every, r.max_frames, r.note) == (0.5, 4, None)
    b = {"frame_every": 2.0, "max_frames": 8, "rule": "max"}
    r = video.resolve_sampling(b)
    assert (r.frame_every, r.max_frames, r.rule, r.note) == (2.0, 8, "max", None)
    assert video.resolve_sampling(b, 2.0, 8).note is None  # the same values: no warning
    r = video.resolve_sampling(b, None, 3)
    assert (r.frame_every, r.max_frames) == (2.0, 3) and "--max_frames 3" in r.note
    assert "8" in r.note and "frame_every" not in r.note


@needs_coral
def test_bundle_sampling_is_the_default_and_an_override_is_said(tmp_path, capsys):
    card = tmp_path / "card"
    card.mkdir()
    render(card / "a.mp4", "libx264", 25, size=(98, 66))  # 10 fps, 2.4 s
    b = bundle(tmp_path / "b", {"frame_every": 0.3, "max_frames": 3})
    out = tmp_path / "r.json"
    rc, _, err = edge(capsys, "predict", str(b), str(card), "-o", str(out))
    assert rc == 0 and "warning" not in err, err
    md = json.loads(out.read_text())
    # 0.3 s candidates up to 2.4 s: k = 0..8 (9), 3 kept: k = 0, 4, 8 -> 0, 1.2, 2.4 s
    assert md["images"][0]["frames_processed"] == [0, 12, 24]
    meta = md["info"]["classifier_metadata"]["video_sampling"]
    assert meta["bundle"] == {"frame_every": 0.3, "max_frames": 3} and meta["note"] is None
    # a flag that differs is used, said in one line, and recorded
    rc, _, err = edge(capsys, "predict", str(b), str(card), "-o", str(out), "--overwrite",
                      "--max_frames", "2", "--keep_checkpoint")
    assert rc == 0
    warn = [line for line in err.splitlines() if "warning" in line]
    assert len(warn) == 1 and "--max_frames 2" in warn[0] and "3" in warn[0], err
    md = json.loads(out.read_text())
    assert md["images"][0]["frames_processed"] == [0, 24]
    meta = md["info"]["classifier_metadata"]["video_sampling"]
    assert (meta["max_frames"], meta["frame_every"]) == (2, 0.3) and "--max_frames 2" in \
        meta["note"]
    ckpt = json.loads((tmp_path / "r.json.partial" / "meta.json").read_text())
    assert ckpt["video"] == {"frame_every": 0.3, "max_frames": 2, "rule": "mean",
                             "bundle": {"frame_every": 0.3, "max_frames": 3}}
    # a bare model (no model.json): the defaults, 1.0 s and 32
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "m.tflite").symlink_to(CORAL_MODEL)
    coral_labels(bare / "labels.txt")
    rc, _, err = edge(capsys, "predict", str(bare / "m.tflite"), str(card), "-o",
                      str(tmp_path / "bare.json"))
    assert rc == 0 and "warning" not in err
    md = json.loads((tmp_path / "bare.json").read_text())
    assert md["images"][0]["frames_processed"] == [0, 10, 20]
    assert md["info"]["classifier_metadata"]["video_sampling"]["bundle"] is None


@needs_coral
@pytest.mark.parametrize("bad, field", [({"frame_every": -1}, "input.video.frame_every"),
                                        ({"max_frames": 0}, "input.video.max_frames"),
                                        ({"rule": "median"}, "input.video.rule"),
                                        ("often", "input.video")])
def test_bundle_video_contract_is_checked(tmp_path, capsys, bad, field):
    card = tmp_path / "card"
    card.mkdir()
    render(card / "a.avi", "mpeg4", 5)
    rc, _, err = edge(capsys, "predict", str(bundle(tmp_path / "b", bad)), str(card), "-o",
                      str(tmp_path / "r.json"))
    assert rc == 2 and field in err and len(err.strip().splitlines()) == 1, err


# -- 3. MegaDetector video results as --detections ----------------------------------------------


def _md_file(path: Path) -> dict:
    """MegaDetector-style video results (format 1.4: no frames_processed), boxes on frames 3
    (two), 17 and 29, a low box on 20, a person on 21, and a frame past the end (99)."""
    box = [0.2, 0.2, 0.5, 0.5]
    dets = [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.4, 0.5], "frame_number": 3},
            {"category": "1", "conf": 0.8, "bbox": [0.5, 0.1, 0.3, 0.3], "frame_number": 3},
            {"category": "1", "conf": 0.7, "bbox": box, "frame_number": 17},
            {"category": "1", "conf": 0.1, "bbox": box, "frame_number": 20},
            {"category": "2", "conf": 0.9, "bbox": box, "frame_number": 21},
            {"category": "1", "conf": 0.6, "bbox": box, "frame_number": 29},
            {"category": "1", "conf": 0.9, "bbox": box, "frame_number": 99}]
    md = {"info": {"format_version": "1.4", "detector": "md_v5a.0.0.pt"},
          "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
          "images": [{"file": "cam/a.mp4", "frame_rate": 10.0, "detections": dets},
                     {"file": "b.AVI", "frame_rate": 10.0, "detections": []}]}
    path.write_text(json.dumps(md))
    return md


@needs_coral
def test_detections_classify_exactly_the_boxed_frames(tmp_path, capsys):
    from kerascls_edge.classifier import Classifier
    from kerascls_edge.decode import decode

    card = tmp_path / "card"
    (card / "cam").mkdir(parents=True)
    render(card / "cam" / "a.mp4", "libx264", 40, size=(150, 94))
    render(card / "b.AVI", "mpeg4", 12, size=(99, 61))
    b = bundle(tmp_path / "b", crop={"padding": 0.1, "square": True})
    _md_file(tmp_path / "md.json")
    out = tmp_path / "r.json"
    rc, _, err = edge(capsys, "predict", str(b), str(card), "--detections",
                      str(tmp_path / "md.json"), "-o", str(out))
    assert rc == 0, err
    validate_md(out)
    a, other = json.loads(out.read_text())["images"]
    assert other["frames_processed"] == [] and "video" not in other
    dets = a["detections"]
    classified = [i for i, d in enumerate(dets) if d.get("classifications")]
    assert classified == [0, 1, 2, 5]  # the low box, the person and frame 99: none
    assert a["frames_processed"] == [3, 17, 20, 21, 29, 99]  # what the detector boxed
    assert any("99" in w and "not in the video" in w for w in a["warnings"])
    # each box is classified on ITS frame (a plain decode of frame N), by the crop rule:
    # box 0 on 150x94, padding 0.1, square, worked by hand: x 0.06, w 0.48 (72 px),
    # h 0.6 (56.4 px) grown to 72 px = 0.765957, y 0.15 - (0.765957 - 0.6) / 2
    clf = Classifier(b, threads=1)
    h = 72 / 94
    region = (0.06, 0.15 - (h - 0.6) / 2, 0.48, h)

    def top(img, reg):
        p = clf.predict_array(decode(img, clf.preprocess, regions=[reg]).arrays[0])[0]
        return [str(int(np.argmax(p))), round(float(p.max()), 4)]

    assert dets[0]["classifications"][0] == pytest.approx(top(frame_image(
        card / "cam" / "a.mp4", 3), region), abs=1e-4)
    assert top(frame_image(card / "cam" / "a.mp4", 3), region) != \
        top(frame_image(card / "cam" / "a.mp4", 4), region)  # a neighbour would be caught
    # the video's label: a frame's boxes by the rule, then the frames by the rule (mean)
    v = a["video"]
    assert v["rule"] == "mean" and v["frames_used"] == 3
    assert [(f["frame_number"], f["boxes"]) for f in v["frames"]] == [(3, 2), (17, 1), (29, 1)]
    assert [f["time"] for f in v["frames"]] == [0.3, 1.7, 2.9]


@needs_coral
def test_detections_more_boxed_frames_than_max_frames(tmp_path, capsys):
    card = tmp_path / "card"
    (card / "cam").mkdir(parents=True)
    render(card / "cam" / "a.mp4", "libx264", 40, size=(150, 94))
    render(card / "b.AVI", "mpeg4", 12, size=(99, 61))
    _md_file(tmp_path / "md.json")
    out = tmp_path / "r.json"
    rc, _, err = edge(capsys, "predict", str(bundle(tmp_path / "b")), str(card),
                      "--detections", str(tmp_path / "md.json"), "-o", str(out),
                      "--max_frames", "2")
    assert rc == 0, err
    validate_md(out)
    a = json.loads(out.read_text())["images"][0]
    # boxed frames 3, 17, 29, 99 spread to 2: the first and the last (99, not in the video)
    assert [d["frame_number"] for d in a["detections"] if d.get("classifications")] == [3, 3]
    assert any("2 of them" in w for w in a["warnings"])


@needs_coral
def test_detections_video_box_without_frame_number_is_refused(tmp_path, capsys):
    card = tmp_path / "card"
    card.mkdir()
    render(card / "a.mp4", "libx264", 5)
    md = {"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
          "images": [{"file": "a.mp4", "frame_rate": 10.0, "detections": [
              {"category": "1", "conf": 0.9, "bbox": [0, 0, 1, 1]}]}]}
    (tmp_path / "md.json").write_text(json.dumps(md))
    rc, _, err = edge(capsys, "predict", str(bundle(tmp_path / "b")), str(card),
                      "--detections", str(tmp_path / "md.json"), "-o", str(tmp_path / "r.json"))
    assert rc == 2 and "images[0].detections[0].frame_number" in err, err


# -- 4. Camtrap DP -------------------------------------------------------------------------------


def with_creation_time(src: Path, dst: Path, iso: str) -> Path:
    """`src` remuxed (no re-encode) into `dst` with the container's creation_time set."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        o.metadata["creation_time"] = iso
        s = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.dts is None:
                continue
            p.stream = s
            o.mux(p)
    return dst


needs_standard = pytest.mark.skipif(not (STANDARD / "camtrap-dp-profile.json").is_file(),
                                    reason="../shared/data/camtrapdp absent")


@needs_coral
@needs_standard
def test_camtrapdp_media_and_one_observation_per_video(tmp_path, capsys, schema_server):
    root = tmp_path / "pkg"
    site = root / "site_a"
    site.mkdir(parents=True)
    raw = render(tmp_path / "raw.mp4", "libx264", 25, size=(98, 66))
    with_creation_time(raw, site / "CLIP0001.MP4", "2021-06-01T10:20:30.000000Z")
    render(site / "clip2.asf", "msmpeg4v2", 12, size=(96, 64))
    render(site / "clip3.avi", "mpeg4", 15, size=(90, 60))
    os.utime(site / "clip3.avi", (1_600_000_000, 1_600_000_000))  # 2020-09-13T12:26:40Z
    (site / "broken.mkv").write_bytes(b"\x1aE\xdf\xa3 not really matroska")
    rc, _, err = edge(capsys, "predict", str(bundle(tmp_path / "b")), str(root), "--recursive",
                      "--format", "camtrapdp", "-o", str(root), "--location", "1.5,30.25",
                      "--utc_offset", "+01:00")
    assert rc == 0, err
    assert validate(root, schema_server) == []
    media = {m["fileName"]: m for m in rows(root, "media")}
    assert {n: m["fileMediatype"] for n, m in media.items()} == {
        "CLIP0001.MP4": "video/mp4", "clip2.asf": "video/x-ms-asf",
        "clip3.avi": "video/x-msvideo", "broken.mkv": "video/x-matroska"}
    assert media["CLIP0001.MP4"]["timestamp"] == "2021-06-01T10:20:30+01:00"  # container
    shown = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_600_000_000))  # as `ls -l`
    assert media["clip3.avi"]["timestamp"] == f"{shown}+01:00"  # the camera's clock too
    obs = rows(root, "observations")
    by_media = {}
    for o in obs:
        by_media.setdefault(o["mediaID"], []).append(o)
    assert all(len(v) == 1 for v in by_media.values()) and len(by_media) == 4
    md = json.loads((root / "megadetector.json").read_text())
    names = md["classification_categories"]
    for e in md["images"]:
        o, = by_media[media[Path(e["file"]).name]["mediaID"]]
        assert o["observationLevel"] == "media" and o["bboxX"] == ""
        if e.get("failure"):
            assert o["observationType"] == "unclassified"
            continue
        top = e["video"]["classifications"][0]  # the per-video label, not a frame's
        assert o["observationTags"] == f"label:{names[top[0]]}"
        assert float(o["classificationProbability"]) == pytest.approx(top[1], abs=1e-4)
        assert o["observationType"] in ("animal", "blank")
    clip1, = by_media[media["CLIP0001.MP4"]["mediaID"]]
    # 10 fps, 2.4 s, a frame a second: the event spans 0..2 s from the capture time
    assert (clip1["eventStart"], clip1["eventEnd"]) == ("2021-06-01T10:20:30+01:00",
                                                        "2021-06-01T10:20:32+01:00")


@needs_standard
def test_camtrapdp_video_observation_types_hand_made(tmp_path, capsys, schema_server):
    """`convert` of hand-made video entries (no model): a video whose label is an empty class
    is one `blank`, a person one `human`, a detector's video counts its most boxes a frame."""
    def vid(file, top, frames, dets=None, boxes=None):
        fs = [{"frame_number": n, "time": n / 10, "classifications": [[top, 0.6]],
               **({"boxes": boxes[k]} if boxes else {})} for k, n in enumerate(frames)]
        return {"file": file, "frame_rate": 10.0, "frames_processed": frames,
                "datetime": "2022-03-04 05:06:07", "detections": dets or [],
                "video": {"rule": "mean", "frames_used": len(frames),
                          "classifications": [[top, 0.7], ["1", 0.2]], "frames": fs}}
    box = {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.3, 0.3],
           "classifications": [["1", 0.8]]}
    md = {"info": {"format_version": "1.6", "classifier": "hand",
                   "classifier_metadata": {"empty_classes": ["empty"]}},
          "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
          "classification_categories": {"0": "empty", "1": "ocelot", "2": "person"},
          "images": [vid("a/blank.mp4", "0", [0, 10]),
                     vid("a/walker.MOV", "2", [0, 10, 20]),
                     vid("a/cat.avi", "1", [3, 17], [
                         {**box, "frame_number": 3}, {**box, "frame_number": 3},
                         {**box, "frame_number": 17}], boxes=[2, 1])]}
    (tmp_path / "md.json").write_text(json.dumps(md))
    pkg = tmp_path / "pkg"
    rc, _, err = edge(capsys, "convert", str(tmp_path / "md.json"), "--to", "camtrapdp", "-o",
                      str(pkg), "--image_dir", str(tmp_path), "--location", "1,2")
    assert rc == 0, err
    assert validate(pkg, schema_server) == []
    media = {m["mediaID"]: m for m in rows(pkg, "media")}
    obs = {media[o["mediaID"]]["fileName"]: o for o in rows(pkg, "observations")}
    assert len(obs) == 3 == len(rows(pkg, "observations"))
    assert {n: (o["observationType"], o["count"], o["scientificName"]) for n, o in obs.items()
            } == {"blank.mp4": ("blank", "", ""), "walker.MOV": ("human", "", ""),
                  "cat.avi": ("animal", "2", "ocelot")}
    assert all(o["classificationProbability"] == "0.7000" for o in obs.values())
    assert {m["fileName"]: m["fileMediatype"] for m in media.values()} == {
        "blank.mp4": "video/mp4", "walker.MOV": "video/quicktime", "cat.avi": "video/x-msvideo"}
    assert obs["walker.MOV"]["eventEnd"] == "2022-03-04T05:06:09Z"  # + frame 20 at 2.0 s
    assert obs["cat.avi"]["eventEnd"] == "2022-03-04T05:06:08Z"  # + 1.7 s, whole seconds


@pytest.mark.skipif(not ZAMBA.is_dir(), reason=f"shared data missing: {ZAMBA}")
@needs_coral
@needs_standard
def test_zamba_clips_camtrapdp_and_megadetector_valid(tmp_path, capsys, schema_server):
    """Every shared camera-trap clip gets a result (4 frames each keeps this fast); the
    package passes frictionless and its MegaDetector file MegaDetector's validator."""
    pkg = tmp_path / "pkg"
    shutil.copytree(ZAMBA, pkg / "zamba")
    rc, _, err = edge(capsys, "predict", str(bundle(tmp_path / "b")), str(pkg), "--recursive",
                      "--format", "camtrapdp", "-o", str(pkg), "--location=-1.2,15.3",
                      "--max_frames", "4")
    assert rc == 0, err
    assert validate(pkg, schema_server) == []
    validate_md(pkg / "megadetector.json")
    md = json.loads((pkg / "megadetector.json").read_text())
    clips = sorted(p.relative_to(pkg).as_posix() for p in (pkg / "zamba").rglob("*")
                   if video.is_video(p))
    assert len(clips) == 17 and sorted(e["file"] for e in md["images"]) == clips
    assert all("failure" not in e and 1 <= e["video"]["frames_used"] <= 4
               for e in md["images"])
    media = rows(pkg, "media")
    assert len(media) == 17 and all(m["fileMediatype"].startswith("video/") for m in media)
    assert len(rows(pkg, "observations")) == 17


# -- 5. the review page --------------------------------------------------------------------------


def _page_rows(page: Path) -> list[list]:
    """Every row of the page's data chunks (review_data/*.js)."""
    out = []
    for js in sorted((page.parent / f"{page.stem}_data").glob("c*.js")):
        body = re.match(r"kcChunk\((.*?),(\[.*\])\);\s*$", js.read_text(), re.S)
        out += json.loads(body.group(2))
    return out


@needs_coral
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_review_page_shows_a_video_as_a_strip_of_its_frames(tmp_path, capsys, fmt):
    card = tmp_path / "card"
    card.mkdir()
    render(card / "long.mp4", "libx264", 200, size=(98, 66), variants=8)  # 20 s: 20 frames
    render(card / "short.avi", "mpeg4", 25, size=(90, 60))
    out = tmp_path / f"r.{fmt}"
    rc, _, err = edge(capsys, "predict", str(bundle(tmp_path / "b")), str(card), "-o", str(out))
    assert rc == 0, err
    page = tmp_path / "review.html"
    rc, _, err = edge(capsys, "report", str(out), "-o", str(page), "--image_dir", str(card))
    assert rc == 0, err
    by_file = {r[0]: r for r in _page_rows(page)}
    assert sorted(by_file) == ["long.mp4", "short.avi"]
    if fmt == "json":
        md = json.loads(out.read_text())
        want = {e["file"]: ([f["frame_number"] for f in e["video"]["frames"]],
                            {f["frame_number"]: md["classification_categories"][
                                f["classifications"][0][0]] for f in e["video"]["frames"]})
                for e in md["images"]}
    else:
        frames: dict = {}
        for row in csv.DictReader(open(out, newline="", encoding="utf-8")):
            if row["row"] == "frame":
                frames.setdefault(row["file"], {})[int(row["frame_number"])] = row["label"]
        want = {f: (sorted(v), v) for f, v in frames.items()}
    for name, (numbers, labels) in want.items():
        strip = by_file[name][9]
        # at most 8 frames, spread evenly (first and last in), each with its own label
        assert [s[3] for s in strip] == video.spread_evenly(numbers, 8)
        assert all(s[5] == labels[s[3]] for s in strip)
        assert all(s[0] and (page.parent / s[0]).is_file() for s in strip)  # thumbnails
    assert len(by_file["long.mp4"][9]) == 8 and len(by_file["short.avi"][9]) == 3
    if CHROMIUM and fmt == "json":  # the page's script builds the strip in a real browser
        dom = browser(tmp_path, page, "")
        cards = {}
        for card in dom.split('<div class="card video"')[1:]:
            file = re.search(r'<div class="file">([^<]*)</div>', card).group(1)
            cards[file] = [(int(n), lab) for n, lab in re.findall(
                r'<figure class="sf" data-frame="(\d+)">.*?<span class="lab">([^<]*)</span>',
                card)]
        assert sorted(cards) == ["long.mp4", "short.avi"]
        for name, (numbers, labels) in want.items():
            assert cards[name] == [(n, labels[n]) for n in video.spread_evenly(numbers, 8)]


# -- 6. --sort_into and --resume -----------------------------------------------------------------


@needs_coral
def test_sort_into_by_the_video_label_and_resume_redoes_a_changed_video(tmp_path, capsys):
    card = tmp_path / "card"
    card.mkdir()
    render(card / "a.mp4", "libx264", 25, size=(98, 66))
    render(card / "b.avi", "mpeg4", 35, size=(90, 60))
    b = bundle(tmp_path / "b")
    out = tmp_path / "r.json"
    rc, out_text, err = edge(capsys, "predict", str(b), str(card), "-o", str(out),
                             "--keep_checkpoint", "--sort_into", str(tmp_path / "sorted"),
                             "--sort_threshold", "0")
    assert rc == 0, err
    md = json.loads(out.read_text())
    names = md["classification_categories"]
    with open(tmp_path / "sorted" / "manifest.csv", newline="", encoding="utf-8") as f:
        folders = {Path(r["source"]).name: r["folder"] for r in csv.DictReader(f)}
    for e in md["images"]:  # each video once, under its per-video label
        assert folders[e["file"]] == names[e["video"]["classifications"][0][0]]
    assert sorted(folders) == ["a.mp4", "b.avi"]
    # a refilled card: b.avi is now another (longer) clip under the same name
    render(card / "b.avi", "mpeg4", 55, size=(90, 60))
    rc, out_text, err = edge(capsys, "predict", str(b), str(card), "-o", str(out), "--resume")
    assert rc == 0, err
    summary = json.loads(out_text.strip().splitlines()[-1])
    assert (summary["resumed"], summary["changed"], summary["processed"]) == (1, 1, 1)
    new = {e["file"]: e for e in json.loads(out.read_text())["images"]}
    assert new["b.avi"]["frames_processed"] == [0, 10, 20, 30, 40, 50]  # the new clip's
    assert new["a.mp4"] == {k: v for k, v in md["images"][0].items()}

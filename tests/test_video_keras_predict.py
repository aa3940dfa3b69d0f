"""``kerascls predict`` on videos (the Keras model, batched, and ``--engine ray``): the same
sampled frames, per-frame and per-video results and output rows as ``kerascls-edge predict``.

A tiny real run (small_cnn, 1 epoch, rendered photos) and its *float* TFLite bundle
(``--quantize=none``: the same function, so labels must agree, not only nearly) classify a
card of rendered clips (MPEG-4 Part 2 in AVI, H.264 in MP4, MJPEG in MKV, at awkward sizes),
a photo, a broken video and, where the shared data is present, a real zamba clip. The batch
size is 7, so a video's frames straddle inference calls and chunks mix videos and photos.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.scenes import render_folder, small_run
from tests.shared_paths import DATA
from tests.video_clips import render, texture

ZAMBA_CLIP = DATA / "camtrap" / "zamba_videos" / "chimp.mp4"
PROB_TOL = 2e-3  # Keras vs TFLite float32 kernels: rounding, not quantisation
VIDEOS = ("cam1/CLIP0001.AVI", "cam1/clip2.mp4", "cam2/clip3.MKV")


# the children see what this process sees (an uninstalled kerascls_edge on PYTHONPATH too)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_AUTH_MODE": "disabled",
       "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`kerascls ARGS` in a child: exit 0 and no traceback, or the test fails."""
    r = subprocess.run([sys.executable, "-m", "kerascls.cli", *args], capture_output=True,
                       text=True, timeout=600, env=ENV, cwd=ROOT)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def train_in_subprocess(cfg) -> Path:
    """Train in a fresh process (the run is what a user would have on disk)."""
    code = ("import json,sys; from kerascls.training.config import TrainConfig; "
            "from kerascls.training.train import train; "
            "train(TrainConfig(**json.loads(sys.argv[1])))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(dataclasses.asdict(cfg))],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return Path(cfg.output_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 1-epoch run with its float TFLite bundle in ``RUN/bundle``."""
    root = tmp_path_factory.mktemp("video_keras")
    data = render_folder(root / "data", per_class=6, seed=5)
    out = train_in_subprocess(small_run(data, root / "run", epochs=1))
    run_cli("export", f"--model={out}", "--quantize=none", "--parity_samples=4")
    return out


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    """Clips of three codecs and containers, a photo, a broken video, a real clip."""
    root = tmp_path_factory.mktemp("card")
    (root / "cam1").mkdir()
    (root / "cam2").mkdir()
    render(root / VIDEOS[0], "mpeg4", 47, size=(98, 66))
    render(root / VIDEOS[1], "libx264", 25, size=(122, 78))
    render(root / VIDEOS[2], "mjpeg", 12, size=(90, 54))
    Image.fromarray(texture(75, 101, 5)).save(root / "cam2" / "photo.jpg", quality=90)
    (root / "cam2" / "broken.mp4").write_bytes(np.random.default_rng(3).bytes(3000))
    if ZAMBA_CLIP.is_file():
        shutil.copy(ZAMBA_CLIP, root / "cam2" / "chimp.mp4")
    return root


def edge(*args: str) -> subprocess.CompletedProcess:
    """`kerascls-edge ARGS` in a child: a traceback fails the test."""
    r = subprocess.run([sys.executable, "-m", "kerascls_edge", *args, "--progress_every", "-1"],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r


def _entries(path: Path) -> dict[str, dict]:
    return {e["file"]: e for e in json.loads(path.read_text())["images"]}


def _dense(ranked: list, n: int) -> np.ndarray:
    p = np.zeros(n)
    for i, v in ranked:
        p[int(i)] = v
    return p


def _same_video(a: dict, b: dict, n: int) -> None:
    """Same frames, same per-frame and per-video labels, probabilities within PROB_TOL."""
    assert a["frames_processed"] == b["frames_processed"] and a["frame_rate"] == b["frame_rate"]
    va, vb = a["video"], b["video"]
    assert va["rule"] == vb["rule"] and va["frames_used"] == vb["frames_used"]
    assert va["classifications"][0][0] == vb["classifications"][0][0]
    assert np.abs(_dense(va["classifications"], n) - _dense(vb["classifications"], n)).max() \
        <= PROB_TOL
    assert [f["frame_number"] for f in va["frames"]] == [f["frame_number"] for f in vb["frames"]]
    for fa, fb in zip(va["frames"], vb["frames"]):
        assert fa["classifications"][0][0] == fb["classifications"][0][0]


def _compare(ours: Path, device: Path) -> None:
    a, b = _entries(ours), _entries(device)
    assert list(a) == list(b)
    n = len(json.loads(device.read_text())["classification_categories"])
    assert "VideoError" in a["cam2/broken.mp4"]["failure"] == b["cam2/broken.mp4"]["failure"]
    videos = [f for f in b if "video" in b[f]]
    assert set(VIDEOS) <= set(videos) and ("cam2/chimp.mp4" in videos) == ZAMBA_CLIP.is_file()
    for f in videos:
        _same_video(a[f], b[f], n)
    assert a["cam2/photo.jpg"]["detections"][0]["classifications"][0][0] == \
        b["cam2/photo.jpg"]["detections"][0]["classifications"][0][0]


def test_keras_video_results_equal_the_device(run, card, tmp_path):
    """Default sampling: MegaDetector video entries equal the float bundle's (a training run
    and its export, ~30 s on a quiet machine, as test_predict_keras's default tests pay)."""
    run_cli("predict", f"--model={run}", f"--output={tmp_path / 'keras.json'}", "--recursive",
            "--batch_size=7", str(card))
    edge("predict", str(run / "bundle"), str(card), "--recursive", "-o",
         str(tmp_path / "edge.json"))
    _compare(tmp_path / "keras.json", tmp_path / "edge.json")
    # 10 fps, a frame a second: 4.6 s -> 0..4 s (worked by hand, not by video.py)
    assert _entries(tmp_path / "keras.json")[VIDEOS[0]]["frames_processed"] == [0, 10, 20, 30, 40]


@pytest.mark.slow  # shares the trained fixture; two more CLI runs
def test_keras_video_csv_rows_equal_the_device(run, card, tmp_path):
    """CSV: a row per video and a flagged row per frame, the same text but probabilities."""
    run_cli("predict", f"--model={run}", f"--output={tmp_path / 'keras.csv'}", "--recursive",
            "--batch_size=7", str(card))
    edge("predict", str(run / "bundle"), str(card), "--recursive", "-o",
         str(tmp_path / "edge.csv"))
    ka, kb = (list(csv.DictReader((tmp_path / f).open())) for f in ("keras.csv", "edge.csv"))
    assert len(ka) == len(kb) and ka[0].keys() == kb[0].keys()
    assert sum(r["row"] == "frame" for r in ka) >= 5 + 3 + 2  # per-frame rows, flagged
    for ra, rb in zip(ka, kb):  # every column but the probabilities is the same text
        probs = ("confidence", "top_k")
        assert {k: v for k, v in ra.items() if k not in probs} == \
            {k: v for k, v in rb.items() if k not in probs}, (ra, rb)
        if ra["confidence"]:
            assert abs(float(ra["confidence"]) - float(rb["confidence"])) <= PROB_TOL


@pytest.mark.slow  # shares the trained fixture
def test_sampling_flags_reach_the_device_rule(run, card, tmp_path):
    """--frame_every/--max_frames mean what they mean on the device: 47 frames at 10 fps,
    a frame every 0.5 s gives candidates 0, 5 … 45; 3 of 10 spread evenly: 0, 25, 45."""
    flags = ("--frame_every=0.5", "--max_frames=3")
    run_cli("predict", f"--model={run}", f"--output={tmp_path / 'keras.json'}", "--recursive",
            "--batch_size=7", *flags, str(card))
    edge("predict", str(run / "bundle"), str(card), "--recursive", "-o",
         str(tmp_path / "edge.json"), "--frame_every", "0.5", "--max_frames", "3")
    _compare(tmp_path / "keras.json", tmp_path / "edge.json")
    assert _entries(tmp_path / "keras.json")[VIDEOS[0]]["frames_processed"] == [0, 25, 45]
    assert _entries(tmp_path / "keras.json")[VIDEOS[2]]["frames_processed"] == [0, 5, 10]


def test_sampling_flags_go_to_the_edge_command_line():
    """Unset flags leave the device's defaults (and model.json's rule) alone; set ones pass."""
    from absl import flags

    from kerascls.predict import define_flags, edge_argv

    fv = flags.FlagValues()
    define_flags(fv, "test")
    fv(["prog", "--model=m", "--frame_every=0.25", "--max_frames=4"])
    argv = edge_argv(fv, ["card"])
    assert argv[argv.index("--frame_every") + 1] == "0.25"
    assert argv[argv.index("--max_frames") + 1] == "4"
    fv.unparse_flags()
    fv(["prog", "--model=m"])
    assert "--frame_every" not in edge_argv(fv, ["card"])
    assert "--max_frames" not in edge_argv(fv, ["card"])
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--model=m", "--max_frames=0"])


def test_chunks_count_a_videos_frames(tmp_path):
    """A batched backend's chunk holds at most batch_size frames, not batch_size videos: 32-frame
    clips in chunks of 64 would put 2,048 frames in one call."""
    from kerascls_edge.decode import Decoded
    from kerascls_edge.runner import Item, chunks
    from kerascls_edge.video import DecodedVideo

    frame = np.zeros((4, 4, 3), np.uint8)
    pairs = [(Item(f"v{i}", f"v{i}"), DecodedVideo(arrays=[frame] * 5)) for i in range(4)]
    pairs.insert(2, (Item("p", "p"), Decoded(arrays=[frame])))
    pairs.insert(3, (Item("bad", "bad"), OSError("broken")))
    sizes = [[p[0].path for p in c] for c in chunks(iter(pairs), 8)]
    assert sizes == [["v0"], ["v1", "p", "bad"], ["v2"], ["v3"]]  # 5, 7, 5, 5 frames
    big = [(Item("long", "long"), DecodedVideo(arrays=[frame] * 11))]
    assert [len(c) for c in chunks(iter(pairs[:1] + big + pairs[1:2]), 8)] == [1, 1, 1]
    photos = [(Item(f"p{i}", f"p{i}"), Decoded(arrays=[frame])) for i in range(5)]
    assert [len(c) for c in chunks(iter(photos), 2)] == [2, 2, 1]


@pytest.mark.slow  # a local Ray for the run (~30-60 s on 2 cores)
def test_ray_engine_video_results_equal_the_device(run, card, tmp_path):
    pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")
    out = tmp_path / "ray.json"
    run_cli("predict", f"--model={run}", f"--output={out}", "--recursive", "--engine=ray",
            "--batch_size=7", str(card))
    edge("predict", str(run / "bundle"), str(card), "--recursive", "-o",
         str(tmp_path / "edge.json"))
    _compare(out, tmp_path / "edge.json")

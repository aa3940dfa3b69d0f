"""Issue 27's acceptance on the shared zamba clips: ``kerascls evaluate`` on the run,
``kerascls evaluate`` on its int8 bundle and ``kerascls-edge predict`` give every video the
same label.

The clips carry no species ground truth, so each is labelled by a property of its pixels
that a small model learns and that the test reads with PyAV itself: "grey" (an infrared night
clip, R = G = B) or "colour". What is compared is the three paths' per-video label, on a
model confident enough that quantization alone should not flip a call. The Keras path reads
frames through the training pipeline (tf.data), the device through its own decoder and the
bundle's contract, so a sampling, pixel, rule or quantization mismatch on real AVI/MPEG-4 and
MP4/H.264 files changes a label.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.scenes import small_run
from tests.video_data import edge_video_labels, prediction_rows, row_probs, top2_margin

ZAMBA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camtrap" / \
    "zamba_videos"

pytestmark = [pytest.mark.usefixtures("free_keras_memory"),
              pytest.mark.skipif(not ZAMBA.is_dir(),
                                 reason=f"shared zamba clips not found ({ZAMBA})")]


def _grey(clip: Path) -> bool:
    """An infrared clip: its first frame's channels differ by under 3 levels on average."""
    import av
    with av.open(str(clip)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    return float(np.mean(rgb.max(-1) - rgb.min(-1))) < 3


def _labelled(root: Path) -> tuple[Path, list[Path]]:
    from kerascls_edge.video import is_video
    clips = sorted(p.resolve() for p in ZAMBA.rglob("*") if p.is_file() and is_video(p))
    table = root / "labels.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "label"])
        w.writerows([str(p), "grey" if _grey(p) else "colour"] for p in clips)
    return table, clips


def test_run_bundle_and_device_agree_on_every_zamba_video(tmp_path, cli):
    from kerascls.evaluation.evaluate import evaluate
    from kerascls.training.train import train

    table, clips = _labelled(tmp_path)
    assert len(clips) == 17
    cfg = small_run(tmp_path, tmp_path / "run", epochs=20, image_size=32, frame_every=4.0,
                    max_frames=8, augment="", val_fraction=0.2, test_fraction=0.2)
    cfg.data = f"csv:{table}"
    run = train(cfg)
    cli("export", f"--model={run}", "--calibration_samples=100", "--parity_samples=50")
    bundle = run / "bundle"
    assert json.loads((bundle / "model.json").read_text())["input"]["video"] == {
        "frame_every": 4.0, "max_frames": 8}
    keras_rows, int8_rows = [], []
    for split in ("train", "val", "test"):  # every clip is in one split: all 17 compared
        evaluate(run, split=split, output_dir=tmp_path / f"keras_{split}")
        evaluate(bundle, split=split, output_dir=tmp_path / f"int8_{split}")
        keras_rows += prediction_rows(tmp_path / f"keras_{split}")
        int8_rows += prediction_rows(tmp_path / f"int8_{split}")
    names = json.loads((tmp_path / "keras_test" / "metrics.json").read_text())["class_names"]
    keras = {r["filepath"]: r["top1"] for r in keras_rows if r["row"] == "video"}
    int8 = {r["filepath"]: r["top1"] for r in int8_rows if r["row"] == "video"}
    assert sorted(map(Path, keras)) == clips
    edge = edge_video_labels(bundle, [str(c) for c in clips], tmp_path / "edge.json")
    margins = sorted(top2_margin(row_probs(r, names)) for r in keras_rows if r["row"] == "video")
    print(f"\nzamba: {len(keras)} videos, float top-2 margins min {margins[0]:.3f} "
          f"median {np.median(margins):.3f}")
    assert edge == int8 == keras

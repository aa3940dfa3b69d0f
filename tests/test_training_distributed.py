"""MirroredStrategy: 2 logical-CPU replicas follow 1 device given the same global batches.

Each run is a fresh ``kerascls train`` process: logical CPU devices can only be set up
before TensorFlow initializes its runtime.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import kerascls.layers  # noqa: F401  (registers the custom layers for loading)
import kerascls.models  # noqa: F401
from kerascls.errors import UserError
from kerascls.training.distribute import parse_devices
from tests.conftest import needs_debian


@pytest.mark.parametrize("spec, parsed", [("", ("auto", None)), ("gpu", ("gpu", None)),
                                          ("gpu:0,2", ("gpu", [0, 2])), ("cpu:2", ("cpu", 2))])
def test_parse_devices(spec, parsed):
    assert parse_devices(spec) == parsed


@pytest.mark.parametrize("spec", ["tpu", "cpu:0", "auto:3", "cpu:x", "cpu:2,3", "gpu:0,a"])
def test_bad_devices(spec):
    with pytest.raises(UserError, match="--devices="):  # a ValueError, printed in one line
        parse_devices(spec)


@needs_debian
def test_two_replicas_match_one_device(cli, tmp_path):
    # BatchNorm-free, dropout-free model and SGD: the only difference left is where the
    # per-replica halves of each global batch of 64 are computed (in float32: bfloat16's
    # rounding of two half-batch sums is not that of one, far above this tolerance). No label
    # smoothing: its every-class sum rounds differently per half-batch too (1e-4 apart).
    args = ["--mixed_precision=none", "--label_smoothing=0", "--model_arg=norm=none",
            "--model_arg=dropout=0",
            "--optimizer=sgd",
            "--learning_rate=0.05", "--epochs=1", "--max_train_images=640",
            "--batch_size=64", "--val_fraction=0"]
    weights = []
    for devices in ("cpu:1", "cpu:2"):
        run = tmp_path / devices.replace(":", "")
        out = cli("train", *args, f"--devices={devices}", f"--output_dir={run}").stdout
        assert "accuracy:" in out
        assert json.loads((run / "metrics.json").read_text())["replicas"] == int(devices[-1])
        model = keras.saving.load_model(run / "model.keras", compile=False)
        weights.append([np.asarray(w) for w in model.weights])
    moved = max(float(np.max(np.abs(w))) for w in weights[0])
    for one, two in zip(*weights):
        np.testing.assert_allclose(one, two, atol=1e-4 * moved, rtol=1e-3)

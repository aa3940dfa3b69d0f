"""The tfmot bridge's halves: the JSON spec between them, and how the child's failures
come back to the parent (one line, the child's log kept).

Fast: the spec in-process; slow: one real child process (a model with a layer tfmot
cannot take) for the error path. The QAT/pruning exports themselves are in tests/test_tflite.py
and tests/test_efficientnetv2_quant.py (slow).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

from kerascls.errors import UserError
from kerascls.tflite import tfmot_bridge
from kerascls.tflite.tfmot import BridgeError, BridgeSpec, finetune_tflite, parent


def _spec(tmp_path: Path, **kw) -> BridgeSpec:
    base = {"model": str(tmp_path / "m.keras"), "mode": "qat", "data": "fashion_mnist",
            "out": str(tmp_path)}
    return BridgeSpec(**{**base, **kw})


def test_spec_round_trips_through_json(tmp_path):
    spec = _spec(tmp_path, mode="prune", sparsity=0.5, learning_rate=2e-4, task="multilabel",
                 logits=True, epochs=3)
    assert BridgeSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["sparsity"] == 0.5


def test_spec_learning_rate_defaults_per_mode(tmp_path):
    assert _spec(tmp_path).rate == 1e-4
    assert _spec(tmp_path, mode="prune", sparsity=0.3).rate == 5e-4
    assert _spec(tmp_path, learning_rate=1e-3).rate == 1e-3


@pytest.mark.parametrize("text, message", [
    ('{"model": "m", "mode": "qat", "data": "d", "out": "o", "epoch": 2}',
     r"unknown keys \['epoch'\], missing keys \[\]"),
    ('{"model": "m", "mode": "qat", "data": "d"}', r"unknown keys \[\], missing keys \['out'\]"),
    ("[1, 2]", "must be a JSON object"),
    ("{model", "not JSON"),
    ('{"model": "m", "mode": "cluster", "data": "d", "out": "o"}', "mode must be one of"),
    ('{"model": "m", "mode": "prune", "data": "d", "out": "o", "sparsity": 1.0}',
     "sparsity in \\(0, 1\\)"),
    ('{"model": "m", "mode": "qat", "data": "d", "out": "o", "epochs": 0}',
     "epochs must be at least 1"),
])
def test_bad_spec_is_one_line_user_error(text, message):
    with pytest.raises(BridgeError, match=message) as info:
        BridgeSpec.from_json(text)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


def test_options_are_defined_once():
    """The parent takes the spec's fields as keywords; it lists none of them again."""
    params = inspect.signature(finetune_tflite).parameters
    assert list(params) == ["model_path", "mode", "timeout", "options"]
    fields = {f.name for f in dataclasses.fields(BridgeSpec)}
    assert {"epochs", "data", "sparsity", "samples", "calibration_samples", "batch_size",
            "learning_rate", "seed", "task", "logits", "out"} <= fields


def test_old_module_name_still_imports():
    assert tfmot_bridge.finetune_tflite is finetune_tflite
    assert tfmot_bridge.BridgeError is BridgeError and callable(tfmot_bridge.rebuild)


def test_crash_reason_is_the_logs_last_line(tmp_path):
    (tmp_path / parent.LOG_FILE).write_text("noise\nTraceback (most recent call last):\n"
                                            "  ...\nKeyError: 'kernel'\n\n")
    assert parent.failure_reason(tmp_path, 1) == (
        "the tfmot child failed (exit 1): KeyError: 'kernel'")
    (tmp_path / parent.ERROR_FILE).write_text("layer 'x' (Foo) has no tf_keras equivalent\n")
    assert parent.failure_reason(tmp_path, 2) == "layer 'x' (Foo) has no tf_keras equivalent"


@pytest.mark.slow  # a child process importing TF and tf_keras: ~15 s quiet, 110 s loaded
def test_child_error_comes_back_as_one_line_with_its_log(tmp_path):
    """A real child process: LocalResponseNormalization has no tfmot equivalent."""
    import keras

    from kerascls.layers import LocalResponseNormalization
    inputs = keras.Input((8, 8, 3), name="image")
    x = LocalResponseNormalization(name="my_lrn")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    model_file = tmp_path / "lrn.keras"
    keras.Model(inputs, outputs).save(model_file)
    with pytest.raises(BridgeError) as info:
        finetune_tflite(model_file, "qat", data="fashion_mnist", epochs=1, samples=8,
                        timeout=600)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("layer 'my_lrn' (LocalResponseNormalization) has no tf_keras")
    log = Path(re.search(r"\(child log: (.+)\)$", message).group(1))
    assert "tfmot child: error: layer 'my_lrn'" in log.read_text()
    log.unlink()

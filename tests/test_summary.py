"""Per-layer cost table: torchinfo's conventions, checked on AlexNet and by hand on LeNet."""

from __future__ import annotations

import keras
import pytest

from kerascls.models import create_model
from kerascls.summary import count_macs, count_params, format_summary, layer_table


@pytest.fixture(scope="module")
def lenet_rows():
    return {r["layer"]: r for r in layer_table(create_model("lenet", 10, (32, 32, 3)))}


def test_alexnet_matches_torchinfo():
    """torchinfo: 61,100,840 params, 714.68 M mult-adds (biases counted, as it does)."""
    model = create_model("alexnet", 1000, (224, 224, 3))
    assert count_params(model) == 61_100_840
    assert count_macs(model) == 714_682_664
    text = format_summary(model)
    assert "714.68 M" in text and "61,100,840" in text
    keras.backend.clear_session()


def test_lenet_by_hand(lenet_rows):
    # conv1: 6 filters 5×5×3 + bias = 456 params, applied at 28×28 outputs.
    conv1 = lenet_rows["conv1_conv"]
    assert (conv1["params"], conv1["macs"]) == (456, 456 * 28 * 28)
    assert (conv1["channels"], conv1["size"]) == (6, "28")
    assert conv1["memory_kb"] == 6 * 28 * 28 * 4 / 1024
    assert lenet_rows["conv2_conv"]["macs"] == 2416 * 10 * 10
    assert [lenet_rows[n]["macs"] for n in ("fc1", "fc2", "head")] == [48_120, 10_164, 850]
    assert lenet_rows["pool1"]["macs"] == lenet_rows["pool1"]["params"] == 0
    assert sum(r["macs"] for r in lenet_rows.values()) == 658_238
    assert sum(r["params"] for r in lenet_rows.values()) == 62_006


def test_nested_sublayers_and_depthwise_and_norm_statistics():
    model = create_model("lenet", 10, (32, 32, 3), attention="se")
    se = next(r for r in layer_table(model) if r["layer"] == "conv1_se")
    # SE on 6 channels: bottleneck rounds up to 8 → Dense 6→8 (56) + Dense 8→6 (54).
    assert (se["params"], se["macs"]) == (110, 110)

    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, keras.layers.DepthwiseConv2D(3, padding="same",
                                                               name="dw")(inner_in),
                        name="inner")
    x = keras.Input((8, 8, 4))
    y = keras.layers.BatchNormalization(name="bn")(inner(x))
    rows = {r["layer"]: r for r in layer_table(keras.Model(x, y))}
    assert (rows["inner/dw"]["params"], rows["inner/dw"]["macs"]) == (40, 40 * 64)
    assert (rows["bn"]["params"], rows["bn"]["macs"]) == (8, 8)  # γ, β; not μ, σ²


def test_format_summary_lists_every_layer_and_totals(lenet_rows):
    model = create_model("lenet", 10, (32, 32, 3))
    text = format_summary(model)
    assert all(name in text for name in lenet_rows)
    assert "total parameters: 62,006" in text and "total MACs: 658,238" in text
    assert "pool1" not in format_summary(model, show_zero=False)

"""Squeeze-and-Excitation (Hu et al., 2018): channel attention from pooled statistics."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerascls.layers.types import Config, Shape, Tensor


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Round channels to a multiple of ``divisor`` as timm/TF do (never below round_limit·v)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


@keras.saving.register_keras_serializable(package="kerascls")
class SqueezeExcite(keras.layers.Layer):
    """``x * gate(W2 act(W1 mean_hw(x)))`` with 1×1-conv-style dense weights and biases.

    Args:
        rd_ratio: reduction ratio of the bottleneck (1/16 in the paper and timm's SE-ResNets).
        rd_channels: explicit bottleneck width (overrides rd_ratio).
        rd_divisor: round the bottleneck to a multiple of this (timm's default 8).
        activation: bottleneck activation; gate: the gating activation.
    """

    def __init__(self, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 8, activation: str = "relu", gate: str = "sigmoid",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rd_ratio = rd_ratio
        self.rd_channels = rd_channels
        self.rd_divisor = rd_divisor
        self.activation = activation
        self.gate = gate

    def build(self, input_shape: Shape) -> None:
        channels = int(input_shape[-1])
        rd = self.rd_channels or make_divisible(channels * self.rd_ratio, self.rd_divisor,
                                                round_limit=0.0)
        # Sub-layers inherit this layer's dtype policy (explicit mixed precision included).
        policy = self.dtype_policy
        self.reduce = keras.layers.Dense(rd, activation=self.activation, dtype=policy,
                                         name="reduce")
        self.expand = keras.layers.Dense(channels, activation=self.gate, dtype=policy,
                                         name="expand")
        self.reduce.build((None, channels))
        self.expand.build((None, rd))

    def call(self, x: Tensor) -> Tensor:
        s = ops.mean(x, axis=(1, 2), keepdims=True)
        return x * self.expand(self.reduce(s))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "rd_ratio": self.rd_ratio,
                "rd_channels": self.rd_channels, "rd_divisor": self.rd_divisor,
                "activation": self.activation, "gate": self.gate}

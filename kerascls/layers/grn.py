"""Global Response Normalization (Woo et al. 2023, ConvNeXt V2): channel competition."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerascls.layers.types import Config, Shape, Tensor


@keras.saving.register_keras_serializable(package="kerascls")
class GlobalResponseNorm(keras.layers.Layer):
    """``x + gamma * (x * nx) + beta`` with ``nx = ‖x‖_hw / mean_c(‖x‖_hw)`` (channels last).

    The per-channel L2 norm over space, divided by its mean over channels, rescales each
    channel by how much it responds relative to the others; gamma/beta start at zero so a
    fresh block is the identity. Written with ``keras.ops`` only (any backend) and the
    norm as ``sqrt(sum(x*x))`` (no SQUARE op, which stays float in int8 TFLite).
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: Shape) -> None:
        dim = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(dim,), initializer="zeros", name="gamma")
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta")

    def call(self, x: Tensor) -> Tensor:
        x32 = ops.cast(x, "float32")  # sum of squares overflows float16 under mixed precision
        gx = ops.sqrt(ops.sum(x32 * x32, axis=(1, 2), keepdims=True))
        nx = gx / (ops.mean(gx, axis=-1, keepdims=True) + self.epsilon)
        y = x32 + ops.cast(self.gamma, "float32") * (x32 * nx) + ops.cast(self.beta, "float32")
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "epsilon": self.epsilon}

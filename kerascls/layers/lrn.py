"""Local response normalization (Krizhevsky et al. 2012), used by AlexNet and VGG A-LRN."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kerascls.layers.types import Config, Shape, Tensor


@keras.saving.register_keras_serializable(package="kerascls")
class LocalResponseNormalization(keras.layers.Layer):
    """``b_i = a_i / (k + alpha * sum_{j in window(i)} a_j^2) ** beta`` across channels.

    The AlexNet paper's form (section 3.3): the window holds ``size`` channels centred on
    ``i`` (clipped at the edges), and ``alpha`` is *not* divided by ``size`` (PyTorch's
    ``nn.LocalResponseNorm`` divides it; pass ``alpha=1e-4 * 5`` to match that). Defaults
    are the paper's k=2, n=5, alpha=1e-4, beta=0.75, which VGG's A-LRN reuses.

    The window sum is one matmul of the squares with a fixed banded 0/1 matrix, so the layer
    converts to plain TFLite builtins (no ``tf.nn.lrn``, which has no int8 kernel) and runs
    under every Keras backend. The band is a constant, not a weight.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                 bias: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"size must be a positive odd number, got {size}")
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    @property
    def depth_radius(self) -> int:
        """TensorFlow's name for the half window: ``size = 2 * depth_radius + 1``."""
        return self.size // 2

    def build(self, input_shape: Shape) -> None:
        channels = int(input_shape[-1])
        idx = np.arange(channels)
        self._band = (np.abs(idx[:, None] - idx[None, :]) <= self.depth_radius).astype("float32")

    def call(self, x: Tensor) -> Tensor:
        band = ops.convert_to_tensor(self._band, dtype=x.dtype)
        window_sum = ops.matmul(x * x, band)
        return x * inverse_power(self.bias + self.alpha * window_sum, self.beta)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha,
                "beta": self.beta, "bias": self.bias}


def inverse_power(base: Tensor, beta: float) -> Tensor:
    """``base ** -beta``; the papers' 0.75 and 0.5 as rsqrt/sqrt, which every runtime has."""
    if beta == 0.5:
        return ops.rsqrt(base)
    if beta == 0.75:
        r = ops.rsqrt(base)
        return r * ops.sqrt(r)
    return ops.power(base, -beta)

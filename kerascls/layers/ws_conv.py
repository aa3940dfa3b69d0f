"""Weight-standardized convolution (Qiao et al. 2020, arXiv:1903.10520 / 2003.10758)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerascls.layers.types import Config, Tensor


@keras.saving.register_keras_serializable(package="kerascls")
class WSConv2D(keras.layers.Conv2D):
    """Conv2D whose kernel is standardized per output channel on every call.

    Each filter is shifted to zero mean and scaled to unit variance over (kh, kw, c_in)
    before the convolution. This smooths the loss landscape, so group / batch-channel
    norm trains as well as batch norm at micro-batch sizes. The stored kernel stays raw;
    the standardization is part of the graph, which the TFLite converter constant-folds.

    Args:
        ws_epsilon: added to the filter variance (1e-5 as in the authors' code).
        *args, **kwargs: as ``keras.layers.Conv2D``.
    """

    def __init__(self, *args: Any, ws_epsilon: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ws_epsilon = ws_epsilon

    def standardized_kernel(self, kernel: Tensor | None = None) -> Tensor:
        """The kernel the convolution actually uses."""
        kernel = self.kernel if kernel is None else kernel
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        d = kernel - mean
        var = ops.mean(d * d, axis=(0, 1, 2), keepdims=True)
        return d * ops.rsqrt(var + self.ws_epsilon)

    def convolution_op(self, inputs: Tensor, kernel: Tensor) -> Tensor:
        return super().convolution_op(inputs, self.standardized_kernel(kernel))

    def get_config(self) -> Config:
        return {**super().get_config(), "ws_epsilon": self.ws_epsilon}

"""Adaptive average pooling with PyTorch's bin arithmetic."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from kerascls.layers.types import Config, Shape, Tensor


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's bins: bin i covers ``[floor(i*size/out), ceil((i+1)*size/out))``.

    Bins overlap when ``size`` is not a multiple of ``out`` and repeat inputs when
    ``size < out`` (a 1×1 map pooled to 7×7 is copied 49 times, as torchvision's VGG does).
    """
    return [(i * size // out, math.ceil((i + 1) * size / out)) for i in range(out)]


def _pool_axis(x, axis: int, out: int):
    """Pool one spatial axis: identity, reshape-mean on an exact multiple, else slices."""
    size = x.shape[axis]
    if size == out:
        return x
    if size % out == 0:
        shape = list(x.shape[1:])
        shape[axis - 1:axis] = [out, size // out]
        return ops.mean(ops.reshape(x, (-1, *shape)), axis=axis + 1)
    parts = [ops.mean(x[(slice(None),) * axis + (slice(s, e),)], axis=axis, keepdims=True)
             for s, e in adaptive_bins(size, out)]
    return ops.concatenate(parts, axis=axis)


@keras.saving.register_keras_serializable(package="kerascls")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """``nn.AdaptiveAvgPool2d`` for channels-last inputs with static spatial size.

    Lets AlexNet/VGG keep their reference classifier (and parameter count) at any input
    size. Written with slices and means only, so it converts to plain TFLite ops.
    """

    def __init__(self, output_size: int | tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(s) for s in output_size)

    def call(self, x: Tensor) -> Tensor:
        if x.shape[1] is None or x.shape[2] is None:
            raise ValueError("AdaptiveAveragePooling2D needs a static spatial size")
        for axis, out in zip((1, 2), self.output_size):
            x = _pool_axis(x, axis, out)
        return x

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self) -> Config:
        return {**super().get_config(), "output_size": self.output_size}

"""In-model preprocessing: raw 0–255 pixels in, normalized floats out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from kerascls.errors import UserError
from kerascls.layers.types import Config, Shape, Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std for RGB; their average for greyscale (torchvision's convention)."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    mean = sum(IMAGENET_MEAN) / 3
    std = sum(IMAGENET_STD) / 3
    return (mean,) * channels, (std,) * channels


@keras.saving.register_keras_serializable(package="kerascls")
class ImagePreprocessing(keras.layers.Layer):
    """``(x / 255 - mean) / std`` per channel, folded into one multiply-add.

    Lives inside the model so that an exported TFLite file takes raw uint8 pixels and the
    device cannot drift from training. It holds no weights (mean and std are config), so
    parameter counts match the reference implementations.
    """

    def __init__(self, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)

    def build(self, input_shape: Shape) -> None:
        channels = int(input_shape[-1])
        dmean, dstd = default_stats(channels)
        mean = self.mean or dmean
        std = self.std or dstd
        if len(mean) != channels or len(std) != channels:
            raise UserError(f"mean/std need {channels} values, got {mean} / {std}")
        self._scale = [1.0 / (255.0 * s) for s in std]
        self._offset = [-m / s for m, s in zip(mean, std)]

    def call(self, inputs: Tensor) -> Tensor:
        x = ops.cast(inputs, self.compute_dtype)
        scale = ops.convert_to_tensor(self._scale, dtype=self.compute_dtype)
        offset = ops.convert_to_tensor(self._offset, dtype=self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "mean": self.mean, "std": self.std}

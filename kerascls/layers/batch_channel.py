"""Batch-Channel Normalization (Qiao et al. 2020, "Micro-Batch Training with Batch-Channel
Normalization and Weight Standardization", arXiv:2003.10758)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerascls.layers.standardize import group_standardize, resolve_groups
from kerascls.layers.types import Config, Shape, Tensor


@keras.saving.register_keras_serializable(package="kerascls")
class BatchChannelNormalization(keras.layers.Layer):
    """Batch norm (running statistics, affine) followed by group ("channel") norm.

    The batch step brings in dataset-level statistics, so the network stays away from
    the elimination singularities that pure channel normalization (GN/LN) is near; the
    channel step keeps the micro-batch training of GN. As in the authors' ``BCNorm``, the
    channel norm's affine has one scale and shift per group.

    Args:
        groups: channel-norm groups (clipped to a divisor of the channels; ``-1`` = one
            per channel).
        momentum: running-statistics momentum of the batch step (Keras convention).
        epsilon: added to both variances.
    """

    def __init__(self, groups: int = 32, momentum: float = 0.99, epsilon: float = 1e-5,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups, self.momentum, self.epsilon = groups, momentum, epsilon
        self.batch_norm = keras.layers.BatchNormalization(
            momentum=momentum, epsilon=epsilon, dtype=self.dtype_policy, name="batch_norm")

    def build(self, input_shape: Shape) -> None:
        channels = int(input_shape[-1])
        self._groups = resolve_groups(self.groups, channels)
        self.batch_norm.build(input_shape)
        self.gamma = self.add_weight(shape=(self._groups,), initializer="ones", name="gamma",
                                     autocast=False)
        self.beta = self.add_weight(shape=(self._groups,), initializer="zeros", name="beta",
                                    autocast=False)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        x = self.batch_norm(x, training=training)
        shape = ops.shape(x)
        g = self._groups
        y = group_standardize(x, g, self.epsilon)
        y = y * ops.cast(ops.reshape(self.gamma, (g, 1)), y.dtype)
        y = y + ops.cast(ops.reshape(self.beta, (g, 1)), y.dtype)
        return ops.cast(ops.reshape(y, shape), self.compute_dtype)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "groups": self.groups, "momentum": self.momentum,
                "epsilon": self.epsilon}

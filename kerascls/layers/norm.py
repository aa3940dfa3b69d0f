"""Normalization as a hyper-parameter: one factory every family calls.

``get_norm("batch" | "layer" | "group" | "instance" | "batch_channel" | "none")`` returns a
fresh layer, so a family written once accepts any of them (``norm=`` in create_model).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerascls.errors import UserError
from kerascls.layers.batch_channel import BatchChannelNormalization
from kerascls.layers.standardize import group_standardize, resolve_groups, standardize
from kerascls.layers.types import Config, Shape, Tensor

__all__ = ["NORMS", "GroupNorm", "LayerNorm", "get_norm", "group_standardize",
           "resolve_groups", "standardize"]

NORMS = ("batch", "layer", "group", "instance", "batch_channel", "none")


@keras.saving.register_keras_serializable(package="kerascls")
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last (channel) axis that converts to int8 TFLite cleanly.

    ``keras.layers.LayerNormalization`` leaves a float ``NEG`` op in full-integer TFLite
    (``tests/test_tflite.py`` builds that case); writing the statistics as
    ``d = x - mean; v = mean(d*d)`` and scaling with ``rsqrt`` converts with no float op.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: Shape) -> None:
        dim = int(input_shape[-1])
        # float32 reads (autocast off): the statistics are float32 under mixed precision.
        self.gamma = self.add_weight(shape=(dim,), initializer="ones", name="gamma",
                                     autocast=False)
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta",
                                    autocast=False)

    def call(self, x: Tensor) -> Tensor:
        y = standardize(x, axis=-1, epsilon=self.epsilon)
        return ops.cast(y * self.gamma + self.beta, self.compute_dtype)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "epsilon": self.epsilon}


def get_norm(norm: str | None, name: str | None = None, *, groups: int = 32,
             epsilon: float | None = None, **kwargs: Any) -> keras.layers.Layer:
    """A new normalization layer of the given kind (``none`` gives an Identity).

    Args:
        norm: one of ``NORMS`` (None means ``none``).
        name: layer name (families pass names that match reference weight files).
        groups: group count for ``group`` (clipped to a divisor of the channels at build).
        epsilon: override the kind's default epsilon.
    """
    norm = norm or "none"
    eps = {} if epsilon is None else {"epsilon": epsilon}
    if norm == "batch":
        # PyTorch's running-statistics momentum (0.1 there, 0.9 here) rather than Keras's
        # 0.99: the statistics settle in tens of steps, which short runs and fine-tuning need.
        kwargs.setdefault("momentum", 0.9)
        return keras.layers.BatchNormalization(name=name, **eps, **kwargs)
    if norm == "layer":
        return LayerNorm(name=name, **eps, **kwargs)
    if norm == "group":
        return GroupNorm(groups=groups, name=name, **eps, **kwargs)
    if norm == "instance":
        return GroupNorm(groups=-1, name=name, **eps, **kwargs)
    if norm == "batch_channel":
        return BatchChannelNormalization(name=name, **eps, **kwargs)
    if norm == "none":
        return keras.layers.Identity(name=name)
    raise UserError(f"norm must be one of {NORMS}, got {norm!r}")


@keras.saving.register_keras_serializable(package="kerascls")
class GroupNorm(keras.layers.GroupNormalization):
    """GroupNormalization whose group count adapts to the channels it meets.

    ``groups=-1`` is instance normalization; a group count that does not divide the
    channels falls back to their greatest common divisor, so one ``norm="group"`` works
    for every width in a network.
    """

    def __init__(self, groups: int = 32, epsilon: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(groups=groups, epsilon=epsilon, **kwargs)
        self.requested_groups = groups

    def build(self, input_shape: Shape) -> None:
        self.groups = resolve_groups(self.requested_groups, int(input_shape[self.axis]))
        super().build(input_shape)

    def call(self, x: Tensor) -> Tensor:
        """Per-group statistics written int8-clean (Keras's version leaves a float NEG)."""
        shape = ops.shape(x)
        y = ops.reshape(group_standardize(x, self.groups, self.epsilon), shape)
        if self.scale:
            y = y * ops.cast(self.gamma, y.dtype)
        if self.center:
            y = y + ops.cast(self.beta, y.dtype)
        return ops.cast(y, self.compute_dtype)

    def get_config(self) -> Config:
        # Save the requested count, not the one resolved for this layer's width.
        return {**super().get_config(), "groups": self.requested_groups}

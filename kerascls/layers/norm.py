"""Normalization as a hyper-parameter: one factory every family calls.

``get_norm("batch" | "layer" | "group" | "instance" | "batch_channel" | "none")`` returns a
fresh layer, so a family written once accepts any of them (``norm=`` in create_model).
"""

from __future__ import annotations

import keras
from keras import ops

NORMS = ("batch", "layer", "group", "instance", "batch_channel", "none")


@keras.saving.register_keras_serializable(package="kerascls")
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last (channel) axis that converts to int8 TFLite cleanly.

    ``keras.layers.LayerNormalization`` leaves a float ``NEG`` op in full-integer TFLite
    (see DESIGN.md); writing the statistics as ``d = x - mean; v = mean(d*d)`` and scaling
    with ``rsqrt`` converts with no float op.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(dim,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta")

    def call(self, x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        d = x - mean
        var = ops.mean(d * d, axis=-1, keepdims=True)
        return d * ops.rsqrt(var + self.epsilon) * self.gamma + self.beta

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def get_norm(norm: str | None, name: str | None = None, *, groups: int = 32,
             epsilon: float | None = None, **kwargs) -> keras.layers.Layer:
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
        return keras.layers.BatchNormalization(name=name, **eps, **kwargs)
    if norm == "layer":
        return LayerNorm(name=name, **eps, **kwargs)
    if norm == "group":
        return GroupNorm(groups=groups, name=name, **eps, **kwargs)
    if norm == "instance":
        return GroupNorm(groups=-1, name=name, **eps, **kwargs)
    if norm == "batch_channel":
        from kerascls.layers.batch_channel import BatchChannelNormalization
        return BatchChannelNormalization(name=name, **eps, **kwargs)
    if norm == "none":
        return keras.layers.Identity(name=name)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


@keras.saving.register_keras_serializable(package="kerascls")
class GroupNorm(keras.layers.GroupNormalization):
    """GroupNormalization whose group count adapts to the channels it meets.

    ``groups=-1`` is instance normalization; a group count that does not divide the
    channels falls back to their greatest common divisor, so one ``norm="group"`` works
    for every width in a network.
    """

    def build(self, input_shape):
        import math
        channels = int(input_shape[-1])
        self.groups = channels if self.groups == -1 else math.gcd(self.groups, channels)
        super().build(input_shape)

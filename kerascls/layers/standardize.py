"""Statistics shared by the normalization layers: written once, int8-clean.

``norm.py`` (LayerNorm, GroupNorm, the ``get_norm`` factory) and ``batch_channel.py``
both import from here, so neither imports the other's module for a helper.
"""

from __future__ import annotations

import math

from keras import ops

from kerascls.layers.types import Tensor


def standardize(x: Tensor, axis: int | tuple[int, ...], epsilon: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``axis``, in float32, int8-clean.

    Written as ``d = x - mean; v = mean(d*d)`` with ``rsqrt`` so full-integer TFLite keeps
    no float op (no NEG, no SQUARE), and upcast so float16 activations (mixed precision)
    cannot overflow in ``d*d`` — the bug the first LayerNorm had.
    """
    x = ops.cast(x, "float32")
    d = x - ops.mean(x, axis=axis, keepdims=True)
    var = ops.mean(d * d, axis=axis, keepdims=True)
    return d * ops.rsqrt(var + epsilon)


def group_standardize(x: Tensor, groups: int, epsilon: float) -> Tensor:
    """Standardize channels-last ``x`` per sample and per group of channels.

    Returns the grouped tensor ``(N, *spatial, groups, C // groups)`` (float32), so a caller
    can apply a per-group affine before reshaping back to ``ops.shape(x)``.
    """
    shape = ops.shape(x)
    grouped = ops.reshape(x, (-1, *shape[1:-1], groups, x.shape[-1] // groups))
    axes = tuple(range(1, len(grouped.shape) - 2)) + (len(grouped.shape) - 1,)
    return standardize(grouped, axes, epsilon)


def resolve_groups(groups: int, channels: int) -> int:
    """``-1`` → one group per channel; otherwise the largest divisor of channels ≤ groups."""
    return channels if groups == -1 else math.gcd(groups, channels)

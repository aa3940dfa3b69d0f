"""Blocks shared by every family: written once, configured by arguments."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from kerascls.errors import UserError
from kerascls.layers import SqueezeExcite, get_norm
from kerascls.layers.types import Tensor


def conv_norm_act(x: Tensor, filters: int, kernel: int = 3, strides: int = 1, *,
                  norm: str | None = "batch", activation: str | None = "relu",
                  padding: str = "same", use_bias: bool | None = None,
                  attention: str | None = None, name: str = "conv") -> Tensor:
    """Conv2D → norm → activation (→ SE), the unit every CNN family repeats.

    The conv carries a bias only when no normalization follows (a norm's shift makes
    it redundant), unless ``use_bias`` says otherwise. Layer names are
    ``{name}_conv``, ``{name}_norm``, ``{name}_act``, ``{name}_se``.
    """
    has_norm = (norm or "none") != "none"
    bias = (not has_norm) if use_bias is None else use_bias
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                            use_bias=bias, name=f"{name}_conv")(x)
    if has_norm:
        x = get_norm(norm, name=f"{name}_norm")(x)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    return apply_attention(x, attention, name)


def norm(x: Tensor, kind: str | None, name: str, *, epsilon: float | None = None,
         native: str = "batch", skip_none: bool = False) -> Tensor:
    """Apply a fresh ``get_norm(kind)`` layer named ``name`` (names stay one scheme).

    ``epsilon`` is the family's reference value for its ``native`` kind (batch for
    ResNet/EfficientNet, layer for ConvNeXt): outputs only match reference weights with it;
    any other kind keeps its own default. ``skip_none`` returns ``x`` for ``none`` instead
    of an Identity layer (ResNet keeps keras.applications' layer list that way).
    """
    if skip_none and (kind or "none") == "none":
        return x
    return get_norm(kind, name=name, epsilon=epsilon if kind == native else None)(x)


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Linearly increasing stochastic-depth rates, 0 for the first block (timm's rule)."""
    return [rate * i / max(n - 1, 1) for i in range(n)]


def apply_attention(x: Tensor, attention: str | None, name: str) -> Tensor:
    """Insert the named attention block (``se``) or return x unchanged."""
    if attention in (None, "none"):
        return x
    if attention == "se":
        return SqueezeExcite(name=f"{name}_se")(x)
    raise UserError(f"attention must be 'se' or None, got {attention!r}")


def mlp(x: Tensor, widths: Sequence[int], *, activation: str = "relu", dropout: float = 0.0,
        name: str = "fc") -> Tensor:
    """Dense layers (with dropout before each, as AlexNet/VGG place it) for classic heads."""
    for i, width in enumerate(widths):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}{i + 1}_drop")(x)
        x = keras.layers.Dense(width, activation=activation, name=f"{name}{i + 1}")(x)
    return x

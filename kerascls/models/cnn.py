"""Small CNNs: LeNet as the lecture writes it, and ``small_cnn``, the default for Fashion-MNIST."""

from __future__ import annotations

import keras

from kerascls.layers import AdaptiveAveragePooling2D
from kerascls.layers.types import Tensor
from kerascls.models.blocks import conv_norm_act, mlp
from kerascls.models.catalog import register_model


@register_model(family="lenet", paper="LeCun et al. 1998, as in the PyTorch CIFAR tutorial",
                input_size=32, params=62_006, matches="PyTorch tutorial Net (10 classes)",
                ref_classes=10,
                min_input_size=16)  # two valid 5×5 convs and two 2×2 pools: 16 → 1×1
def lenet(x: Tensor, *, norm: str | None = "none", attention: str | None = None,
          activation: str = "relu") -> Tensor:
    """conv 6@5×5 → pool → conv 16@5×5 → pool → fc 120 → fc 84 (→ head fc N)."""
    for i, filters in enumerate((6, 16)):
        x = conv_norm_act(x, filters, 5, norm=norm, activation=activation, padding="valid",
                          use_bias=True, attention=attention, name=f"conv{i + 1}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return mlp(x, (120, 84), activation=activation)


@register_model(family="small_cnn", paper="kerascls default: VGG-style blocks with BatchNorm",
                input_size=28, params=None, matches="", min_input_size=4)  # two 2×2 pools
def small_cnn(x: Tensor, *, widths: tuple[int, ...] = (16, 32, 64), norm: str | None = "batch",
              attention: str | None = None, dropout: float = 0.2, pool: int = 7,
              plain_stages: int = 1) -> Tensor:
    """Three conv-norm-ReLU stages with 2×2 pooling, then pooling and dropout.

    About 7.4 M MACs at 28×28. ``pool`` 0 averages the last map globally; N > 0 pools it
    to N×N (torch's adaptive bins, as VGG does) and flattens, so the head sees where a
    feature is (a sleeve, a heel). ``plain_stages`` leaves the first stages without
    normalization: BatchNorm on TensorFlow is unfused and costs most at full resolution.
    ``kerascls train``'s default (pool 7, one plain stage) is measured in the README.
    """
    for i, filters in enumerate(widths):
        kind = "none" if i < plain_stages else norm
        x = conv_norm_act(x, filters, 3, norm=kind, attention=attention, name=f"stage{i + 1}a")
        x = conv_norm_act(x, filters, 3, norm=kind, attention=attention, name=f"stage{i + 1}b")
        if i < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    if pool:
        x = AdaptiveAveragePooling2D(pool, name="avgpool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.layers.Dropout(dropout, name="head_drop")(x) if dropout else x

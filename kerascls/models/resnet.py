"""ResNet (He et al., 2015) and SE-ResNet (Hu et al., 2018): one builder, depths as data.

Layer names, layer order and conventions follow ``keras.applications.ResNet50/101/152``
(``conv1_conv``, ``conv2_block1_1_conv``, ``conv2_block1_0_bn`` …, stride on the first 1×1
conv of a bottleneck, explicit stem padding, conv biases, BatchNorm epsilon 1.001e-5).
Keras 3 ``.weights.h5`` files key each layer by class and position (``layers/conv2d_7``),
not by name, so identical order is what lets a keras.applications weights file load
with a plain ``model.load_weights`` (see
``kerascls.models.weights.load_keras_applications_weights``).

Parameter counts. ``params=`` is the registry's one convention, PyTorch's
(``kerascls.summary.count_params``: BatchNorm moving statistics are buffers, not
parameters). With C = the sum of conv output channels, ours = torchvision/timm + C (the
conv biases keras.applications keeps); Keras' ``count_params()`` adds 2·C more (moving
mean/variance), which for resnet50/101/152 gives keras.applications' own numbers:

==========  =======  ======================  ============  ====================
model       C        reference (tv / timm)   ours (torch)  Keras count_params
==========  =======  ======================  ============  ====================
resnet18     4,800   11,689,512 (tv)         11,694,312    11,703,912
resnet34     8,512   21,797,672 (tv)         21,806,184    21,823,208
resnet50    26,560   25,557,032 (tv)         25,583,592    25,636,712 = k.a.
resnet101   52,672   44,549,160 (tv)         44,601,832    44,707,176 = k.a.
resnet152   75,712   60,192,808 (tv)         60,268,520    60,419,944 = k.a.
==========  =======  ======================  ============  ====================

SE-ResNets add timm's ``SEModule`` (rd_ratio 1/16, rounded to a multiple of 8 with
round_limit 0, 1×1 convs with biases) after the last norm of every residual branch;
timm's counts equal torchvision's plus those SE weights, so the same +C rule holds
(seresnet18 11,779,624 → 11,784,424; seresnet34 21,960,416 → 21,968,928; seresnet50
28,088,024 → 28,114,584; seresnet101 49,326,872 → 49,379,544; seresnet152 66,821,848 →
66,897,560). Read off ``timm.create_model`` (2026-11-25): resnet18/34/50 and every
seresnet above; resnet101/152's torchvision counts equal keras.applications' − 3·C.
"""

from __future__ import annotations

from typing import Callable

import keras

from kerascls.errors import UserError
from kerascls.layers import StochasticDepth
from kerascls.layers.types import Tensor
from kerascls.models.blocks import apply_attention, drop_path_rates, norm
from kerascls.models.catalog import register_model

BN_EPSILON = 1.001e-5  # keras.applications' value; outputs only match with it

# depth: (block type, blocks per stage)
DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
STAGE_WIDTHS = (64, 128, 256, 512)


def _norm(x, kind: str | None, name: str):
    """The chosen norm, named ``*_bn`` whatever its kind; ``none`` adds no layer."""
    return norm(x, kind, name, epsilon=BN_EPSILON, skip_none=True)


def _conv(x, filters: int, kernel: int, strides: int = 1, *, name: str):
    """Conv2D with a bias (keras.applications' convention); stride-2 k×k pads symmetrically.

    TF-style ``same`` padding pads only bottom/right for stride 2; explicit symmetric
    padding matches torchvision's, so ported 18/34 weights see the same pixels.
    """
    padding = "same"
    if strides > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                               name=name)(x)


def _conv_norm(x, filters: int, kernel: int, strides: int, norm: str | None, name: str,
               activation: str | None = None):
    """``{name}_conv`` → ``{name}_bn`` (→ ``{name}_relu``), the keras.applications unit."""
    x = _conv(x, filters, kernel, strides, name=f"{name}_conv")
    x = _norm(x, norm, f"{name}_bn")
    return keras.layers.Activation(activation, name=f"{name}_relu")(x) if activation else x


def _drop_path(x, rate: float, name: str):
    """Stochastic depth on the residual branch; rate 0 adds no layer (keeps weight order)."""
    return StochasticDepth(rate, name=name)(x) if rate else x


def _branch_basic(x, filters: int, strides: int, norm, activation, name: str):
    """3×3 → 3×3 (stride on the first), as torchvision's BasicBlock."""
    x = _conv_norm(x, filters, 3, strides, norm, f"{name}_1", activation)
    return _conv_norm(x, filters, 3, 1, norm, f"{name}_2")


def _branch_bottleneck(x, filters: int, strides: int, norm, activation, name: str):
    """1×1 → 3×3 → 1×1 (×4), stride on the first 1×1 as keras.applications (ResNet v1)."""
    x = _conv_norm(x, filters, 1, strides, norm, f"{name}_1", activation)
    x = _conv_norm(x, filters, 3, 1, norm, f"{name}_2", activation)
    return _conv_norm(x, 4 * filters, 1, 1, norm, f"{name}_3")


BRANCHES: dict[str, Callable] = {"basic": _branch_basic, "bottleneck": _branch_bottleneck}


def residual_block(x: Tensor, block: str, filters: int, strides: int, *, norm: str | None,
                   attention: str | None, drop_path: float, activation: str, name: str) -> Tensor:
    """shortcut + drop_path(attention(branch(x))), then the activation.

    The projection shortcut (``{name}_0``) is built before the branch, as keras.applications
    does, so Conv2D/BatchNormalization positions (hence weight-file keys) line up.
    """
    out = filters * EXPANSION[block]
    shortcut = x
    if strides != 1 or x.shape[-1] != out:
        shortcut = _conv_norm(x, out, 1, strides, norm, f"{name}_0")
    x = BRANCHES[block](x, filters, strides, norm, activation, name)
    x = apply_attention(x, attention, name)
    x = _drop_path(x, drop_path, f"{name}_drop")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation(activation, name=f"{name}_out")(x)


def stem(x: Tensor, norm: str | None, activation: str, kind: str = "imagenet") -> Tensor:
    """7×7/2 conv and 3×3/2 max-pool with keras.applications' explicit padding.

    ``kind="small"`` is the CIFAR-style stem (one 3×3/1 conv, no pooling) for 28–64 px
    images, where the ImageNet stem would shrink a 32×32 input to 8×8 before any block.
    """
    if kind == "small":
        x = keras.layers.Conv2D(64, 3, padding="same", name="conv1_conv")(x)
        x = _norm(x, norm, "conv1_bn")
        return keras.layers.Activation(activation, name="conv1_relu")(x)
    if kind != "imagenet":
        raise UserError(f"stem must be 'imagenet' or 'small', got {kind!r}")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = _norm(x, norm, "conv1_bn")
    x = keras.layers.Activation(activation, name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def resnet(x: Tensor, *, depth: int = 50, norm: str | None = "batch", attention: str | None = None,
           drop_path: float = 0.0, activation: str = "relu", stem_kind: str = "imagenet") -> Tensor:
    """ResNet backbone of ``depth`` ∈ DEPTHS → globally pooled features.

    Args:
        depth: 18, 34 (basic blocks) or 50, 101, 152 (bottlenecks).
        norm: any kind ``get_norm`` knows; ``batch`` keeps keras.applications parity.
        attention: ``se`` for SE-ResNet (timm's SEModule placement), None for plain.
        drop_path: stochastic-depth rate of the last block; earlier blocks ramp up to it.
        activation: activation after the stem, inside branches and after each add.
        stem_kind: ``imagenet`` (7×7/2 + max-pool) or ``small`` (3×3/1, for tiny images).
    """
    if depth not in DEPTHS:
        raise UserError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
    block, counts = DEPTHS[depth]
    rates = iter(drop_path_rates(drop_path, sum(counts)))
    x = stem(x, norm, activation, stem_kind)
    for stage, (filters, n) in enumerate(zip(STAGE_WIDTHS, counts)):
        for i in range(n):
            strides = 2 if (i == 0 and stage > 0) else 1
            x = residual_block(x, block, filters, strides, norm=norm, attention=attention,
                               drop_path=next(rates), activation=activation,
                               name=f"conv{stage + 2}_block{i + 1}")
    return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)


_PAPERS = {"resnet": "He et al. 2015, Deep Residual Learning (arXiv:1512.03385)",
           "seresnet": "Hu et al. 2018, Squeeze-and-Excitation Networks (arXiv:1709.01507)"}

# Keras' count_params() (BN moving statistics included) = keras.applications' own numbers
KERAS_PARAMS = {"resnet50": 25_636_712, "resnet101": 44_707_176, "resnet152": 60_419_944}

# name, depth, attention, params (PyTorch convention, see module docstring), what it matches
_VARIANTS = (
    ("resnet18", 18, None, 11_694_312, "torchvision resnet18 11,689,512 + one conv bias per channel"),  # noqa: E501
    ("resnet34", 34, None, 21_806_184, "torchvision resnet34 21,797,672 + one conv bias per channel"),  # noqa: E501
    ("resnet50", 50, None, 25_583_592, "keras.applications.ResNet50 (layer-compatible)"),
    ("resnet101", 101, None, 44_601_832, "keras.applications.ResNet101 (layer-compatible)"),
    ("resnet152", 152, None, 60_268_520, "keras.applications.ResNet152 (layer-compatible)"),
    ("seresnet18", 18, "se", 11_784_424, "timm seresnet18 11,779,624 + one conv bias per channel"),
    ("seresnet34", 34, "se", 21_968_928, "timm seresnet34 21,960,416 + one conv bias per channel"),
    ("seresnet50", 50, "se", 28_114_584, "timm seresnet50 28,088,024 + one conv bias per channel"),
    ("seresnet101", 101, "se", 49_379_544, "timm seresnet101 49,326,872 + one conv bias per channel"),  # noqa: E501
    ("seresnet152", 152, "se", 66_897_560, "timm seresnet152 66,821,848 + one conv bias per channel"),  # noqa: E501
)

for _name, _depth, _attention, _params, _matches in _VARIANTS:
    register_model(_name, family="resnet", paper=_PAPERS["seresnet" if _attention else "resnet"],
                   params=_params, matches=_matches, keras_params=KERAS_PARAMS.get(_name),
                   depth=_depth, attention=_attention,
                   # total stride 32 (as keras.applications' min_size); the small stem's 8
                   min_input_size=32, min_input_overrides={("stem_kind", "small"): 8})(resnet)

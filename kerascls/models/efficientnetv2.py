"""EfficientNetV2 B0–B3, S, M, L (Tan & Le 2021); FusedMBConv here, MBConv shared.

Layer for layer ``keras.applications.EfficientNetV2*`` (names, order, SE width from the
block input, drop connect rising as ``rate·b/blocks``, BatchNorm epsilon 1e-3), so its
weight files load through ``kerascls.models.weights``. The early stages are FusedMBConv
(one full k×k conv instead of 1×1 expand + depthwise: faster on accelerators at large
resolutions); the late ones reuse EfficientNet's ``mbconv``. keras.applications pads its
convolutions "same"; the shared ``mbconv`` makes TF's "same" explicit before its two
stride-2 depthwise convs (identical values, one weightless ``dwconv_pad`` layer more).

Preprocessing. keras.applications builds it into the model (``include_preprocessing``):
B0–B3 ``x/255`` then ImageNet mean/std, S/M/L ``x/128 − 1``. Ours keeps it as config
(``ImagePreprocessing``): ``weights="imagenet"`` or a keras.applications file selects
those statistics (``kerascls.models.weights``), mean = std = 128/255 for S/M/L.

Parameter counts. ``params=`` is the PyTorch convention (``count_params``: BatchNorm
moving statistics excluded), keras.applications' trainable count. Its ``count_params()``
(``keras_params``) adds the BN statistics only: its input ``Normalization`` is built from
constant mean/variance and ``Rescaling`` has no weights, so ``model.count_params()``
equals keras.applications' ``count_params()`` exactly (no +7 as for EfficientNet V1).
"""

from __future__ import annotations

import math

import keras

from kerascls.errors import UserError
from kerascls.layers import SqueezeExcite, StochasticDepth
from kerascls.layers.types import Tensor
from kerascls.models.catalog import register_model
from kerascls.models.efficientnet import NAMES, mb_norm, mbconv

# kernel, repeats, filters in, filters out, expand ratio, SE ratio, stride, fused
_B = ((3, 1, 32, 16, 1, 0, 1, True), (3, 2, 16, 32, 4, 0, 2, True),
      (3, 2, 32, 48, 4, 0, 2, True), (3, 3, 48, 96, 4, 0.25, 2, False),
      (3, 5, 96, 112, 6, 0.25, 1, False), (3, 8, 112, 192, 6, 0.25, 2, False))
STAGES = {
    "b": _B,
    "s": ((3, 2, 24, 24, 1, 0, 1, True), (3, 4, 24, 48, 4, 0, 2, True),
          (3, 4, 48, 64, 4, 0, 2, True), (3, 6, 64, 128, 4, 0.25, 2, False),
          (3, 9, 128, 160, 6, 0.25, 1, False), (3, 15, 160, 256, 6, 0.25, 2, False)),
    "m": ((3, 3, 24, 24, 1, 0, 1, True), (3, 5, 24, 48, 4, 0, 2, True),
          (3, 5, 48, 80, 4, 0, 2, True), (3, 7, 80, 160, 4, 0.25, 2, False),
          (3, 14, 160, 176, 6, 0.25, 1, False), (3, 18, 176, 304, 6, 0.25, 2, False),
          (3, 5, 304, 512, 6, 0.25, 1, False)),
    "l": ((3, 4, 32, 32, 1, 0, 1, True), (3, 7, 32, 64, 4, 0, 2, True),
          (3, 7, 64, 96, 4, 0, 2, True), (3, 10, 96, 192, 4, 0.25, 2, False),
          (3, 19, 192, 224, 6, 0.25, 1, False), (3, 25, 224, 384, 6, 0.25, 2, False),
          (3, 7, 384, 640, 6, 0.25, 1, False)),
}
# keras.applications' MBConv names its depthwise conv ``dwconv2``
V2_NAMES = {**NAMES, "dw": "dwconv2"}


def round_filters(filters: float, width: float, divisor: int = 8) -> int:
    """keras.applications' V2 rounding (unlike V1's, no "never below 90 %" step)."""
    return max(divisor, int(filters * width + divisor / 2) // divisor * divisor)


def fused_mbconv(x: Tensor, filters: int, kernel: int, strides: int, *, expand_ratio: int, se: int,
                 activation: str, norm: str | None, drop_path: float, prefix: str) -> Tensor:
    """FusedMBConv: k×k conv (expand) → (SE) → 1×1 project, or one k×k conv when ratio 1.

    keras.applications' order and names; the shortcut exists when the shape is kept.
    """
    shortcut, c_in = x, x.shape[-1]
    single = expand_ratio == 1
    if not single:
        x = keras.layers.Conv2D(c_in * expand_ratio, kernel, strides, padding="same",
                                use_bias=False, name=f"{prefix}expand_conv")(x)
        x = mb_norm(x, norm, f"{prefix}expand_bn")
        x = keras.layers.Activation(activation, name=f"{prefix}expand_activation")(x)
    if se:
        x = SqueezeExcite(rd_channels=se, activation=activation, gate="sigmoid",
                          name=f"{prefix}se")(x)
    x = keras.layers.Conv2D(filters, kernel if single else 1, strides if single else 1,
                            padding="same", use_bias=False, name=f"{prefix}project_conv")(x)
    x = mb_norm(x, norm, f"{prefix}project_bn")
    if single:
        x = keras.layers.Activation(activation, name=f"{prefix}project_activation")(x)
    if strides != 1 or c_in != filters:
        return x
    if drop_path:
        x = StochasticDepth(drop_path, name=f"{prefix}drop")(x)
    return keras.layers.Add(name=f"{prefix}add")([x, shortcut])


def _block(x, row: tuple, filters: int, strides: int, *, use_se: bool, **kw):
    """One MBConv or FusedMBConv of a stage row (SE width from the block input)."""
    kernel, _, _, _, ratio, se_ratio, _, fused = row
    c_in = x.shape[-1]
    se = max(1, int(c_in * se_ratio)) if (use_se and se_ratio) else 0
    if fused:
        return fused_mbconv(x, filters, kernel, strides, expand_ratio=ratio, se=se, **kw)
    return mbconv(x, filters, kernel, strides, expand=c_in * ratio if ratio != 1 else None,
                  se=se, se_activation=kw["activation"], se_gate="sigmoid",
                  names=V2_NAMES, **kw)


def efficientnetv2(x: Tensor, *, config: str = "b", width: float = 1.0, depth: float = 1.0,
                   dropout: float = 0.2, norm: str | None = "batch",
                   attention: str | None = "se", drop_path: float = 0.2,
                   activation: str = "swish") -> Tensor:
    """EfficientNetV2 backbone → pooled features (dropout last, as keras.applications).

    Args:
        config: stage table, ``b`` (B0–B3), ``s``, ``m`` or ``l``.
        width, depth: compound-scaling coefficients (B1–B3).
        dropout: rate before the classifier.
        norm: the norm after every conv (``batch`` keeps weight compatibility).
        attention: ``se`` (the paper's SE in the MBConv stages) or None (no SE).
        drop_path: drop-connect rate, rising as ``rate·b/blocks`` (keras' schedule).
        activation: override swish.
    """
    if attention not in (None, "none", "se"):
        raise UserError(f"attention must be 'se' or None, got {attention!r}")
    stages = STAGES[config]
    repeats = [math.ceil(depth * row[1]) for row in stages]
    total = float(sum(row[1] for row in stages))  # keras divides by the unscaled count
    x = keras.layers.Conv2D(round_filters(stages[0][2], width), 3, 2, padding="same",
                            use_bias=False, name="stem_conv")(x)
    x = mb_norm(x, norm, "stem_bn")
    x = keras.layers.Activation(activation, name="stem_activation")(x)
    b = 0
    for i, (row, n) in enumerate(zip(stages, repeats)):
        for j in range(n):
            x = _block(x, row, round_filters(row[3], width), row[6] if j == 0 else 1,
                       use_se=attention == "se", activation=activation, norm=norm,
                       drop_path=drop_path * b / total, prefix=f"block{i + 1}{chr(97 + j)}_")
            b += 1
    x = keras.layers.Conv2D(round_filters(1280, width), 1, padding="same", use_bias=False,
                            name="top_conv")(x)
    x = mb_norm(x, norm, "top_bn")
    x = keras.layers.Activation(activation, name="top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Dropout(dropout, name="top_dropout")(x) if dropout else x


PAPER = "Tan & Le 2021, EfficientNetV2: Smaller Models and Faster Training (arXiv:2104.00298)"

# name, config, width, depth, resolution, params (PyTorch convention), keras count_params
_VARIANTS = (
    ("efficientnetv2_b0", "b", 1.0, 1.0, 224, 7_139_704, 7_200_312),
    ("efficientnetv2_b1", "b", 1.0, 1.1, 240, 8_141_052, 8_212_124),
    ("efficientnetv2_b2", "b", 1.1, 1.2, 260, 10_096_086, 10_178_374),
    ("efficientnetv2_b3", "b", 1.2, 1.4, 300, 14_358_406, 14_467_622),
    ("efficientnetv2_s", "s", 1.0, 1.0, 384, 21_458_488, 21_612_360),
    ("efficientnetv2_m", "m", 1.0, 1.0, 480, 54_139_356, 54_431_388),
    ("efficientnetv2_l", "l", 1.0, 1.0, 480, 118_515_272, 119_027_848),
)

# keras.applications count_params() (BN statistics included), = our model.count_params()
for _n, _cfg, _w, _d, _res, _params, _keras in _VARIANTS:
    register_model(_n, family="efficientnetv2", paper=PAPER, input_size=_res, params=_params,
                   matches=(f"keras.applications.EfficientNetV2{_n.split('_')[1].upper()} "
                            f"(count_params {_keras:,} with BN statistics)"),
                   keras_params=_keras,
                   min_input_size=32,  # total stride 32, as keras.applications' min_size
                   config=_cfg, width=_w, depth=_d)(efficientnetv2)

"""EfficientNet B0–B7 (Tan & Le 2019) and EfficientNet-Lite0–4; the MBConv block written once.

B0–B7 follow ``keras.applications.EfficientNetB*`` layer for layer (names, order, explicit
TF-"same" padding before stride-2 depthwise convs, SE width from the block input, drop
connect rising as ``rate·b/blocks``), so their weight files load through
``kerascls.models.weights``. Lite0–4 are timm's ``tf_efficientnet_lite*``: no SE, ReLU6,
stem (32) and head (1280) fixed and the first/last stage's repeats unscaled, since
squeeze-excite and swish quantize badly on edge accelerators.

Parameter counts. ``params=`` is the PyTorch convention the registry test checks
(``kerascls.summary.count_params``: BatchNorm moving statistics excluded), which is
keras.applications' trainable count and timm's ``efficientnet_b*``/``tf_efficientnet_*``
count. keras.applications' ``count_params()`` — the numbers the issue lists, e.g. B0
5,330,571 — adds the BN moving mean/variance *and* 7 non-trainable values of its input
``Normalization`` layer (mean 3, variance 3, count 1). Ours keeps preprocessing as
config (``ImagePreprocessing``, no weights), so ``model.count_params() + 7`` equals
keras.applications' count; ``tests/test_zoo2.py`` checks both numbers.
"""

from __future__ import annotations

import math

import keras

from kerascls.errors import UserError
from kerascls.layers import SqueezeExcite, make_divisible
from kerascls.layers.types import Tensor
from kerascls.models import blocks
from kerascls.models.catalog import register_model

BN_EPS = 1e-3  # keras.applications' and TF's EfficientNet/MobileNetV3 value

# kernel, repeats, filters in, filters out, expand ratio, stride (SE ratio 0.25 for B*)
STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)

# keras.applications' layer-name suffixes; MobileNetV3 passes its own
NAMES = {"expand": "expand_conv", "expand_bn": "expand_bn", "expand_act": "expand_activation",
         "pad": "dwconv_pad", "dw": "dwconv", "dw_bn": "bn", "dw_act": "activation",
         "se": "se", "project": "project_conv", "project_bn": "project_bn",
         "drop": "drop", "add": "add"}


def tf_same_pad(size: int | None, kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """TF 'same' padding of a stride-2 conv made explicit (keras' ``correct_pad``)."""
    adjust = 1 if size is None else 1 - size % 2
    half = kernel // 2
    return ((half - adjust, half), (half - adjust, half))


def mb_norm(x: Tensor, kind: str | None, name: str) -> Tensor:
    """The chosen norm with keras.applications' batch-norm epsilon (MBConv families)."""
    return blocks.norm(x, kind, name, epsilon=BN_EPS)


def mbconv(x: Tensor, filters: int, kernel: int, strides: int, *, expand: int | None, se: int,
           activation: str, se_activation: str, se_gate: str, norm: str | None,
           drop_path: float, prefix: str, names: dict = NAMES) -> Tensor:
    """Inverted residual: (1×1 expand) → depthwise k×k → (SE) → 1×1 project (+ shortcut).

    ``expand`` is the expanded width (None: no expand conv), ``se`` the SE bottleneck
    width (0: none). The shortcut exists when the shape is kept, with drop path on the
    branch; layer order is keras.applications', so weight files map one-to-one.
    """
    n = {k: f"{prefix}{v}" for k, v in names.items()}
    shortcut = x
    if expand:
        x = keras.layers.Conv2D(expand, 1, padding="same", use_bias=False, name=n["expand"])(x)
        x = mb_norm(x, norm, n["expand_bn"])
        x = keras.layers.Activation(activation, name=n["expand_act"])(x)
    padding = "same"
    if strides == 2:
        x = keras.layers.ZeroPadding2D(tf_same_pad(x.shape[1], kernel), name=n["pad"])(x)
        padding = "valid"
    x = keras.layers.DepthwiseConv2D(kernel, strides, padding=padding, use_bias=False,
                                     name=n["dw"])(x)
    x = mb_norm(x, norm, n["dw_bn"])
    x = keras.layers.Activation(activation, name=n["dw_act"])(x)
    if se:
        x = SqueezeExcite(rd_channels=se, activation=se_activation, gate=se_gate,
                          name=n["se"])(x)
    x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, name=n["project"])(x)
    x = mb_norm(x, norm, n["project_bn"])
    if strides != 1 or shortcut.shape[-1] != filters:
        return x
    if drop_path:
        from kerascls.layers import StochasticDepth
        x = StochasticDepth(drop_path, name=n["drop"])(x)
    return keras.layers.Add(name=n["add"])([x, shortcut])


def _stem(x, filters: int, norm, activation: str):
    x = keras.layers.ZeroPadding2D(tf_same_pad(x.shape[1], 3), name="stem_conv_pad")(x)
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="valid", use_bias=False,
                            name="stem_conv")(x)
    x = mb_norm(x, norm, "stem_bn")
    return keras.layers.Activation(activation, name="stem_activation")(x)


def _repeats(width: float, depth: float, lite: bool) -> list[tuple[int, int, int]]:
    """(stage, repeats, filters in, filters out) after compound scaling."""
    rows = []
    for i, (_, repeats, f_in, f_out, _, _) in enumerate(STAGES):
        fixed = lite and i in (0, len(STAGES) - 1)
        rows.append((i, repeats if fixed else int(math.ceil(depth * repeats)),
                     32 if (lite and i == 0) else make_divisible(f_in * width),
                     make_divisible(f_out * width)))
    return rows


def efficientnet(x: Tensor, *, width: float = 1.0, depth: float = 1.0, dropout: float = 0.2,
                 lite: bool = False, norm: str | None = "batch", attention: str | None = "se",
                 drop_path: float = 0.2, activation: str | None = None) -> Tensor:
    """EfficientNet backbone → pooled features (dropout last, as keras.applications).

    Args:
        width, depth: compound-scaling coefficients.
        dropout: rate before the classifier.
        lite: EfficientNet-Lite (ReLU6, fixed stem/head, no SE unless ``attention="se"``).
        norm: the norm after every conv (``batch`` keeps weight compatibility).
        attention: ``se`` (B*: the paper's SE, ratio 0.25 of the block input) or None.
        drop_path: drop-connect rate, rising as ``rate·b/blocks`` (keras' schedule).
        activation: override swish (B*) / relu6 (Lite).
    """
    act = activation or ("relu6" if lite else "swish")
    use_se = attention == "se"
    if attention not in (None, "none", "se"):
        raise UserError(f"attention must be 'se' or None, got {attention!r}")
    stages = _repeats(width, depth, lite)
    total = sum(r for _, r, _, _ in stages)
    x = _stem(x, 32 if lite else make_divisible(32 * width), norm, act)
    b = 0
    for i, repeats, f_in, f_out in stages:
        kernel, _, _, _, ratio, stride = STAGES[i]
        for j in range(repeats):
            c_in = f_in if j == 0 else f_out
            x = mbconv(x, f_out, kernel, stride if j == 0 else 1,
                       expand=c_in * ratio if ratio != 1 else None,
                       se=max(1, int(c_in * 0.25)) if use_se else 0,
                       activation=act, se_activation=act, se_gate="sigmoid", norm=norm,
                       drop_path=drop_path * b / total, prefix=f"block{i + 1}{chr(97 + j)}_")
            b += 1
    head = 1280 if lite else make_divisible(1280 * width)
    x = keras.layers.Conv2D(head, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = mb_norm(x, norm, "top_bn")
    x = keras.layers.Activation(act, name="top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Dropout(dropout, name="top_dropout")(x) if dropout else x


_PAPERS = {False: "Tan & Le 2019, EfficientNet (arXiv:1905.11946)",
           True: "Tan & Le 2019, EfficientNet; Lite: TensorFlow TPU repo / timm (2020)"}

# name, width, depth, resolution, dropout, lite, params (PyTorch convention), matches
_VARIANTS = (
    ("efficientnet_b0", 1.0, 1.0, 224, 0.2, False, 5_288_548, 5_330_571),
    ("efficientnet_b1", 1.0, 1.1, 240, 0.2, False, 7_794_184, 7_856_239),
    ("efficientnet_b2", 1.1, 1.2, 260, 0.3, False, 9_109_994, 9_177_569),
    ("efficientnet_b3", 1.2, 1.4, 300, 0.3, False, 12_233_232, 12_320_535),
    ("efficientnet_b4", 1.4, 1.8, 380, 0.4, False, 19_341_616, 19_466_823),
    ("efficientnet_b5", 1.6, 2.2, 456, 0.4, False, 30_389_784, 30_562_527),
    ("efficientnet_b6", 1.8, 2.6, 528, 0.5, False, 43_040_704, 43_265_143),
    ("efficientnet_b7", 2.0, 3.1, 600, 0.5, False, 66_347_960, 66_658_687),
    ("efficientnet_lite0", 1.0, 1.0, 224, 0.2, True, 4_652_008, None),
    ("efficientnet_lite1", 1.0, 1.1, 240, 0.2, True, 5_416_680, None),
    ("efficientnet_lite2", 1.1, 1.2, 260, 0.3, True, 6_092_072, None),
    ("efficientnet_lite3", 1.2, 1.4, 300, 0.3, True, 8_197_096, None),
    ("efficientnet_lite4", 1.4, 1.8, 380, 0.3, True, 13_006_568, None),
)

for _n, _w, _d, _res, _drop, _lite, _params, _keras in _VARIANTS:
    _ref = (f"keras.applications.EfficientNetB{_n[-1]} (count_params {_keras:,} with BN "
            "statistics + 7 Normalization values)") if _keras else f"timm tf_{_n}"
    register_model(_n, family="efficientnet_lite" if _lite else "efficientnet",
                   paper=_PAPERS[_lite], input_size=_res, params=_params, matches=_ref,
                   keras_params=_keras,  # the twin's count_params (+7: its Normalization)
                   min_input_size=32,  # total stride 32, as keras.applications' min_size
                   width=_w, depth=_d, dropout=_drop, lite=_lite,
                   attention=None if _lite else "se")(efficientnet)

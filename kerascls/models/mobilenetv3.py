"""MobileNetV3 Small and Large (Howard et al. 2019): inverted residuals as rows of data.

Follows ``keras.applications.MobileNetV3{Small,Large}`` (alpha 1.0, not minimalistic)
layer for layer — same MBConv block as EfficientNet (``efficientnet.mbconv``), SE width
``make_divisible(expanded/4)`` with a hard-sigmoid gate, a 1×1 ``conv_2`` (1024 / 1280,
with bias) after pooling — so keras' weight files load through ``kerascls.models.weights``
(their ``conv_2``/``logits`` 1×1 convs map onto our Dense ``conv_2``/``head``).

Hard-swish is Keras' ``hard_swish`` activation: the TFLite converter fuses it into one
``HARD_SWISH`` op, which XNNPACK runs in float32 only, so int8 export spells it as
SUB+RELU6 and two MULs instead (``kerascls.tflite.convert.int8_friendly_activations``).

Parameter counts: keras.applications' ``count_params()`` (Small 2,554,968, Large
5,507,432) includes BatchNorm moving statistics; ``params=`` is the PyTorch convention the
registry checks (statistics excluded): Small 2,542,856 (−12,112), Large 5,483,032
(−24,400), which is also timm's ``mobilenetv3_large_100`` count.
"""

from __future__ import annotations

import keras

from kerascls.layers import make_divisible
from kerascls.layers.types import Tensor
from kerascls.models.catalog import register_model
from kerascls.models.efficientnet import mb_norm, mbconv

HS, RE = "hard_swish", "relu"

# expansion, filters, kernel, stride, SE, activation  (keras.applications' stack_fn)
LARGE = ((1, 16, 3, 1, False, RE), (4, 24, 3, 2, False, RE), (3, 24, 3, 1, False, RE),
         (3, 40, 5, 2, True, RE), (3, 40, 5, 1, True, RE), (3, 40, 5, 1, True, RE),
         (6, 80, 3, 2, False, HS), (2.5, 80, 3, 1, False, HS), (2.3, 80, 3, 1, False, HS),
         (2.3, 80, 3, 1, False, HS), (6, 112, 3, 1, True, HS), (6, 112, 3, 1, True, HS),
         (6, 160, 5, 2, True, HS), (6, 160, 5, 1, True, HS), (6, 160, 5, 1, True, HS))
SMALL = ((1, 16, 3, 2, True, RE), (72 / 16, 24, 3, 2, False, RE),
         (88 / 24, 24, 3, 1, False, RE), (4, 40, 5, 2, True, HS), (6, 40, 5, 1, True, HS),
         (6, 40, 5, 1, True, HS), (3, 48, 5, 1, True, HS), (3, 48, 5, 1, True, HS),
         (6, 96, 5, 2, True, HS), (6, 96, 5, 1, True, HS), (6, 96, 5, 1, True, HS))
CONFIGS = {"small": (SMALL, 1024), "large": (LARGE, 1280)}

NAMES = {"expand": "expand", "expand_bn": "expand_bn", "expand_act": "expand_act",
         "pad": "depthwise_pad", "dw": "depthwise", "dw_bn": "depthwise_bn",
         "dw_act": "depthwise_act", "se": "squeeze_excite", "project": "project",
         "project_bn": "project_bn", "drop": "drop", "add": "add"}


def _conv_bn_act(x, filters: int, norm, activation: str, name: str, strides: int = 1,
                 kernel: int = 1):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=name)(x)
    x = mb_norm(x, norm, f"{name}_bn")
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def mobilenetv3(x: Tensor, *, size: str = "large", norm: str | None = "batch",
                attention: str | None = "se", drop_path: float = 0.0,
                dropout: float = 0.2) -> Tensor:
    """MobileNetV3 backbone → pooled, projected features (dropout last).

    Args:
        size: ``small`` or ``large``.
        norm: the norm after every conv (``batch`` keeps weight compatibility).
        attention: ``se`` keeps the paper's SE blocks, None removes them.
        drop_path: stochastic-depth rate of the last residual block (linear ramp).
        dropout: rate before the classifier (keras.applications: 0.2).
    """
    rows, last = CONFIGS[size]
    x = _conv_bn_act(x, 16, norm, HS, "conv", strides=2, kernel=3)
    for i, (ratio, filters, kernel, stride, se, act) in enumerate(rows):
        expanded = make_divisible(x.shape[-1] * ratio)
        x = mbconv(x, filters, kernel, stride, expand=expanded if i else None,
                   se=make_divisible(expanded * 0.25) if se and attention == "se" else 0,
                   activation=act, se_activation="relu", se_gate="hard_sigmoid", norm=norm,
                   drop_path=drop_path * i / (len(rows) - 1),
                   prefix=f"expanded_conv_{i}_" if i else "expanded_conv_", names=NAMES)
    x = _conv_bn_act(x, make_divisible(x.shape[-1] * 6), norm, HS, "conv_1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(last, activation=HS, name="conv_2")(x)
    return keras.layers.Dropout(dropout, name="dropout")(x) if dropout else x


_PAPER = "Howard et al. 2019, Searching for MobileNetV3 (arXiv:1905.02244)"

for _size, _params, _keras in (("small", 2_542_856, 2_554_968), ("large", 5_483_032, 5_507_432)):
    register_model(f"mobilenetv3_{_size}", family="mobilenetv3", paper=_PAPER, params=_params,
                   min_input_size=32,  # total stride 32, as keras.applications' min_size
                   keras_params=_keras,
                   matches=f"keras.applications.MobileNetV3{_size.capitalize()} "
                           f"(count_params {_keras:,} with BN statistics)",
                   size=_size)(mobilenetv3)

"""ConvNeXt (Liu et al. 2022) and ConvNeXt V2 (Woo et al. 2023): one block, sizes as rows.

V1 follows ``keras.applications.ConvNeXt*`` layer for layer (names, order, 1e-6 layer
scale, GELU, Dense pointwise convs), so its weight files load through
``kerascls.models.weights``. The norms are ``kerascls.layers.LayerNorm`` (int8-clean: Keras'
``LayerNormalization`` leaves 23 float NEG ops in int8 TFLite) with the same gamma/beta
weights, so the mapping is one-to-one. V2 replaces layer scale by Global Response
Normalization after the GELU, as timm's ``convnextv2_*``.

No BatchNorm, so the PyTorch-convention count (``kerascls.summary.count_params``) equals
Keras' ``count_params`` and the references (keras.applications for V1, timm for V2).
"""

from __future__ import annotations

import keras

from kerascls.layers import GlobalResponseNorm, LayerScale, StochasticDepth
from kerascls.layers.types import Tensor
from kerascls.models.blocks import apply_attention, drop_path_rates, norm
from kerascls.models.catalog import register_model

EPS = 1e-6

# name: (depths, widths)
SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
    "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}


def _norm(x, kind: str | None, name: str):
    """The chosen norm with the reference layer-norm epsilon."""
    return norm(x, kind, name, epsilon=EPS, native="layer")


def convnext_block(x: Tensor, width: int, *, version: int, norm: str | None, attention: str | None,
                   drop_path: float, layer_scale: float, name: str) -> Tensor:
    """dw 7×7 → norm → 4× pointwise → GELU (→ GRN in V2) → pointwise (→ scale) + shortcut."""
    shortcut = x
    x = keras.layers.Conv2D(width, 7, padding="same", groups=width,
                            name=f"{name}_depthwise_conv")(x)
    x = _norm(x, norm, f"{name}_layernorm")
    x = keras.layers.Dense(4 * width, name=f"{name}_pointwise_conv_1")(x)
    x = keras.layers.Activation("gelu", name=f"{name}_gelu")(x)
    if version == 2:
        x = GlobalResponseNorm(name=f"{name}_grn")(x)
    x = keras.layers.Dense(width, name=f"{name}_pointwise_conv_2")(x)
    x = apply_attention(x, attention, name)
    if version == 1 and layer_scale:
        x = LayerScale(layer_scale, name=f"{name}_layer_scale")(x)
    if drop_path:
        x = StochasticDepth(drop_path, name=f"{name}_stochastic_depth")(x)
    return keras.layers.Add(name=f"{name}_add")([shortcut, x])


def convnext(x: Tensor, *, size: str = "tiny", version: int = 1, norm: str | None = "layer",
             attention: str | None = None, drop_path: float = 0.0,
             layer_scale: float = 1e-6, prefix: str = "convnext") -> Tensor:
    """ConvNeXt backbone → pooled, normalized features.

    Args:
        size: a key of ``SIZES``.
        version: 1 (layer scale) or 2 (GRN, no layer scale).
        norm: the norm in every norm slot (``layer`` keeps weight compatibility).
        attention: ``se`` adds squeeze-excite on each block's branch.
        drop_path: stochastic-depth rate of the last block (linear ramp from 0).
        layer_scale: V1's initial layer-scale value (0 disables it).
        prefix: layer-name prefix (keras.applications uses the model name).
    """
    depths, widths = SIZES[size]
    rates = iter(drop_path_rates(drop_path, sum(depths)))
    for stage, (depth, width) in enumerate(zip(depths, widths)):
        if stage == 0:
            x = keras.layers.Conv2D(width, 4, strides=4, name=f"{prefix}_stem_conv")(x)
            x = _norm(x, norm, f"{prefix}_stem_layernorm")
        else:
            x = _norm(x, norm, f"{prefix}_downsampling_layernorm_{stage - 1}")
            x = keras.layers.Conv2D(width, 2, strides=2,
                                    name=f"{prefix}_downsampling_conv_{stage - 1}")(x)
        for block in range(depth):
            x = convnext_block(x, width, version=version, norm=norm, attention=attention,
                               drop_path=next(rates), layer_scale=layer_scale,
                               name=f"{prefix}_stage_{stage}_block_{block}")
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_head_gap")(x)
    return _norm(x, norm, f"{prefix}_head_layernorm")


_PAPERS = {1: "Liu et al. 2022, A ConvNet for the 2020s (arXiv:2201.03545)",
           2: "Woo et al. 2023, ConvNeXt V2 (arXiv:2301.00808)"}

# name, size, version, params (= reference), what it matches
_VARIANTS = (
    ("convnext_tiny", "tiny", 1, 28_589_128, "keras.applications.ConvNeXtTiny"),
    ("convnext_small", "small", 1, 50_223_688, "keras.applications.ConvNeXtSmall"),
    ("convnext_base", "base", 1, 88_591_464, "keras.applications.ConvNeXtBase"),
    ("convnext_large", "large", 1, 197_767_336, "keras.applications.ConvNeXtLarge"),
    ("convnext_xlarge", "xlarge", 1, 350_196_968, "keras.applications.ConvNeXtXLarge"),
    ("convnextv2_atto", "atto", 2, 3_708_400, "timm convnextv2_atto"),
    ("convnextv2_femto", "femto", 2, 5_233_240, "timm convnextv2_femto"),
    ("convnextv2_pico", "pico", 2, 9_066_280, "timm convnextv2_pico"),
    ("convnextv2_nano", "nano", 2, 15_623_800, "timm convnextv2_nano"),
    ("convnextv2_tiny", "tiny", 2, 28_635_496, "timm convnextv2_tiny"),
    ("convnextv2_base", "base", 2, 88_717_800, "timm convnextv2_base"),
    ("convnextv2_large", "large", 2, 197_956_840, "timm convnextv2_large"),
    ("convnextv2_huge", "huge", 2, 660_289_640, "timm convnextv2_huge"),
)

for _name, _size, _version, _params, _matches in _VARIANTS:
    register_model(_name, family="convnext" if _version == 1 else "convnextv2",
                   paper=_PAPERS[_version], params=_params, matches=_matches,
                   min_input_size=32,  # valid 4×4/4 stem, three 2×2/2 downsamplings
                   size=_size, version=_version, prefix=_name)(convnext)

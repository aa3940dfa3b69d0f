"""VGG (Simonyan & Zisserman 2015), every column of Table 1 plus torchvision's BN variants.

Parameter counts match torchvision (adaptive pool to 7×7, classifier 4096-4096, conv
biases kept in the ``_bn`` variants). Two columns torchvision lacks, counted by hand:

* ``vgg11_lrn`` (A-LRN): LRN has no weights, so 132,863,336 — the same as A.
* ``vgg16_c`` (C): D with the third conv of stages 3–5 as 1×1, i.e. D minus
  8·(256² + 512² + 512²) = 4,718,592 weights: 138,357,544 − 4,718,592 = 133,638,952.
"""

from __future__ import annotations

import keras

from kerascls.layers import AdaptiveAveragePooling2D, LocalResponseNormalization
from kerascls.layers.types import Tensor
from kerascls.models.blocks import conv_norm_act, mlp
from kerascls.models.catalog import register_model

PAPER = "Simonyan & Zisserman 2015, Very Deep Convolutional Networks (ICLR)"
WIDTHS = (64, 128, 256, 512, 512)
# Table 1: kernel size of each conv, per stage (a 2×2 max-pool closes every stage).
CONFIGS = {
    "A": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "B": ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)),
    "C": ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
    "D": ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    "E": ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)),
}


def vgg(x: Tensor, *, cfg: str, norm: str | None = "none", attention: str | None = None,
        lrn: bool = False, dropout: float = 0.5,
        fc_widths: tuple[int, ...] = (4096, 4096)) -> Tensor:
    """Stages of conv-(norm)-ReLU, max-pool, adaptive pool to 7×7, dropout-4096-dropout-4096.

    Convs keep their bias whatever the norm, as torchvision's ``vgg*_bn`` do, so counts
    and weight files line up. ``lrn`` adds A-LRN's LRN after the first conv.
    """
    for s, (width, kernels) in enumerate(zip(WIDTHS, CONFIGS[cfg])):
        for i, kernel in enumerate(kernels):
            name = f"block{s + 1}_conv{i + 1}"
            x = conv_norm_act(x, width, kernel, norm=norm, use_bias=True,
                              attention=attention, name=name)
            if lrn and s == i == 0:
                x = LocalResponseNormalization(name="lrn")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{s + 1}_pool")(x)
    x = AdaptiveAveragePooling2D(7, name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return mlp(x, fc_widths, dropout=dropout)


# name: (Table 1 column, extra options, reference params, implementation matched)
VARIANTS = {
    "vgg11": ("A", {}, 132_863_336, "torchvision.models.vgg11"),
    "vgg11_lrn": ("A", {"lrn": True}, 132_863_336, "hand count (Table 1, A-LRN)"),
    "vgg13": ("B", {}, 133_047_848, "torchvision.models.vgg13"),
    "vgg16_c": ("C", {}, 133_638_952, "hand count (Table 1, C)"),
    "vgg16": ("D", {}, 138_357_544, "torchvision.models.vgg16"),
    "vgg19": ("E", {}, 143_667_240, "torchvision.models.vgg19"),
    "vgg11_bn": ("A", {"norm": "batch"}, 132_868_840, "torchvision.models.vgg11_bn"),
    "vgg13_bn": ("B", {"norm": "batch"}, 133_053_736, "torchvision.models.vgg13_bn"),
    "vgg16_bn": ("D", {"norm": "batch"}, 138_365_992, "torchvision.models.vgg16_bn"),
    "vgg19_bn": ("E", {"norm": "batch"}, 143_678_248, "torchvision.models.vgg19_bn"),
}

for _name, (_cfg, _options, _params, _matches) in VARIANTS.items():
    register_model(_name, family="vgg", paper=PAPER, input_size=224, params=_params,
                   matches=_matches, min_input_size=32,  # five 2×2 pools: 32 → 1×1
                   learning_rate=3e-3 if "norm" in _options else 1e-4,  # see registry
                   cfg=_cfg, **_options)(vgg)

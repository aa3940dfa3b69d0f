"""AlexNet in torchvision's single-GPU form (Krizhevsky 2014, "One weird trick").

61,100,840 parameters at 224×224 and 1000 classes, 714.68 M mult-adds (torchinfo).
"""

from __future__ import annotations

import keras

from kerascls.layers import AdaptiveAveragePooling2D
from kerascls.layers.types import Tensor
from kerascls.models.blocks import conv_norm_act, mlp
from kerascls.models.catalog import register_model

# (filters, kernel, stride, max-pool after) per conv: torchvision.models.AlexNet.features.
FEATURES = ((64, 11, 4, True), (192, 5, 1, True), (384, 3, 1, False),
            (256, 3, 1, False), (256, 3, 1, True))


@register_model(family="alexnet", input_size=224, params=61_100_840, min_input_size=63,
                learning_rate=1e-4,
                paper="Krizhevsky 2014, One weird trick for parallelizing CNNs",
                matches="torchvision.models.alexnet")
def alexnet(x: Tensor, *, norm: str | None = "none", attention: str | None = None,
            dropout: float = 0.5, fc_widths: tuple[int, ...] = (4096, 4096)) -> Tensor:
    """Five convs (pool after 1, 2, 5), adaptive pool to 6×6, dropout-4096-dropout-4096.

    conv1's padding is explicit (2 pixels, as torchvision) because "same" would give
    56×56 instead of 55×55 at 224. The smallest input that fits the three 3×3/2 pools
    is 63×63 (the registry's ``min_input_size``).
    """
    for i, (filters, kernel, stride, pool) in enumerate(FEATURES):
        name = f"conv{i + 1}"
        if stride > 1:
            x = keras.layers.ZeroPadding2D(2, name=f"{name}_pad")(x)
        x = conv_norm_act(x, filters, kernel, stride, norm=norm, attention=attention,
                          padding="valid" if stride > 1 else "same", name=name)
        if pool:
            x = keras.layers.MaxPooling2D(3, 2, name=f"pool{i + 1}")(x)
    x = AdaptiveAveragePooling2D(6, name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return mlp(x, fc_widths, dropout=dropout)


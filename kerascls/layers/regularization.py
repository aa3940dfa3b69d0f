"""Residual-branch regularizers: stochastic depth (drop path) and layer scale."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerascls.errors import UserError
from kerascls.layers.types import Config, Shape, Tensor


@keras.saving.register_keras_serializable(package="kerascls")
class StochasticDepth(keras.layers.Layer):
    """Drop a residual branch per sample with probability ``rate`` (Huang et al. 2016).

    Applied to the branch before it is added to the shortcut. Training scales kept
    samples by ``1 / (1 - rate)`` so inference is the identity (timm's ``DropPath``).
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise UserError(f"rate must be in [0, 1), got {rate}")
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        noise = keras.random.uniform(shape, dtype=x.dtype, seed=self.seed_generator)
        return x * ops.floor(keep + noise) / keep

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerascls")
class LayerScale(keras.layers.Layer):
    """Per-channel learnable scale of a residual branch (Touvron et al. 2021, CaiT).

    Starting near zero (``init_value``) makes each block begin close to the identity,
    which is what lets deep ConvNeXt/ViT-style stacks train.
    """

    def __init__(self, init_value: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape: Shape) -> None:
        self.gamma = self.add_weight(
            shape=(int(input_shape[-1]),), name="gamma",
            initializer=keras.initializers.Constant(self.init_value))

    def call(self, x: Tensor) -> Tensor:
        return x * self.gamma

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> Config:
        return {**super().get_config(), "init_value": self.init_value}

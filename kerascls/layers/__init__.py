"""Custom layers, each written once and registered serializable (package ``kerascls``)."""

from kerascls.layers.batch_channel import BatchChannelNormalization
from kerascls.layers.grn import GlobalResponseNorm
from kerascls.layers.lrn import LocalResponseNormalization
from kerascls.layers.norm import NORMS, GroupNorm, LayerNorm, get_norm
from kerascls.layers.pooling import AdaptiveAveragePooling2D
from kerascls.layers.preprocessing import ImagePreprocessing
from kerascls.layers.regularization import LayerScale, StochasticDepth
from kerascls.layers.squeeze_excite import SqueezeExcite, make_divisible
from kerascls.layers.ws_conv import WSConv2D

__all__ = ["NORMS", "AdaptiveAveragePooling2D", "BatchChannelNormalization", "GroupNorm",
           "GlobalResponseNorm",
           "ImagePreprocessing", "LayerNorm", "LayerScale", "LocalResponseNormalization",
           "SqueezeExcite", "StochasticDepth", "WSConv2D", "get_norm", "make_divisible"]

"""Custom layers, each written once and registered serializable (package ``kerascls``)."""

from kerascls.layers.norm import NORMS, GroupNorm, LayerNorm, get_norm
from kerascls.layers.preprocessing import ImagePreprocessing
from kerascls.layers.squeeze_excite import SqueezeExcite, make_divisible

__all__ = ["NORMS", "GroupNorm", "ImagePreprocessing", "LayerNorm", "SqueezeExcite",
           "get_norm", "make_divisible"]

"""The architecture table: ``ModelInfo`` rows and the ``@register_model`` decorator.

Family modules import only this (not ``registry``), so registering never loops back into
the module that imports every family (``registry.load_families``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# Peak AdamW learning rate `kerascls train` uses unless --learning_rate is given. Deep plain
# nets with wide fc layers and no normalization (VGG, AlexNet) register a lower one: at
# 3e-3 they diverge in the first epoch (vgg11 on Fashion-MNIST: val accuracy 0.11 at 3e-3,
# 0.46 at 1e-4 after one epoch of 1,536 images).
DEFAULT_LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture name."""

    name: str
    builder: Callable[..., Any]
    family: str
    paper: str = ""
    input_size: int = 224
    ref_params: int | None = None
    matches: str = ""
    defaults: dict = field(default_factory=dict)
    min_input_size: int = 1
    min_input_overrides: dict = field(default_factory=dict)
    learning_rate: float = DEFAULT_LEARNING_RATE
    ref_classes: int = 1000
    keras_params: int | None = None

    def min_size(self, **overrides: Any) -> int:
        """Smallest input side for these family options (e.g. resnet ``stem_kind="small"``)."""
        options = {**self.defaults, **overrides}
        for (key, value), size in self.min_input_overrides.items():
            if options.get(key) == value:
                return size
        return self.min_input_size


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str | None = None, *, family: str, paper: str = "",
                   input_size: int = 224, params: int | None = None,
                   matches: str = "", min_input_size: int = 1,
                   min_input_overrides: dict | None = None,
                   learning_rate: float = DEFAULT_LEARNING_RATE, ref_classes: int = 1000,
                   keras_params: int | None = None, **defaults: Any) -> Callable:
    """Register a backbone builder under ``name`` (default: the function's name).

    ``defaults`` are keyword arguments bound into the builder for this name, which is
    how variants become rows of data: ``register_model("vgg16", cfg="D", ...)(build_vgg)``.
    ``params`` is the reference parameter count (PyTorch's convention: no BatchNorm moving
    statistics) at ``input_size`` and ``ref_classes`` classes, and ``matches`` names its
    source; ``keras_params`` is Keras' ``count_params()`` of a keras.applications twin
    (moving statistics included). The test suite checks both against the built model.
    ``min_input_size`` is the smallest square input side that builds and that every
    downsampling stage divides into at least one pixel (the product of the strides, or more
    where valid convolutions need it); ``min_input_overrides`` maps ``(option, value)`` to
    the minimum under that option. The test suite builds every name at min and min - 1.
    ``learning_rate`` is the peak AdamW rate training uses when none is given.
    """

    def decorator(builder: Callable) -> Callable:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = ModelInfo(key, builder, family, paper, input_size, params,
                                   matches, dict(defaults), min_input_size,
                                   dict(min_input_overrides or {}), learning_rate,
                                   ref_classes, keras_params)
        return builder

    return decorator

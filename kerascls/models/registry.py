"""One registry for every architecture: ``@register_model`` feeds ``create_model``.

The table and its decorator live in ``catalog`` (families import it); this module reads
the table and builds models.

Builders are backbone functions ``builder(x, **kwargs) -> features``: they take the
preprocessed input tensor and return the pre-logit feature tensor (2-D). ``create_model``
adds what every family shares — the input, the in-model preprocessing and the task head —
so those options apply to every family alike (the timm / keras-hub pattern).
"""

from __future__ import annotations

import difflib
import inspect
import json
from typing import Any, Mapping

import keras

from kerascls.errors import UserError
from kerascls.layers.preprocessing import ImagePreprocessing
from kerascls.models.catalog import (  # noqa: F401 (the registry's public names)
    _REGISTRY,
    DEFAULT_LEARNING_RATE,
    ModelInfo,
    register_model,
)

TASKS = ("multiclass", "binary", "multilabel")
# Largest input side create_model and the CLI accept: a 4096×4096 image already needs
# gigabytes of activations per image in the first layers of most families.
MAX_INPUT_SIZE = 4096
def load_families() -> None:
    """Import every family module once, so their ``@register_model`` decorators run.

    The families import ``catalog`` (not this module), so this import points one way.
    """
    from kerascls.models import (  # noqa: F401 (imported to register their architectures)
        alexnet,
        cnn,
        convnext,
        efficientnet,
        efficientnetv2,
        mobilenetv3,
        resnet,
        vgg,
    )


def list_models(family: str | None = None) -> list[str]:
    """Sorted names of every registered model, optionally of one family."""
    load_families()
    return sorted(n for n, i in _REGISTRY.items() if family in (None, i.family))


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; an unknown name lists close matches."""
    load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown model {name!r}{hint} (see `kerascls models`)")
    return _REGISTRY[name]


def check_input_size(name: str, height: int | None, width: int | None,
                     **overrides: Any) -> None:
    """Refuse, in one line naming the limit, an input ``name`` cannot take.

    Below the minimum Keras fails deep in a pooling layer ("Computed output size would be
    zero or negative"); above ``MAX_INPUT_SIZE`` memory runs out. ``None`` (dynamic) passes.
    """
    least = model_info(name).min_size(**overrides)
    sides = [s for s in (height, width) if s is not None]
    if any(s < least for s in sides):
        raise UserError(f"{name} needs an input of at least {least}×{least} pixels; "
                        f"got {height}×{width}")
    if any(s > MAX_INPUT_SIZE for s in sides):
        raise UserError(f"input {height}×{width} is above the largest size kerascls builds, "
                        f"{MAX_INPUT_SIZE}×{MAX_INPUT_SIZE}")


# create_model parameters that are not ``model_args`` keys: the name, the shape and the
# classes come from the run itself, ``weights`` has its own flag (--weights).
_NOT_MODEL_ARGS = ("name", "num_classes", "input_shape", "weights")


def model_arg_names(name: str) -> list[str]:
    """The ``model_args`` keys ``name`` takes: its builder's options and the head's."""
    builder = list(inspect.signature(model_info(name).builder).parameters.values())[1:]
    common = inspect.signature(create_model).parameters.values()
    names = {p.name for p in [*builder, *common]
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return sorted(names - set(_NOT_MODEL_ARGS))


def check_model_args(name: str, model_args: Mapping[str, Any],
                     what: str = "model_args") -> None:
    """Refuse, in one line listing the valid ones, a key ``name``'s builder and head lack.

    ``create_model`` runs it on its family options; ``kerascls train`` on ``--model_arg``
    (``what``) before it reads any data, so a typo costs no data loading.
    """
    valid = model_arg_names(name)
    unknown = sorted(set(model_args) - set(valid))
    if unknown:
        raise UserError(f"{what} {', '.join(unknown)}: not an option of {name}; "
                        f"valid keys: {', '.join(valid)}")
    params = inspect.signature(model_info(name).builder).parameters
    for key, value in model_args.items():
        default = params[key].default if key in params else None
        if isinstance(default, (tuple, list)) and not isinstance(value, (tuple, list)):
            example = json.dumps(list(default), separators=(",", ":"))
            raise UserError(f"{what} {key}={value!r}: {name} takes a list here, written "
                            f"as JSON, e.g. {key}={example}")


def _head(x, num_classes: int, task: str, logits: bool):
    """Final classifier: softmax over K, one sigmoid, or K sigmoids."""
    if task not in TASKS:
        raise UserError(f"task must be one of {TASKS}, got {task!r}")
    units = 1 if task == "binary" else num_classes
    x = keras.layers.Dense(units, name="head")(x)
    activation = "linear" if logits else ("softmax" if task == "multiclass" else "sigmoid")
    # float32 output keeps softmax stable under mixed precision.
    return keras.layers.Activation(activation, dtype="float32", name="predictions")(x)


def create_model(name: str, num_classes: int = 1000,
                 input_shape: tuple[int, int, int] = (224, 224, 3), *,
                 task: str = "multiclass", logits: bool = False,
                 preprocess: bool = True, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, weights: str | None = None,
                 **overrides: Any) -> keras.Model:
    """Build a registered architecture as a Keras functional model.

    Args:
        name: a name from ``list_models()``.
        num_classes: K for the head (ignored for ``task="binary"``).
        input_shape: (H, W, C) of the raw images, 0–255 pixels.
        task: ``multiclass`` (softmax), ``binary`` (one sigmoid) or ``multilabel``.
        logits: output pre-activation scores instead of probabilities.
        preprocess: put 0–255 → mean/std scaling inside the model, so an exported
            model takes raw pixels.
        mean, std: per-channel statistics on the 0–1 scale (ImageNet by default; with
            ``weights="imagenet"`` or a keras.applications file, the statistics those
            weights expect, and a BGR-trained stem takes RGB).
        weights: ``"imagenet"`` (keras.applications' files, cached in ~/.keras/models)
            or a .keras / .weights.h5 / .h5 path; see ``kerascls.models.weights``.
        **overrides: family options (``norm=``, ``attention=``, ``drop_path=`` …).

    Raises:
        UserError: an unknown name, an override the architecture's builder lacks (the
            message lists the valid keys), or an input side below the architecture's
            ``min_input_size`` or above ``MAX_INPUT_SIZE``.
    """
    info = model_info(name)
    check_model_args(name, overrides)
    check_input_size(name, input_shape[0], input_shape[1], **overrides)
    expected = None
    if weights is not None:
        from kerascls.models.weights import expected_input
        expected = expected_input(name, weights)  # imagenet, or a keras.applications file
    if expected and mean is None and std is None:
        mean, std = expected.stats
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = ImagePreprocessing(mean=mean, std=std, name="preprocess")(inputs) if preprocess else inputs
    kwargs = {**info.defaults, **overrides}
    features = info.builder(x, **kwargs)
    outputs = _head(features, num_classes, task, logits)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        from kerascls.models.weights import load_weights
        load_weights(model, name, weights, flip_stem=bool(expected and expected.bgr and preprocess))
    return model


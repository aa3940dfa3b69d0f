"""Keras model → TFLite bytes, in one of four quantization modes."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from kerascls.errors import UserError
from kerascls.utils import quiet_fds

if TYPE_CHECKING:  # annotations only: importing this module stays TensorFlow-free
    import keras
    import tensorflow as tf

    from kerascls.layers.types import Tensor

QUANTIZE_MODES = ("int8", "float16", "dynamic", "none")


def _batch_one(model):
    """The model behind a batch-1 input: a fixed batch removes SHAPE/GATHER/PACK plumbing ops."""
    import keras
    inputs = keras.Input(batch_shape=(1, *model.input_shape[1:]), name="image")
    return keras.Model(inputs, model(inputs, training=False), name=model.name)


def full_range_sample(shape: tuple[int, ...]) -> np.ndarray:
    """A checkerboard of 0 and 255 that pins the calibrated input range to the full [0, 255].

    With it the uint8 input gets scale 1 and zero point 0, so a device feeds raw pixels
    unchanged, whatever range the calibration images happen to cover.
    """
    grid = np.indices(shape[1:3]).sum(0) % 2
    return np.broadcast_to((grid * 255.0)[None, :, :, None], shape).astype(np.float32)


def int8_hard_swish(x: Tensor) -> Tensor:
    """Hard-swish spelled ``x · (relu6(x − (−3)) · 1/6)``: int8 SUB+RELU6 and two MULs.

    The converter fuses Keras' ``hard_swish`` (and the ``x·relu6(x+3)/6`` spellings) into
    one HARD_SWISH op, which XNNPACK takes in float32 only: in int8 each one falls back to
    the reference kernel and splits the delegated graph, so int8 MobileNetV3-Large ran
    2.4× slower than float (9.4 vs 3.8 ms). The converter leaves this spelling alone, all
    of it stays in one XNNPACK partition, and the [0, 1] gate keeps its int8 resolution
    (mean error 2.7 % of the signal after a conv, fused op 2.1 %, ``(x/6)·relu6(x+3)`` 3.9 %).
    """
    from keras import ops
    return x * (ops.relu6(x - (-3.0)) * (1.0 / 6.0))


@contextlib.contextmanager
def int8_friendly_activations(model: keras.Model) -> Iterator[int]:
    """Swap every layer's hard-swish activation for :func:`int8_hard_swish` while inside.

    Works on any Keras model (ours or a user's file), nested models included; the
    layers get their own activation back on exit. Yields the number of layers swapped.
    """
    import keras
    hard_swish = {keras.activations.hard_swish, keras.activations.hard_silu}
    swapped = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
               if getattr(layer, "activation", None) in hard_swish]
    originals = [layer.activation for layer in swapped]
    for layer in swapped:
        layer.activation = int8_hard_swish
    try:
        yield len(swapped)
    finally:
        for layer, act in zip(swapped, originals):
            layer.activation = act


def convert(model: keras.Model, quantize: str = "int8",
            calibration: Iterable[np.ndarray] | None = None) -> bytes:
    """Convert with builtin ops only (Flex ops never slip in).

    Args:
        model: a Keras model taking raw 0–255 pixels.
        quantize: ``int8`` (full integer, uint8 input and output; hard-swish rewritten by
            :func:`int8_friendly_activations`), ``float16``, ``dynamic`` (int8 weights,
            float activations) or ``none``.
        calibration: single images (H, W, C), 0–255, required for int8.
    """
    import tensorflow as tf
    rewrite = int8_friendly_activations(model) if quantize == "int8" else contextlib.nullcontext()
    with rewrite:
        conv = tf.lite.TFLiteConverter.from_keras_model(_batch_one(model))
        return run_converter(conv, quantize, (1, *model.input_shape[1:]), calibration)


def run_converter(conv: tf.lite.TFLiteConverter, quantize: str, shape: tuple[int, ...],
                  calibration: Iterable[np.ndarray] | None = None) -> bytes:
    """Apply one quantization mode's settings to a TFLiteConverter and convert.

    Shared by :func:`convert` and the tfmot bridge, so QAT and pruned models get exactly
    the settings of a PTQ export (builtin ops only, uint8 input and output for int8).
    """
    import tensorflow as tf
    if quantize not in QUANTIZE_MODES:
        raise UserError(f"--quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if calibration is None:
            raise UserError("int8 quantization needs calibration images")
        images = list(calibration)

        def representative():
            yield [full_range_sample(shape)]
            for img in images:
                yield [np.asarray(img, np.float32).reshape(shape)]

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    with quiet_fds(1, 2):
        return conv.convert()

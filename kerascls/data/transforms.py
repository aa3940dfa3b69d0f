"""Resizing and augmentation: functions of tensors that work eagerly and in ``Dataset.map``.

Resize modes are those of the bundle contract (docs/bundle.md ``input.resize``) and of the
edge runtime: ``stretch``, ``crop`` (largest centred box of the target aspect) and ``pad``
(letterbox, zeros, centred). Augmentations are core Keras layers (DESIGN: not keras-cv),
applied to batches of the training split only.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from kerascls.errors import UserError

RESIZE_MODES = ("stretch", "crop", "pad")
AUGMENTATIONS = ("flip", "rrc", "randaugment", "erasing", "mixup", "cutmix")
LABEL_MIXING = ("mixup", "cutmix")  # these need one-hot/float labels


def resize_box(image: tf.Tensor, box, size) -> tf.Tensor:
    """Pillow's ``resize((w, h), BILINEAR, box=box)`` as float32: H×W×C, not rounded.

    ``box`` is (left, top, right, bottom), fractional, in input pixels; ``size`` is (h, w).
    A triangle filter widened by the shrink factor (antialiasing), weights normalized over
    the pixels inside the image — Pillow's resampling, so the device's pixels come out.
    """
    box = tf.cast(box, tf.float32)
    hw = tf.cast(size, tf.int32)
    scale = tf.cast(hw, tf.float32) / tf.stack([box[3] - box[1], box[2] - box[0]])
    out = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(image, tf.float32)[None], size=hw, scale=scale,
        translation=-tf.stack([box[1], box[0]]) * scale, kernel_type="triangle",
        antialias=True)
    return out[0]


def place(image: tf.Tensor, box, inner, offset, size: tuple[int, int]) -> tf.Tensor:
    """``box`` resized to ``inner`` (h, w), pasted at ``offset`` (y, x) in zeros of ``size``.

    The device's geometry (``kerascls_edge.decode.geometry``) in the graph: uint8 H×W×C.
    """
    inner, offset = tf.cast(inner, tf.int32), tf.cast(offset, tf.int32)
    pixels = tf.clip_by_value(tf.round(resize_box(image, box, inner)), 0, 255)
    pad = tf.stack([[offset[0], size[0] - offset[0] - inner[0]],
                    [offset[1], size[1] - offset[1] - inner[1]], [0, 0]])
    out = tf.cast(tf.pad(pixels, pad), tf.uint8)
    out.set_shape([size[0], size[1], image.shape[-1]])
    return out


def resize(image: tf.Tensor, size: tuple[int, int], mode: str = "stretch") -> tf.Tensor:
    """HxWxC (any dtype) → size float32 0–255 (whole values), as the device resizes.

    The geometry of ``kerascls_edge.decode.geometry`` for a whole image, in TF ops (the
    image's size may be known only in the graph): crop keeps the largest centred box of the
    target aspect, pad letterboxes (zeros, centred, inner size rounded half to even).
    """
    if mode not in RESIZE_MODES:
        raise UserError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    th, tw = float(size[0]), float(size[1])
    box = tf.stack([0.0, 0.0, w, h])
    inner, offset = tf.constant([size[0], size[1]]), tf.constant([0, 0])
    if mode == "crop":
        box = _centre_crop_box(w, h, tw / th)
    elif mode == "pad":
        s = tf.minimum(tw / w, th / h)
        inner = tf.cast(tf.stack([tf.clip_by_value(tf.round(h * s), 1, th),
                                  tf.clip_by_value(tf.round(w * s), 1, tw)]), tf.int32)
        offset = (tf.constant([size[0], size[1]]) - inner) // 2
    return tf.cast(place(image, box, inner, offset, size), tf.float32)


def _centre_crop_box(w: tf.Tensor, h: tf.Tensor, aspect: float) -> tf.Tensor:
    """(left, top, right, bottom) of the largest centred box of width/height ``aspect``."""
    wide = w / h > aspect
    nw, nh = tf.where(wide, h * aspect, w), tf.where(wide, h, w / aspect)
    left, top = (w - nw) / 2, (h - nh) / 2
    return tf.stack([left, top, left + nw, top + nh])


def random_resized_crop(image: tf.Tensor, size: tuple[int, int], seed: tf.Tensor,
                        scale: tuple[float, float] = (0.35, 1.0)) -> tf.Tensor:
    """Inception-style random crop (area ``scale``, aspect 3/4–4/3) resized to ``size``.

    Done on the decoded image before the resize, so the crop keeps full detail; stateless
    with ``seed`` (shape [2]) so the deterministic mode reproduces it.
    """
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=scale, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    crop.set_shape([None, None, image.shape[-1]])
    return resize(crop, size, "stretch")


_IMAGE_LAYERS = {
    "flip": lambda seed: keras.layers.RandomFlip("horizontal", seed=seed),
    "randaugment": lambda seed: keras.layers.RandAugment(value_range=(0, 255), seed=seed),
    "erasing": lambda seed: keras.layers.RandomErasing(value_range=(0, 255), seed=seed),
}
_MIXERS = {"mixup": lambda seed: keras.layers.MixUp(seed=seed),
           "cutmix": lambda seed: keras.layers.CutMix(seed=seed)}


def parse_augment(spec: str) -> list[str]:
    """``"flip,rrc,mixup"`` → names; ``""``/``"none"`` → none; unknown names are an error."""
    names = [n.strip().lower() for n in (spec or "").split(",") if n.strip()]
    names = [] if names == ["none"] else names
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise UserError(f"unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTATIONS)}")
    return names


def batch_augmenter(names: list[str], seed: int | None = None
                    ) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A function ``(images, labels) → (images, labels)`` of Keras layers for batches.

    ``rrc`` is not here: it happens per image before resizing (:func:`random_resized_crop`).
    MixUp and CutMix mix the labels too, so they need float (one-hot or multi-hot) labels.
    """
    image_layers = [_IMAGE_LAYERS[n](seed) for n in names if n in _IMAGE_LAYERS]
    mixers = [_MIXERS[n](seed) for n in names if n in _MIXERS]

    def augment(images: tf.Tensor, labels: tf.Tensor):
        for layer in image_layers:
            images = layer(images, training=True)
        for layer in mixers:
            out = layer({"images": images, "labels": labels}, training=True)
            images, labels = out["images"], out["labels"]
        return images, labels
    return augment

"""Resizing and augmentation: functions of tensors that work eagerly and in ``Dataset.map``.

Resize modes are those of the bundle contract (docs/bundle.md ``input.resize``) and of the
edge runtime: ``stretch``, ``crop`` (largest centred box of the target aspect) and ``pad``
(letterbox, zeros, centred). Augmentations are core Keras layers (DESIGN: not keras-cv),
applied to batches of the training split only.
"""

from __future__ import annotations

import keras
import tensorflow as tf

RESIZE_MODES = ("stretch", "crop", "pad")
AUGMENTATIONS = ("flip", "rrc", "randaugment", "erasing", "mixup", "cutmix")
LABEL_MIXING = ("mixup", "cutmix")  # these need one-hot/float labels


def resize(image: tf.Tensor, size: tuple[int, int], mode: str = "stretch") -> tf.Tensor:
    """HxWxC (any dtype) → size float32 0–255, bilinear with antialiasing (as Pillow does)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    image = tf.cast(image, tf.float32)
    if mode == "crop":
        image = centre_crop_to_aspect(image, size[1] / size[0])
    if mode == "pad":
        return tf.image.resize_with_pad(image, size[0], size[1], antialias=True)
    return tf.image.resize(image, size, antialias=True)


def centre_crop_to_aspect(image: tf.Tensor, aspect: float) -> tf.Tensor:
    """The largest centred window of width/height ``aspect``."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    new_w = tf.minimum(w, tf.round(h * aspect))
    new_h = tf.minimum(h, tf.round(w / aspect))
    top = tf.cast((h - new_h) / 2, tf.int32)
    left = tf.cast((w - new_w) / 2, tf.int32)
    return image[top:top + tf.cast(new_h, tf.int32), left:left + tf.cast(new_w, tf.int32)]


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
        raise ValueError(f"unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTATIONS)}")
    return names


def batch_augmenter(names: list[str], seed: int | None = None):
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

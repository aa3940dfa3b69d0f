"""tf.data pipelines from in-memory arrays: resize, shuffle, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def array_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, training: bool,
                  image_size: tuple[int, int] | None = None, channels: int | None = None,
                  seed: int = 0) -> tf.data.Dataset:
    """Batches of raw 0–255 pixels (the model normalizes them itself).

    Args:
        x, y: uint8 images (N, H, W, C) and labels.
        training: shuffle (seeded, reshuffled each epoch) and drop nothing.
        image_size: (H, W) to resize to, when it differs from the arrays'.
        channels: convert greyscale ↔ RGB to this channel count.
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(min(len(x), 60_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    same_size = image_size is None or tuple(image_size) == tuple(x.shape[1:3])
    same_channels = channels is None or channels == x.shape[-1]
    if not (same_size and same_channels):
        ds = ds.map(lambda a, b: (_adapt(a, image_size, channels), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _adapt(images: tf.Tensor, image_size, channels):
    """Resize and convert channels of a uint8 batch, returning float32 0–255 pixels."""
    images = tf.cast(images, tf.float32)
    if image_size is not None:
        images = tf.image.resize(images, image_size)
    if channels == 3 and images.shape[-1] == 1:
        images = tf.image.grayscale_to_rgb(images)
    elif channels == 1 and images.shape[-1] == 3:
        images = tf.image.rgb_to_grayscale(images)
    return images

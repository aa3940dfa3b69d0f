"""tf.data pipelines: in-memory arrays, and image files (decode, resize, cache, augment).

File records come checked (``records.check_files``) and split (``splits``); here they
become batches of raw 0–255 pixels, which the model normalizes itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from kerascls.data.decode import VIDEO_BRANCH, loader, plan, plan_columns, preprocess
from kerascls.data.records import Record, VideoRule
from kerascls.data.transforms import batch_augmenter, random_resized_crop
from kerascls.errors import UserError


def array_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, training: bool,
                  image_size: tuple[int, int] | None = None, channels: int | None = None,
                  seed: int = 0, augment: tuple[str, ...] = ()) -> tf.data.Dataset:
    """Batches of raw 0–255 pixels (the model normalizes them itself).

    Args:
        x, y: uint8 images (N, H, W, C) and labels (one-hot for MixUp/CutMix).
        training: shuffle (seeded, reshuffled each epoch) and drop nothing.
        image_size: (H, W) to resize to, when it differs from the arrays'.
        channels: convert greyscale ↔ RGB to this channel count.
        augment: ``--augment`` names, applied as image files get them (``rrc`` per image,
            the rest per batch), seeded: a rerun draws the same.
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    augment = list(augment)
    if training:
        ds = ds.shuffle(min(len(x), 60_000), seed=seed, reshuffle_each_iteration=True)
    size = tuple(image_size or x.shape[1:3])
    ds = _crop_each(ds, augment, size, seed).batch(batch_size)
    same_size = size == tuple(x.shape[1:3]) or "rrc" in augment
    same_channels = channels is None or channels == x.shape[-1]
    if not (same_size and same_channels):
        ds = ds.map(lambda a, b: (_adapt(a, None if same_size else size, channels), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return _augment_batches(ds, augment, seed).prefetch(tf.data.AUTOTUNE)


def _crop_each(ds: tf.data.Dataset, augment, size, seed: int) -> tf.data.Dataset:
    """``rrc`` per image of an unbatched (image, label) dataset, when ``augment`` names it.

    Each image takes its seed from a seeded stream, so a rerun draws the same crops whatever
    the parallelism.
    """
    if "rrc" not in augment:
        return ds
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda xy, s: (random_resized_crop(xy[0], size, s), xy[1]),
        num_parallel_calls=tf.data.AUTOTUNE)


def _augment_batches(ds: tf.data.Dataset, augment, seed: int | None) -> tf.data.Dataset:
    """Every augmentation but ``rrc``, per batch of float32 pixels (Keras layers; MixUp and
    CutMix mix labels too). Seeded runs map sequentially: the layers' seed state is shared."""
    if not set(augment) - {"rrc"}:
        return ds
    fn = batch_augmenter(augment, seed=seed)
    return ds.map(lambda a, b: fn(tf.cast(a, tf.float32), b),
                  num_parallel_calls=None if seed is not None else tf.data.AUTOTUNE)


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


@dataclass
class PipelineOptions:
    """How file records become batches (the same options for train, eval and export).

    Attributes:
        image_size: (height, width) of the model input.
        resize: ``stretch``, ``crop`` or ``pad`` (recorded in the bundle's model.json).
        augment: names from ``transforms.AUGMENTATIONS``; used only when ``training``.
        cache: ``auto`` (in memory when the resized uint8 images fit in 1 GiB), ``memory``,
            ``none``, or a file path prefix.
        deterministic: fixed element order and seeded augmentation, for tests.
        decoder: how files become the model's input pixels, which are always the device's
            (``kerascls_edge.decode``, README "Input pixels (train = device)"): ``pil`` calls
            the device's decoder in ``tf.numpy_function``; ``tf`` decodes JPEGs with graph
            ops that follow the device's plan (other files still go through the device's
            decoder); ``auto``: ``pil`` when some JPEG is decoded at reduced scale, else
            ``tf``.
        video: which frames of a video are examples (the sampling rule; a video frame's
            pixels are always the device's ``kerascls_edge.video.decode_frames``).
    """

    image_size: tuple[int, int]
    batch_size: int = 32
    training: bool = False
    resize: str = "stretch"
    augment: tuple[str, ...] = ()
    cache: str = "auto"
    deterministic: bool = False
    seed: int = 0
    decoder: str = "auto"
    one_hot: bool = False
    channels: int = 3
    video: VideoRule = field(default_factory=VideoRule)
    shuffle: bool = True  # training only; False keeps file order (the feature cache's views)


CACHE_AUTO_BYTES = 1 << 30
VIDEO_SHUFFLE_BUFFER = 4096  # frames shuffled after decoding when videos are not cached


def encode_labels(records: list[Record], class_names: list[str], task: str,
                  one_hot: bool = False) -> np.ndarray:
    """Targets the model head expects: class index, one 0/1 float, or K-hot floats.

    Binary uses ``class_names[1]`` as the positive class. ``one_hot`` turns multiclass
    indices into float vectors (MixUp/CutMix mix labels, so they need them).
    """
    index = {n: i for i, n in enumerate(class_names)}
    if task == "multilabel":
        y = np.zeros((len(records), len(class_names)), np.float32)
        for i, r in enumerate(records):
            y[i, [index[lab] for lab in r.labels]] = 1
        return y
    many = next((r for r in records if len(r.labels) > 1), None)
    if many:
        raise UserError(f"{many.path} has {len(many.labels)} labels ({'|'.join(many.labels)});"
                         " train with --model_arg task=multilabel or --crop_boxes")
    ids = np.array([index[r.labels[0]] for r in records], np.int64)
    if task == "binary":
        if len(class_names) != 2:
            raise UserError(f"task=binary needs exactly 2 classes, the data has "
                             f"{len(class_names)}")
        return ids.astype(np.float32)[:, None]
    return np.eye(len(class_names), dtype=np.float32)[ids] if one_hot else ids


def class_weights(records: list[Record], class_names: list[str]) -> dict[int, float]:
    """``n / (K · n_c)`` per class (Keras ``class_weight``): rare classes count as much."""
    counts = np.bincount([class_names.index(r.labels[0]) for r in records],
                         minlength=len(class_names))
    return {i: float(len(records) / (len(class_names) * c)) for i, c in enumerate(counts) if c}


def oversample(records: list[Record], seed: int = 0) -> list[Record]:
    """Repeat each class's records (seeded) up to the largest class's count: balanced epochs."""
    by_class: dict[str, list[Record]] = {}
    for r in records:
        by_class.setdefault(r.labels[0], []).append(r)
    most = max(len(v) for v in by_class.values())
    rng = np.random.default_rng(seed)
    out = []
    for recs in by_class.values():
        extra = rng.choice(len(recs), most - len(recs), replace=True) if most > len(recs) else []
        out += recs + [recs[i] for i in extra]
    return out


def file_dataset(records: list[Record], labels: np.ndarray, opts: PipelineOptions
                 ) -> tf.data.Dataset:
    """Batches of (float32 0–255 images, labels) decoded from checked file records.

    Order: plan → [shuffle] → decode+resize (parallel) → [cache] → [shuffle] → random
    resized crop → batch → Keras augmentation → prefetch. Caching keeps resized uint8
    images, so later epochs skip decoding; augmentation always comes after the cache.
    Video frames are decoded in record order (a video's frames are neighbours, so the video
    is decoded once: ``decode.video_frames``) and shuffled after decoding.
    """
    size = tuple(opts.image_size)
    pre = preprocess(size, opts.channels, opts.resize)
    plans = [plan(r, pre) for r in records]
    ds = tf.data.Dataset.from_tensor_slices(
        (np.array([r.path for r in records]), *plan_columns(plans), labels))
    cache = _cache_target(opts, len(records))
    shuffle = opts.training and opts.shuffle
    videos = any(p.branch == VIDEO_BRANCH for p in plans)
    if shuffle and cache is None and not videos:
        ds = ds.shuffle(len(records), seed=opts.seed, reshuffle_each_iteration=True)
    decoder = opts.decoder
    if decoder == "auto":
        decoder = "pil" if any(p.branch in (1, 2, 3) for p in plans) else "tf"
    load = loader(decoder, plans, pre, opts.video)

    def decode_resize(path, b, o, region, box, inner, offset, frame, y):
        image = load(path, b, o, region, box, inner, offset, frame)  # the device's pixels
        return (image if cache is not None else tf.cast(image, tf.float32)), y
    ds = ds.map(decode_resize, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True if opts.deterministic or videos else None)
    if cache is not None:
        ds = ds.cache(cache)
    if shuffle and (cache is not None or videos):
        buffer = len(records) if cache is not None else min(len(records), VIDEO_SHUFFLE_BUFFER)
        ds = ds.shuffle(buffer, seed=opts.seed, reshuffle_each_iteration=True)
    return _finish(ds, opts, cast=cache is not None)


def _cache_target(opts: PipelineOptions, count: int) -> str | None:
    """'' (memory), a file prefix, or None (no cache) from ``opts.cache``."""
    if opts.cache == "none":
        return None
    if opts.cache == "memory":
        return ""
    if opts.cache == "auto":
        h, w = opts.image_size
        return "" if count * h * w * 3 <= CACHE_AUTO_BYTES else None
    return opts.cache


def _finish(ds: tf.data.Dataset, opts: PipelineOptions, cast: bool = True) -> tf.data.Dataset:
    """Channels, training-only augmentation, batching and prefetch."""
    augment = list(opts.augment) if opts.training else []
    ds = _crop_each(ds, augment, tuple(opts.image_size), opts.seed)
    if cast:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = _augment_batches(ds.batch(opts.batch_size), augment,
                          opts.seed if opts.deterministic else None)
    if opts.deterministic:
        options = tf.data.Options()
        options.deterministic = True
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


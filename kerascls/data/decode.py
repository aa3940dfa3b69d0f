"""Decoding in the tf.data graph: DCT-scaled JPEG, PNG/BMP, EXIF orientation, box crops.

What needs a look at the file (format, size, orientation) was learnt once by
``records.check_files``; here each record becomes a small integer plan — which decoder
(JPEG at 1/1, 1/2, 1/4, 1/8 scale, or PNG/BMP), which orientation, which crop window — so
the graph only branches, never inspects. ``pil_decode`` is the same plan done by Pillow
(draft mode) inside ``tf.numpy_function``; ``bench/data_pipeline.py`` compares the two.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from kerascls.data.records import Record

RATIOS = (1, 2, 4, 8)
PNG_BRANCH = len(RATIOS)  # decoder branch index of decode_image (PNG, BMP)


def dct_ratio(width: float, height: float, need: tuple[int, int], fit_long: bool) -> int:
    """Largest JPEG scale 1/r whose decode of a (width × height) region still covers ``need``.

    ``fit_long`` (letterbox padding) only needs the scaled region to fit; stretch and crop
    need both sides at least the target's.
    """
    sx, sy = width / max(need[1], 1), height / max(need[0], 1)
    room = max(sx, sy) if fit_long else min(sx, sy)
    return max([r for r in RATIOS if r <= room] or [1])


def plan(rec: Record, need: tuple[int, int], fit_long: bool = False) -> tuple[int, int, list]:
    """(decoder branch, orientation, crop window [y, x, h, w] in decoded upright pixels)."""
    up_w, up_h = ((rec.height, rec.width) if rec.orientation in (5, 6, 7, 8)
                  else (rec.width, rec.height))
    x, y, w, h = rec.bbox or (0, 0, up_w, up_h)
    ratio = dct_ratio(w, h, need, fit_long) if rec.fmt == 0 else 1
    dec_w, dec_h = math.ceil(up_w / ratio), math.ceil(up_h / ratio)
    x0 = min(max(int(x / ratio), 0), dec_w - 1)
    y0 = min(max(int(y / ratio), 0), dec_h - 1)
    x1 = min(max(math.ceil((x + w) / ratio), x0 + 1), dec_w)
    y1 = min(max(math.ceil((y + h) / ratio), y0 + 1), dec_h)
    branch = RATIOS.index(ratio) if rec.fmt == 0 else PNG_BRANCH
    return branch, rec.orientation, [y0, x0, y1 - y0, x1 - x0]


def orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation (1–8) so the image is upright, as Pillow's exif_transpose."""
    def transpose(x):
        return tf.transpose(x, [1, 0, 2])
    branches = [lambda: image,                                    # 1 (and 0: unknown)
                lambda: image,
                lambda: tf.image.flip_left_right(image),          # 2
                lambda: tf.image.rot90(image, 2),                 # 3
                lambda: tf.image.flip_up_down(image),             # 4
                lambda: transpose(image),                         # 5
                lambda: tf.image.rot90(image, 3),                 # 6
                lambda: tf.image.rot90(transpose(image), 2),      # 7
                lambda: tf.image.rot90(image, 1)]                 # 8
    return tf.switch_case(tf.clip_by_value(tf.cast(orientation, tf.int32), 0, 8), branches)


def decode(data: tf.Tensor, branch: tf.Tensor) -> tf.Tensor:
    """RGB uint8 pixels of encoded bytes; JPEGs at the planned DCT scale.

    Greyscale and CMYK JPEGs come out as RGB (libjpeg converts); PNG alpha is dropped.
    """
    def jpeg(ratio):
        return lambda: tf.io.decode_jpeg(data, channels=3, ratio=ratio,
                                         dct_method="INTEGER_FAST")
    def other():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.switch_case(tf.cast(branch, tf.int32), [jpeg(r) for r in RATIOS] + [other])


def load_image(path: tf.Tensor, branch, orientation, window, *, uniform_branch=None,
               upright: bool = False, whole: bool = False) -> tf.Tensor:
    """Read, decode, turn upright and crop one planned record: HxWx3 uint8.

    When every record of a dataset shares a decoder (``uniform_branch``), is upright or
    is uncropped (``whole``), the branch is left out of the graph: per-image overhead
    matters for small images.
    """
    data = tf.io.read_file(path)
    if uniform_branch is None:
        image = decode(data, branch)
    elif uniform_branch < PNG_BRANCH:
        image = tf.io.decode_jpeg(data, channels=3, ratio=RATIOS[uniform_branch],
                                  dct_method="INTEGER_FAST")
    else:
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image = image if upright else orient(image, orientation)
    if not whole:
        image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    image.set_shape([None, None, 3])
    return image


def pil_decode(path: bytes, branch: int, orientation: int, window: np.ndarray) -> np.ndarray:
    """The same plan with Pillow (draft mode, exif_transpose); for tf.numpy_function."""
    path = path.item() if isinstance(path, np.ndarray) else path
    with Image.open(path.decode() if isinstance(path, bytes) else path) as im:
        if branch < PNG_BRANCH and RATIOS[branch] > 1:
            r = RATIOS[branch]
            im.draft("RGB", (math.ceil(im.width / r), math.ceil(im.height / r)))
        im = ImageOps.exif_transpose(im).convert("RGB")
        y, x, h, w = (int(v) for v in window)
        return np.asarray(im)[y:y + h, x:x + w]


def load_image_pil(path: tf.Tensor, branch: tf.Tensor, orientation: tf.Tensor,
                   window: tf.Tensor) -> tf.Tensor:
    """:func:`load_image` through Pillow inside the graph."""
    image = tf.numpy_function(pil_decode, [path, branch, orientation, window], tf.uint8,
                              stateful=False)
    image.set_shape([None, None, 3])
    return image

"""Decoding for training: exactly the pixels the device (``kerascls_edge``) feeds the model.

There is one definition of "the model's input pixels": ``kerascls_edge.decode`` (TensorFlow-
free, what runs on the camera-trap device). Two ways to get them here:

- ``pil``: the device's own :func:`kerascls_edge.decode.decode`, called per image inside
  ``tf.numpy_function``. Identical by construction.
- ``tf``: graph decoders, for JPEGs, following the device's *plan* — the DCT scale from
  ``edge.reduction``, the decoded size from ``edge.reduced_size``, the resize box, inner size
  and letterbox offset from ``edge.geometry`` — with ``dct_method="INTEGER_ACCURATE"`` (libjpeg's
  ISLOW, what Pillow uses) and Pillow's antialiased bilinear filter
  (:func:`kerascls.data.transforms.place`). Files the graph cannot reproduce exactly (PNG, BMP,
  greyscale models) go through the device's decoder in the same graph.

``records.check_files`` learnt each file's format, size and EXIF orientation once, so a plan
is plain numbers and the graph only branches, never inspects.

A video frame (``Record.frame`` ≥ 0) is always the device's: :func:`kerascls_edge.video.
decode_frames` samples the video by the run's rule and makes each sampled frame model-ready as
a photo; the frames of the last few videos are kept (:data:`VIDEO_CACHE`), so a video's frames,
read one after another, decode it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kerascls.data.records import Record, VideoRule
from kerascls.data.transforms import place
from kerascls_edge import decode as edge
from kerascls_edge import video as edge_video

RATIOS = (1, 2, 4, 8)
EDGE_BRANCH = len(RATIOS)  # decode with kerascls_edge.decode (Pillow) inside the graph
VIDEO_BRANCH = EDGE_BRANCH + 1  # a video frame, by kerascls_edge.video
VIDEO_CACHE = 4  # videos whose model-ready sampled frames are kept (per process)
_videos: OrderedDict = OrderedDict()
_videos_lock = threading.Lock()


@dataclass(frozen=True)
class Plan:
    """How one record becomes model pixels (arrays of these feed the dataset).

    ``region`` is the record's box normalized to the upright image (what the device's
    ``decode(regions=...)`` takes); ``box`` (left, top, right, bottom), ``inner`` (h, w) and
    ``offset`` (y, x) are the device's geometry in the decoded (DCT-reduced) upright image.
    ``frame``: a video's frame number (-1: a photo).
    """

    branch: int
    orientation: int
    region: tuple[float, float, float, float]
    box: tuple[float, float, float, float]
    inner: tuple[int, int]
    offset: tuple[int, int]
    frame: int = -1


def preprocess(size: tuple[int, int], channels: int = 3, resize: str = "stretch"
               ) -> edge.Preprocess:
    """The device's preprocessing record for a model input of ``size`` (h, w)."""
    return edge.Preprocess(int(size[0]), int(size[1]), int(channels), resize, "bilinear")


def upright_size(rec: Record) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied."""
    if rec.orientation in (5, 6, 7, 8):
        return rec.height, rec.width
    return rec.width, rec.height


def plan(rec: Record, pre: edge.Preprocess) -> Plan:
    """The device's plan for one record: DCT scale, box, inner size and letterbox offset."""
    if rec.frame >= 0:  # the whole frame, as the device classifies it
        return Plan(VIDEO_BRANCH, 1, (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0), (1, 1),
                    (0, 0), rec.frame)
    up = upright_size(rec)
    if rec.bbox:
        x, y, w, h = rec.bbox
        region = (x / up[0], y / up[1], w / up[0], h / up[1])
    else:
        region = (0.0, 0.0, 1.0, 1.0)
    if rec.fmt != 0 or pre.channels != 3:
        return Plan(EDGE_BRANCH, rec.orientation, region, (0.0, 0.0, 1.0, 1.0), (1, 1), (0, 0))
    ratio = edge.reduction(up, pre, [region])
    g = edge.geometry(edge.reduced_size(up, ratio), region, pre)
    return Plan(RATIOS.index(ratio), rec.orientation, region, g.box,
                (g.inner[1], g.inner[0]), (g.offset[1], g.offset[0]))


def plan_columns(plans: list[Plan]) -> tuple[np.ndarray, ...]:
    """(branch, orientation, region, box, inner, offset, frame) arrays for
    ``from_tensor_slices``."""
    return (np.array([p.branch for p in plans], np.int32),
            np.array([p.orientation for p in plans], np.int32),
            np.array([p.region for p in plans], np.float64).reshape(-1, 4),
            np.array([p.box for p in plans], np.float32).reshape(-1, 4),
            np.array([p.inner for p in plans], np.int32).reshape(-1, 2),
            np.array([p.offset for p in plans], np.int32).reshape(-1, 2),
            np.array([p.frame for p in plans], np.int32))


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


def decode_jpeg(data: tf.Tensor, branch) -> tf.Tensor:
    """RGB uint8 pixels of a JPEG at the planned DCT scale, with Pillow's IDCT (ISLOW).

    Greyscale and CMYK JPEGs come out as RGB (libjpeg converts).
    """
    def jpeg(ratio):
        return lambda: tf.io.decode_jpeg(data, channels=3, ratio=ratio,
                                         dct_method="INTEGER_ACCURATE")
    if isinstance(branch, int):
        return jpeg(RATIOS[branch])()
    return tf.switch_case(tf.cast(branch, tf.int32), [jpeg(r) for r in RATIOS])


def edge_pixels(path, region, pre: edge.Preprocess) -> np.ndarray:
    """The device's pixels for one file and normalized region (no pixel cap in training)."""
    path = _text(path)
    box = tuple(float(v) for v in np.asarray(region).reshape(4))
    return edge.decode(path, pre, [box], max_pixels=None).arrays[0]


def load_edge(path: tf.Tensor, region: tf.Tensor, pre: edge.Preprocess) -> tf.Tensor:
    """:func:`edge_pixels` inside the graph: H×W×C uint8."""
    image = tf.numpy_function(lambda p, r: edge_pixels(p, r, pre), [path, region], tf.uint8,
                              stateful=False)
    image.set_shape([pre.height, pre.width, pre.channels])
    return image


def _text(path) -> str:
    path = path.item() if isinstance(path, np.ndarray) else path
    return path.decode() if isinstance(path, bytes) else path


def video_frames(path: str, pre: edge.Preprocess, rule: VideoRule) -> dict[int, np.ndarray]:
    """Frame number → model pixels of a video's sampled frames: the device's
    :func:`kerascls_edge.video.decode_frames`, kept for the last :data:`VIDEO_CACHE` videos.

    One lock: the device decodes one video at a time per process anyway
    (``kerascls_edge.video.VIDEO_SLOTS``), and a video is never decoded twice at once.
    """
    key = (path, pre, rule)
    with _videos_lock:
        if key in _videos:
            _videos.move_to_end(key)
            return _videos[key]
        video = edge_video.decode_frames(path, pre, rule.frame_every, rule.max_frames)
        frames = {f.frame_number: f.pixels for f in video.frames}
        _videos[key] = frames
        while len(_videos) > VIDEO_CACHE:
            _videos.popitem(last=False)
        return frames


def video_pixels(path, frame, pre: edge.Preprocess, rule: VideoRule) -> np.ndarray:
    """One sampled frame's model pixels; a frame the video no longer yields is one clear
    error (the file changed since it was checked)."""
    path, frame = _text(path), int(frame)
    frames = video_frames(path, pre, rule)
    if frame not in frames:
        raise edge_video.VideoError(f"{path}: frame {frame} is not among the sampled frames "
                                    f"now ({sorted(frames)}); the file changed since the "
                                    "run's check")
    return frames[frame]


def load_video(path: tf.Tensor, frame: tf.Tensor, pre: edge.Preprocess,
               rule: VideoRule) -> tf.Tensor:
    """:func:`video_pixels` inside the graph: H×W×C uint8."""
    image = tf.numpy_function(lambda p, f: video_pixels(p, f, pre, rule), [path, frame],
                              tf.uint8, stateful=False)
    image.set_shape([pre.height, pre.width, pre.channels])
    return image


def load_graph(path: tf.Tensor, branch, orientation, box, inner, offset,
               pre: edge.Preprocess, upright: bool = False) -> tf.Tensor:
    """A planned JPEG through TF's graph decoder and resize: H×W×3 uint8."""
    image = decode_jpeg(tf.io.read_file(path), branch)
    image = image if upright else orient(image, orientation)
    return place(image, box, inner, offset, (pre.height, pre.width))


def loader(decoder: str, plans: list[Plan], pre: edge.Preprocess,
           rule: VideoRule | None = None) -> Callable[..., tf.Tensor]:
    """``f(path, branch, orientation, region, box, inner, offset, frame) → H×W×C uint8``.

    ``pil``: every file through the device's decoder. ``tf``: JPEGs through the graph,
    other files through the device's decoder; branches that no record takes are left out
    (per-image overhead matters for small images). Video frames (``rule``: the sampling
    rule) always through the device's video decoder.
    """
    photos = [p for p in plans if p.branch != VIDEO_BRANCH]
    photo = _photo_loader(decoder, photos, pre)
    if len(photos) == len(plans):
        return lambda path, b, o, region, box, inner, offset, frame=-1: photo(
            path, b, o, region, box, inner, offset)
    rule = rule or VideoRule()

    def video(path, b, o, region, box, inner, offset, frame):
        return load_video(path, frame, pre, rule)
    if not photos:
        return video

    def mixed(path, b, o, region, box, inner, offset, frame):
        return tf.cond(tf.equal(b, VIDEO_BRANCH),
                       lambda: video(path, b, o, region, box, inner, offset, frame),
                       lambda: photo(path, b, o, region, box, inner, offset))
    return mixed


def _photo_loader(decoder: str, plans: list[Plan], pre: edge.Preprocess
                  ) -> Callable[..., tf.Tensor]:
    """:func:`loader` for photos: ``f(path, branch, orientation, region, box, inner, offset)``."""
    branches = {p.branch for p in plans} or {EDGE_BRANCH}
    upright = all(p.orientation == 1 for p in plans)
    if decoder == "pil" or branches == {EDGE_BRANCH}:
        return lambda path, b, o, region, box, inner, offset: load_edge(path, region, pre)
    jpeg = branches - {EDGE_BRANCH}
    fixed = next(iter(jpeg)) if len(jpeg) == 1 else None

    def graph(path, b, o, region, box, inner, offset):
        b = fixed if fixed is not None else tf.minimum(b, EDGE_BRANCH - 1)
        return load_graph(path, b, o, box, inner, offset, pre, upright)
    if EDGE_BRANCH not in branches:
        return graph

    def mixed(path, b, o, region, box, inner, offset):
        return tf.cond(tf.equal(b, EDGE_BRANCH), lambda: load_edge(path, region, pre),
                       lambda: graph(path, b, o, region, box, inner, offset))
    return mixed


def decode_record(rec: Record, size: tuple[int, int], resize: str = "stretch",
                  decoder: str = "tf", channels: int = 3,
                  rule: VideoRule | None = None) -> np.ndarray:
    """One record's model pixels (H×W×C uint8), eagerly: for checks and debugging."""
    pre = preprocess(size, channels, resize)
    p = plan(rec, pre)
    load = loader(decoder, [p], pre, rule)
    cols = [tf.constant(c[0]) for c in plan_columns([p])]
    return load(tf.constant(rec.path), *cols).numpy()

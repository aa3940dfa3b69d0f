"""Videos: the one definition of a video's sampled frames (which frames, and their pixels).

A camera-trap clip is classified as a handful of still frames. This module decides which
frames (:func:`sample_frames`, a pure function of the stream's timestamps) and hands each one
on as an upright RGB picture; from there a frame is a photo: :func:`decode_frames` sends it
through :func:`decode.decode`, the resize/crop contract photos use, as a lossless PNG of the
same pixels would go. Training is meant to call the same functions, so train = device here too.

**The sampling rule.** Frame times are the stream's presentation timestamps, relative to the
first frame (variable frame rate is just irregular timestamps). The candidate times are
``k · frame_every`` seconds for k = 0, 1, … up to the last frame's time; each candidate takes
the first frame shown at or after it, and a frame is taken once. With more than ``max_frames``
candidates, ``max_frames`` of them are spread evenly: candidate ``round(j · (K-1) / (M-1))``
for j = 0 … M-1 (halves rounded up), so the first and the last candidate are always in. The
first frame is always sampled. A stream without timestamps counts frames at its average rate.

**Why ``max_frames`` = 32.** Camera traps record 5–60 s clips; at the default one frame a
second that is 5–60 frames, so 32 keeps every second of the common 10–30 s clips and one
frame every ~2 s of a minute-long one, while bounding a pathological 10-hour file to 32
inferences (32 × ~4 ms on an int8 MobileNet on a Pi 5 is well under the decoding cost).

**The contract.** ``frame_every`` and ``max_frames`` are part of a bundle's input contract
(model.json ``input.video``; :func:`resolve_sampling` says when a run differs from it), and the
per-video label is :func:`video_scores` (numpy only, a stable signature: kerascls's evaluate
imports it). With MegaDetector video results, :func:`decode_video_crops` decodes exactly the
frames the detector boxed (:func:`read_numbered_frames`: MegaDetector's ``frame_number`` is the
0-based index in presentation order, as here).

**Cost.** Timestamps come from reading the packets (no decoding, no declared duration or
frame count trusted). Only the packets from the key frame before each sampled frame up to it
are decoded (nothing between two far-apart samples), and only sampled frames are converted
to RGB, so memory is independent of length (a few reference frames of the decoder plus one
RGB frame) and time grows with the number of samples, not the clip's length. One video is
decoded at a time per process (:data:`VIDEO_SLOTS`) with a few codec threads; a per-video
wall-time limit (``time_limit``) stops a pathological file: what was sampled by then is a
partial result with a warning, nothing sampled is a failure.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .bundle import VIDEO_RULES
from .decode import Decoded

#: Suffixes read as videos (compared case-insensitively): what camera traps and phones write.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".avi", ".asf", ".wmv", ".mkv", ".mts",
                              ".3gp"})
DEFAULT_FRAME_EVERY = 1.0  # seconds of presentation time between sampled frames
DEFAULT_MAX_FRAMES = 32  # see the module docstring
DEFAULT_TIME_LIMIT = 300.0  # seconds of wall time per video before a partial result
MAX_PACKETS = 2_000_000  # 18 h at 30 fps; past it the timestamp index alone would grow large
CODEC_THREADS = 2  # per decoder: frame threading holds one extra frame per thread
#: Decoder options that give a frame the same pixels on every platform (x86, a Pi's arm64):
#: FFmpeg's default IDCT for MPEG-4 Part 2 and MJPEG is SIMD code that differs between x86
#: and NEON, its "simple" IDCT does not; "bitexact" keeps out the other approximate SIMD
#: paths. H.264 is exact either way. Checked under emulation in tests/test_aarch64.py.
DECODER_OPTIONS = {"flags": "+bitexact", "idct": "simple"}
VIDEO_SLOTS = threading.BoundedSemaphore(1)  # videos decoded at once in one process
DEFAULT_VIDEO_RULE = VIDEO_RULES[0]
#: Camtrap DP ``fileMediatype`` per video suffix: fixed here, since ``mimetypes`` depends on the
#: host's /etc/mime.types and calls some of these audio/, model/ or application/.
VIDEO_MEDIATYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".m4v": "video/x-m4v",
                    ".avi": "video/x-msvideo", ".asf": "video/x-ms-asf",
                    ".wmv": "video/x-ms-wmv", ".mkv": "video/x-matroska",
                    ".mts": "video/mp2t", ".3gp": "video/3gpp"}
_ROTATE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
           270: Image.Transpose.ROTATE_270}


class VideoError(OSError):
    """A video that cannot be read (or yielded no frame): the run records it as a failure."""


@dataclass
class SampledFrame:
    """One sampled frame: its index in presentation order, its time (s) and its pixels."""

    frame_number: int
    time: float
    pixels: object  # the upright RGB PIL image, or what `convert` made of it


@dataclass
class Video:
    """What a video yielded: its frame rate, the sampled frames, and what went wrong."""

    frame_rate: float
    frames: list[SampledFrame] = field(default_factory=list)
    frame_count: int = 0
    duration: float = 0.0
    packets_decoded: int = 0  # packets fed to the decoder (frame_count: all of them)
    capture_time: Optional[float] = None
    datetime: Optional[str] = None
    warnings: list[str] = field(default_factory=list)

    @property
    def frames_processed(self) -> list[int]:
        """The sampled frames' numbers (MegaDetector's ``frames_processed``)."""
        return [f.frame_number for f in self.frames]


def is_video(name: Union[str, os.PathLike]) -> bool:
    """True when the file name has one of :data:`VIDEO_EXTENSIONS` (any case)."""
    return os.path.splitext(os.fspath(name))[1].lower() in VIDEO_EXTENSIONS


def media_type(name: Union[str, os.PathLike]) -> Optional[str]:
    """A video's media type from its suffix (any case), None for a file that is no video."""
    return VIDEO_MEDIATYPES.get(os.path.splitext(os.fspath(name))[1].lower())


def video_scores(frame_probs: np.ndarray, rule: str = DEFAULT_VIDEO_RULE) -> np.ndarray:
    """The per-video probabilities from the sampled frames' (the one rule of device and
    training: kerascls imports this so evaluate scores videos as the device does).

    Args:
      frame_probs: (frames, classes) probabilities, one row per sampled frame (or crop).
      rule: "mean": the mean of the rows (every frame votes; steadier when the animal is in
        most frames); "max": the row of the most confident frame (the highest top
        probability, the first on a tie; follows a brief appearance).

    Returns:
      (classes,) float64 probabilities. Raises ValueError for no rows or an unknown rule.
    """
    p = np.asarray(frame_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"frame_probs must be (frames >= 1, classes), got shape {p.shape}")
    if rule == "mean":
        return p.mean(axis=0)
    if rule == "max":
        return p[int(np.argmax(p.max(axis=1)))].copy()
    raise ValueError(f"unknown per-video rule {rule!r}; one of {', '.join(VIDEO_RULES)}")


@dataclass(frozen=True)
class Sampling:
    """The sampling a run uses, and where it came from (the bundle's input contract)."""

    frame_every: float = DEFAULT_FRAME_EVERY
    max_frames: int = DEFAULT_MAX_FRAMES
    rule: str = DEFAULT_VIDEO_RULE
    bundle: Optional[dict] = None  # model.json input.video as read, None for older bundles
    note: Optional[str] = None  # a one-line warning when the command line differs from it

    def record(self) -> dict:
        """What the output's info and the checkpoint keep."""
        return {"frame_every": self.frame_every, "max_frames": self.max_frames,
                "rule": self.rule, "bundle": self.bundle, "note": self.note}


def resolve_sampling(bundle: Optional[dict], frame_every: Optional[float] = None,
                     max_frames: Optional[int] = None) -> Sampling:
    """The bundle's ``input.video`` sampling unless the command line gives other values.

    A value given that differs from the bundle's is used but said (``note``): the model
    then sees frames sampled unlike training's. No ``input.video`` (older bundles): the
    defaults, and a given value is simply used.
    """
    b = bundle or {}
    every = b.get("frame_every", DEFAULT_FRAME_EVERY)
    most = b.get("max_frames", DEFAULT_MAX_FRAMES)
    rule = b.get("rule", DEFAULT_VIDEO_RULE)
    differs = []
    if frame_every is not None and float(frame_every) != float(every):
        differs.append(f"--frame_every {frame_every:g} (the bundle's is {every:g})")
    if max_frames is not None and int(max_frames) != int(most):
        differs.append(f"--max_frames {max_frames} (the bundle's is {most})")
    note = None
    if differs and bundle:
        note = (f"videos sampled with {' and '.join(differs)}: not as the model was trained; "
                "recorded in the output")
    return Sampling(float(every if frame_every is None else frame_every),
                    int(most if max_frames is None else max_frames), rule,
                    dict(bundle) if bundle else None, note)


def sample_frames(ticks: np.ndarray, tick: Fraction, frame_every: float, max_frames: int
                  ) -> list[int]:
    """Indices (into ``ticks``) of the sampled frames: the sampling rule (module docstring).

    Args:
      ticks: each frame's presentation time in ``tick`` units, ascending, the first at 0.
      tick: seconds per tick (the stream's time base).
    """
    if len(ticks) == 0:
        return []
    # ticks between candidates, exact; frame_every as written (0.1 is 1/10, not 0.1000…0555)
    step = Fraction(str(float(frame_every))) / tick
    if step <= 0:
        return [0]
    p, q = step.numerator, step.denominator
    k_count = int(ticks[-1]) * q // p + 1  # candidates k with k·step <= the last time
    m = max(1, int(max_frames))
    if k_count <= m and k_count > len(ticks):  # every frame after a candidate: no list of k
        last = [int(t) * q // p for t in ticks]  # the last candidate at or before each frame
        return [i for i in range(len(ticks)) if i == 0 or last[i] > last[i - 1]]
    if k_count > m:
        ks = [(2 * j * (k_count - 1) + (m - 1)) // (2 * (m - 1)) for j in range(m)] \
            if m > 1 else [0]
    else:
        ks = range(k_count)
    wanted = np.array([-(-(k * p) // q) for k in ks],  # ceil(k · step): first tick at/after
                      dtype=np.int64)
    return sorted(set(np.searchsorted(ticks, wanted, side="left").tolist()) - {len(ticks)})


# -- reading ------------------------------------------------------------------------------------


@dataclass
class _Index:
    """The video stream's packets in decode order: timestamps and key-frame flags."""

    pts: np.ndarray
    key: np.ndarray
    timed: bool
    damage: Optional[str] = None  # why the packets ended early (what came before is used)


def _open(path: Union[str, os.PathLike]):
    """The container and its first video stream, or one clear VideoError."""
    import av

    try:
        st = os.stat(path)
    except OSError as e:
        raise VideoError(f"cannot read video: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoError("not a regular file (a FIFO, device or socket would block)")
    if st.st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        container = av.open(os.fspath(path), metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"not a video the device reads: {_av_message(e)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream in the file")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise VideoError("no decoder for this video's codec (unknown to FFmpeg)")
    return container, stream


def _av_message(e: Exception) -> str:
    """FFmpeg's reason without errno and file name (the output names the file already)."""
    return str(getattr(e, "strerror", None) or e).splitlines()[0][:200]


def _index(container, stream, deadline: float) -> _Index:
    """Every packet's timestamp (pts, else dts) and key flag, in decode order; no decoding."""
    import av

    pts, key, timed, damage = array("q"), bytearray(), True, None  # 9 bytes a packet
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            t = packet.pts if packet.pts is not None else packet.dts
            timed = timed and t is not None
            pts.append(t if t is not None else len(pts))
            key.append(bool(packet.is_keyframe))
            if len(pts) > MAX_PACKETS or time.monotonic() > deadline:
                raise VideoError(f"over {len(pts)} frames or the time limit while indexing")
    except av.error.FFmpegError as e:  # damaged past here: sample what came before
        damage = f"the file is damaged after {len(pts)} frames ({_av_message(e)})"
    return _Index(np.frombuffer(pts, dtype=np.int64).copy(),
                  np.frombuffer(bytes(key), dtype=bool), timed, damage)


def _rate(stream) -> Fraction:
    """Frames per second: the container's average, else FFmpeg's guess, else 1."""
    for r in (stream.average_rate, stream.guessed_rate, stream.codec_context.framerate):
        if r:
            return Fraction(r)
    return Fraction(1)


def _plan(ix: _Index, stream, frame_every: float, max_frames: int
          ) -> tuple[np.ndarray, Fraction, list[int]]:
    """(presentation-order timestamps from 0, seconds per tick, sampled frame numbers)."""
    ix.timed = bool(ix.timed and stream.time_base and len(np.unique(ix.pts)) == len(ix.pts))
    if ix.timed:
        order = np.sort(ix.pts)
        ticks, tick = order - order[0], Fraction(stream.time_base)
    else:  # no timestamps: frame index at the average rate
        ticks, tick = np.arange(len(ix.pts), dtype=np.int64), 1 / _rate(stream)
    return ticks, tick, sample_frames(ticks, tick, frame_every, max_frames)


def _creation_time(container, path) -> tuple[Optional[float], Optional[str]]:
    """The container's creation time (naive, as EXIF times are), else the file's mtime."""
    raw = (container.metadata or {}).get("creation_time", "")
    try:
        dt = datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).replace(tzinfo=None)
        if dt.year > 1970:
            return (dt - datetime(1970, 1, 1)).total_seconds(), dt.isoformat(sep=" ")
    except (ValueError, AttributeError):
        pass
    try:
        return os.path.getmtime(path), None
    except OSError:
        return None, None


def _upright(frame) -> Image.Image:
    """The frame as RGB, turned the way its display matrix says (like EXIF orientation).

    swscale's YUV to RGB is bit-exact only when asked (BITEXACT | ACCURATE_RND): its default
    x86 and NEON paths round differently, so the same video gave other pixels on a Pi.
    """
    from av.video.reformatter import Interpolation as I  # noqa: E741

    exact = I.BILINEAR | I.BITEXACT | I.ACCURATE_RND
    img = Image.fromarray(frame.to_ndarray(format="rgb24", interpolation=exact))  # one copy
    rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    return img.transpose(_ROTATE[rot]) if rot in _ROTATE else img


class _Decoder:
    """Decodes only the packets the sampled frames need, in one pass over the packets."""

    def __init__(self, container, stream, ix: _Index, wanted: dict[int, int],
                 deadline: float, max_pixels: Optional[int]) -> None:
        self.container, self.stream, self.ix = container, stream, ix
        self.deadline, self.max_pixels = deadline, max_pixels
        self.wanted = wanted  # timestamp (or output index) -> frame number
        # for each sampled frame, the key frame (decode position) its decoding starts from
        last_key = np.maximum.accumulate(np.where(ix.key, np.arange(len(ix.key)), 0))
        self.start = {t: int(last_key[np.flatnonzero(ix.pts == t)[0]]) if ix.timed else 0
                      for t in wanted}
        self.errors, self.out_index, self.fed = 0, 0, False  # fed: decoder mid-run
        self.packets = self.corrupt = 0

    def _decode(self, packet):
        import av

        self.packets += packet is not None
        try:
            decoded = self.stream.codec_context.decode(packet)
        except av.error.FFmpegError:
            self.errors += 1
            return
        for frame in decoded:
            stamp = frame.pts if frame.pts is not None else frame.dts
            key = stamp if self.ix.timed else self.out_index
            self.out_index += 1
            number = self.wanted.pop(key, None) if key is not None else None
            if number is None:
                continue
            self.corrupt += bool(frame.is_corrupt)
            if self.max_pixels and frame.width * frame.height > self.max_pixels:
                raise VideoError(f"frames of {frame.width}×{frame.height} are over the "
                                 f"{self.max_pixels / 1e6:g} MP pixel cap")
            yield number, frame


def read_video(path: Union[str, os.PathLike], frame_every: float = DEFAULT_FRAME_EVERY,
               max_frames: int = DEFAULT_MAX_FRAMES, time_limit: float = DEFAULT_TIME_LIMIT,
               max_pixels: Optional[int] = -1,
               convert: Optional[Callable[[Image.Image], object]] = None) -> Video:
    """Sample a video's frames by the rule; ``convert`` turns each upright RGB frame into
    what is kept (default: the PIL image), so at most one RGB frame is alive at a time.

    Raises VideoError when nothing could be sampled; problems short of that are warnings.
    """
    keep = convert or (lambda img: img)
    return _read(path, (frame_every, max_frames), time_limit, max_pixels,
                 lambda img, _number: keep(img))


def read_numbered_frames(path: Union[str, os.PathLike], numbers: Sequence[int],
                         convert: Callable[[Image.Image, int], object],
                         time_limit: float = DEFAULT_TIME_LIMIT,
                         max_pixels: Optional[int] = -1) -> Video:
    """Decode the frames with these numbers (0-based, in presentation order: MegaDetector's
    ``frame_number``) instead of sampling; ``convert(img, number)`` makes what is kept.

    A number past the video's last frame is a warning; none decodable is a VideoError.
    """
    return _read(path, sorted({int(n) for n in numbers}), time_limit, max_pixels, convert)


def _read(path, plan_by, time_limit: float, max_pixels: Optional[int],
          convert: Callable[[Image.Image, int], object]) -> Video:
    """read_video's body: ``plan_by`` is (frame_every, max_frames) or the frame numbers."""
    import av

    from . import decode as decode_module

    cap = decode_module.max_pixels_default if max_pixels == -1 else max_pixels
    deadline = time.monotonic() + time_limit
    with VIDEO_SLOTS:
        try:
            video, ix, plan, ticks, tick = _survey(path, plan_by, deadline, cap)
            container, stream = _open(path)  # afresh: seeking back fails on damaged files
            try:
                return _sample(container, stream, video, ix, plan, ticks, tick, deadline, cap,
                               convert)
            finally:
                container.close()
        except (MemoryError, OverflowError, av.error.FFmpegError) as e:
            raise VideoError(f"cannot decode video: {type(e).__name__}: {_av_message(e)}"
                             ) from None


def _survey(path, plan_by, deadline: float, cap: Optional[int]):
    """Read the packets' timestamps and plan the samples: (video, index, plan, ticks, tick)."""
    container, stream = _open(path)
    try:
        w, h = stream.codec_context.width, stream.codec_context.height
        if cap and w * h > cap:
            raise VideoError(f"video of {w}×{h} is over the {cap / 1e6:g} MP pixel cap")
        ix = _index(container, stream, deadline)
        numbered = isinstance(plan_by, list)
        ticks, tick, plan = _plan(ix, stream, *((1.0, 1) if numbered else plan_by))
        if not plan:
            raise VideoError("no video frames in the file" + (f": {ix.damage}" if ix.damage
                                                               else ""))
        warnings = [ix.damage] if ix.damage else []
        if numbered:
            plan = [n for n in plan_by if 0 <= n < len(ticks)]
            if len(plan) < len(plan_by):
                warnings.append(f"frame number(s) {_listed(sorted(set(plan_by) - set(plan)))} "
                                f"not in the video ({len(ticks)} frames)")
            if not plan:
                raise VideoError(f"none of the frames asked for is in the video: "
                                 f"{warnings[-1]}")
        t, dt = _creation_time(container, path)
        video = Video(frame_rate=round(float(_rate(stream)), 4), frame_count=len(ticks),
                      duration=float(ticks[-1] * tick), capture_time=t, datetime=dt,
                      warnings=warnings)
        return video, ix, plan, ticks, tick
    finally:
        container.close()


def _listed(numbers: Sequence[int], most: int = 5) -> str:
    """A few numbers for a one-line message."""
    head = ", ".join(str(n) for n in numbers[:most])
    return head + (f" … ({len(numbers)} in all)" if len(numbers) > most else "")


def _sample(container, stream, video: Video, ix: _Index, plan: list[int], ticks: np.ndarray,
            tick: Fraction, deadline: float, cap: Optional[int], convert: Callable) -> Video:
    """Decode the planned frames into ``video.frames``."""
    import av

    base = int(np.min(ix.pts)) if ix.timed else 0
    wanted = {int(ticks[n]) + base: n for n in plan}
    stream.codec_context.options = dict(DECODER_OPTIONS)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = CODEC_THREADS
    dec = _Decoder(container, stream, ix, wanted, deadline, cap)
    try:
        for number, frame in _sequential(dec):
            video.frames.append(SampledFrame(number, float(ticks[number] * tick),
                                             convert(_upright(frame), number)))
    except av.error.FFmpegError as e:
        video.warnings.append(f"video stopped decoding: {_av_message(e)}")
    return _finish(video, plan, dec, deadline)


def _sequential(dec: _Decoder):
    """Feed the decoder only the packet runs the sampled frames need (tracks positions)."""
    i = -1
    for packet in dec.container.demux(dec.stream):
        if not packet.size:
            continue
        i += 1
        if not dec.wanted or time.monotonic() > dec.deadline or i >= len(dec.ix.pts):
            return
        first = min(dec.start[t] for t in dec.wanted)
        if i < first:
            dec.fed = False
            continue  # no sampled frame needs this packet: not even parsed
        if not dec.fed and i > 0:
            dec.stream.codec_context.flush_buffers()  # restart cleanly at a key frame
        dec.fed = True
        yield from dec._decode(packet)
    if dec.wanted and time.monotonic() <= dec.deadline:
        yield from dec._decode(None)


def _finish(video: Video, plan: list[int], dec: _Decoder, deadline: float) -> Video:
    """Order the frames; turn what was missed into warnings, or a failure if nothing came."""
    video.frames.sort(key=lambda f: f.frame_number)
    video.packets_decoded = dec.packets
    missed = len(plan) - len(video.frames)
    if time.monotonic() > deadline:
        video.warnings.append(f"stopped at the per-video time limit: {len(video.frames)} of "
                              f"{len(plan)} sampled frames")
    elif missed:
        video.warnings.append(f"{missed} of {len(plan)} sampled frames could not be decoded")
    if dec.errors:
        video.warnings.append(f"{dec.errors} damaged packet(s) skipped")
    if dec.corrupt:
        video.warnings.append(f"{dec.corrupt} decoded frame(s) flagged corrupt by the decoder")
    if not video.frames:
        raise VideoError("no sampled frame could be decoded"
                         + (f" ({video.warnings[0]})" if video.warnings else ""))
    return video


def decode_frames(path: Union[str, os.PathLike], pre, frame_every: float = DEFAULT_FRAME_EVERY,
                  max_frames: int = DEFAULT_MAX_FRAMES, time_limit: float = DEFAULT_TIME_LIMIT,
                  ) -> Video:
    """:func:`read_video` with each frame made model-ready by :func:`decode.decode` (the
    photo path: an upright frame is decoded as a PNG of it would be): HxWxC uint8 pixels."""
    from .decode import decode

    return read_video(path, frame_every, max_frames, time_limit,
                      convert=lambda img: decode(img, pre, max_pixels=None).arrays[0])


@dataclass
class DecodedVideo(Decoded):
    """A video as the runner's decode result: ``arrays`` holds one array per sampled frame
    (so a batched backend stacks them like crops), ``video`` the rest."""

    video: Optional[Video] = None
    boxes: Optional[list[int]] = None  # decode_video_crops: the box each array belongs to


def decode_video(path: Union[str, os.PathLike], pre, frame_every: float = DEFAULT_FRAME_EVERY,
                 max_frames: int = DEFAULT_MAX_FRAMES, time_limit: float = DEFAULT_TIME_LIMIT
                 ) -> DecodedVideo:
    """:func:`decode_frames` as the runner's per-item decode result."""
    v = decode_frames(path, pre, frame_every, max_frames, time_limit)
    return DecodedVideo(arrays=[f.pixels for f in v.frames], capture_time=v.capture_time,
                        datetime=v.datetime, warnings=list(v.warnings), video=v)


def spread_evenly(items: Sequence, most: int) -> list:
    """At most ``most`` of ``items``, spread evenly as the sampling rule spreads candidates:
    item ``round(j · (K-1) / (M-1))`` for j = 0 … M-1, halves up (first and last kept)."""
    k, m = len(items), max(1, int(most))
    if k <= m:
        return list(items)
    picks = [(2 * j * (k - 1) + (m - 1)) // (2 * (m - 1)) for j in range(m)] if m > 1 else [0]
    return [items[i] for i in picks]


def decode_video_crops(path: Union[str, os.PathLike], pre, boxes: Sequence[tuple[int, tuple]],
                       padding: float = 0.0, square: bool = False,
                       time_limit: float = DEFAULT_TIME_LIMIT) -> DecodedVideo:
    """Detector boxes on a video's frames (``(frame_number, [x, y, w, h])`` each, MegaDetector's
    frame numbers) as model inputs: exactly those frames are decoded, each box cropped by the
    bundle's crop rule and decoded alone as a photo's box is. ``boxes`` of the result names the
    box (its index in ``boxes``) of each array; a box whose frame failed has none."""
    from .decode import crop_region, decode

    by_frame: dict[int, list[int]] = {}
    for i, (number, _) in enumerate(boxes):
        by_frame.setdefault(int(number), []).append(i)
    got: dict[int, np.ndarray] = {}

    def crops(img: Image.Image, number: int) -> None:
        for i in by_frame[number]:
            box = tuple(float(v) for v in boxes[i][1])
            region = crop_region(box, img.size, padding, square) if padding or square else box
            got[i] = decode(img, pre, regions=[region], max_pixels=None).arrays[0]

    v = read_numbered_frames(path, list(by_frame), crops, time_limit)
    order = sorted(got)
    return DecodedVideo(arrays=[got[i] for i in order], capture_time=v.capture_time,
                        datetime=v.datetime, warnings=list(v.warnings), video=v, boxes=order)

"""Batch prediction over folders of camera-trap images: lazy, prefetching, checkpointed.

Memory stays flat on 100,000+ files: files are listed one directory at a time, at most a small
window of decoded images is in flight, and each result goes to the journal as a small record
(top-k and sparse probabilities, never the probability array).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, TextIO

import numpy as np

from .bundle import EdgeError, Fields, _kind, is_number
from .classifier import Classifier
from .decode import Box, Decoded, crop_region, reduction, upright_file_size
from .journal import Journal, OutputLock, bundle_identity, file_identity
from .mdformat import (
    DETECTION_CATEGORIES,
    classification_categories,
    crops_video_block,
    failure_record,
    image_record,
    info_block,
    ranked,
    video_failure_record,
    video_record,
    write_csv,
    write_json,
)
from .outputs import IMAGE_EXTENSIONS, bundle_files, check_output
from .sequences import smooth
from .userfiles import read_text, sha256_file
from .video import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_TIME_LIMIT,
    DEFAULT_VIDEO_RULE,
    DecodedVideo,
    Sampling,
    decode_video,
    decode_video_crops,
    is_video,
    resolve_sampling,
    spread_evenly,
)


@dataclass
class Options:
    """Everything `predict` can be told; the CLI maps its flags onto this."""

    output: Path
    format: str = "megadetector"
    top_k: int = 5
    recursive: bool = False
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int = 100
    decode_threads: Optional[int] = None  # None: default_decode_threads(interpreter's)
    strict: bool = False
    smooth: str = "none"
    sequence_gap: float = 10.0
    detections: Optional[Path] = None
    detection_threshold: float = 0.2
    progress_every: float = 5.0
    keep_checkpoint: bool = False
    labels_path: Optional[str] = None  # a --labels file: read by the run, so never an output
    post: Optional[object] = None  # taxonomy.Post: allow-list and roll-up (--allow, --rollup_*)
    allow_path: Optional[str] = None  # the --allow file (its content hash goes in the checkpoint)
    frame_every: Optional[float] = None  # videos: seconds between sampled frames (None: the
    max_frames: Optional[int] = None  # bundle's model.json input.video, else video's defaults)
    video_time_limit: float = DEFAULT_TIME_LIMIT  # videos: wall seconds each before partial
    video_rule: str = DEFAULT_VIDEO_RULE  # videos: the per-video rule (set from the bundle)
    sampling: Optional[Sampling] = None  # what resolve_video settled on (info, checkpoint)


def default_decode_threads(interpreter_threads: int) -> int:
    """One decode thread per core, and at least one more than the interpreter has.

    Huffman-decoding a full-size frame costs more than a small int8 model (9.4 vs 3.7 ms on
    lila_mixed), so decoding should reach every core; the extra thread takes the CPU that
    XNNPACK's workers leave between invokes (2 cores, 2 interpreter threads: 3 decode
    threads run 83–89 img/s against 78–81 with 2).
    """
    return max(interpreter_threads + 1, os.cpu_count() or 1)


@dataclass
class Item:
    """One unit of work: the file to open, its name in the output, regions to classify."""

    path: str
    rel: str
    entry: Optional[dict] = None
    regions: list[Box] = field(default_factory=list)
    det_index: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # a video's: each region's frame_number
    error: Optional[str] = None  # a folder or entry that could not be read while listing
    ident: Optional[str] = None  # journal.file_identity, taken before the decode


class ListingError(OSError):
    """A folder that could not be listed or an entry that could not be examined."""


# -- listing ------------------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    """An input the listing takes: a photo or a video (video.VIDEO_EXTENSIONS)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS or is_video(name)


_NOT_REGULAR = "not a regular file (a FIFO, device or socket would block or never end)"


def _scan(directory: str) -> tuple[list[tuple[str, bool]], list[str], list[tuple[str, str]]]:
    """One directory's image files (with whether each is a symlink) and subfolders, in name
    order, and the entries that failed.

    Each entry is examined on its own, so one bad entry (a symlink loop, a vanished file)
    never drops its whole folder.
    """
    files, subdirs, errors = [], [], []
    entries = []
    with os.scandir(directory) as it:
        for e in it:
            # (name, is_dir, is_link, error) only: DirEntry objects cache stat results,
            # ~1 KB per file.
            try:
                is_dir = e.is_dir()
                # a FIFO/device named like an image would block the decoder; a dangling
                # link is left to fail at decode like any unreadable image
                special = not is_dir and _is_image(e.name) and not e.is_file() and \
                    os.path.exists(e.path)
                entries.append((e.name, is_dir, e.is_symlink(),
                                _NOT_REGULAR if special else None))
            except OSError as err:  # e.g. a symlink loop (ELOOP)
                entries.append((e.name, False, False, err.strerror or str(err)))
    for name, is_dir, is_link, err in sorted(entries, key=lambda t: t[0]):
        path = os.path.join(directory, name)
        if err is not None:
            errors.append((path, f"cannot examine: {err}"))
        elif is_dir:
            subdirs.append(path)
        elif _is_image(name):
            files.append((path, is_link))
    return files, subdirs, errors


FileKey = tuple[int, int]  # (st_dev, st_ino): one real file or directory


@dataclass
class _Seen:
    """What a listing has met, so each real directory is walked once and each real file is
    listed once, however many links lead to it (the first path in listing order wins).

    Only files that can be met again are kept: symlink targets, files with hard links and
    explicit arguments. A plain file is met again only through a link to it; such a link
    asks whether the link's target folder was already listed instead (memory stays flat on
    a 300,000-image card).
    """

    dirs: set[FileKey] = field(default_factory=set)
    files: set[FileKey] = field(default_factory=set)
    current: Optional[FileKey] = None  # the folder whose files are being listed

    def first(self, path: str, is_link: bool, explicit: bool = False) -> bool:
        """True when `path` is the first way to its real file; remembers it if it may recur.

        A file that cannot be examined is let through: the decode reports it.
        """
        try:
            st = os.stat(path)
        except OSError:
            return True
        key = (st.st_dev, st.st_ino)
        if key in self.files or ((is_link or explicit) and self._listed_in_folder(path)):
            return False
        if is_link or explicit or st.st_nlink > 1:
            self.files.add(key)
        return True

    def _listed_in_folder(self, path: str) -> bool:
        """Did the walk already list the link's target under its own name?"""
        real = os.path.realpath(path)
        folder, name = os.path.split(real)
        if not _is_image(name):
            return False
        try:
            st = os.stat(folder)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key == self.current:  # this folder: listed if it comes earlier in name order
            return name < os.path.basename(path)
        return key in self.dirs


def _walk(directory: str, recursive: bool, seen: _Seen) -> Iterator[tuple[str, Optional[str]]]:
    """(path, error) for the images of a folder tree: a folder's files, then its subfolders.

    Every real directory is visited once and every real file listed once (`seen`: by
    (st_dev, st_ino)), so symlink loops and aliases (a linked file beside its target, a
    `--sort_into` tree of links next to the card) neither repeat nor drop files; an explicit
    stack keeps deep trees off the C stack.
    """
    stack = [directory]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
            key = (st.st_dev, st.st_ino)
            if key in seen.dirs:
                continue
            seen.dirs.add(key)
            files, subdirs, errors = _scan(d)
        except OSError as e:
            yield d, f"cannot list folder: {e.strerror or e}"
            continue
        for path, err in errors:
            if recursive or _is_image(path):
                yield path, err
        seen.current = key
        for path, is_link in files:
            if seen.first(path, is_link):
                yield path, None
        seen.current = None
        if recursive:
            stack.extend(reversed(subdirs))


def image_base(inputs: Sequence[str]) -> str:
    """The folder output paths are relative to: the one input folder, else the inputs' parent."""
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        return os.path.abspath(inputs[0])
    parents = [os.path.abspath(p if os.path.isdir(p) else os.path.dirname(p) or ".")
               for p in inputs]
    return os.path.commonpath(parents)


def _rel(path: str, base: str) -> str:
    return os.path.relpath(os.path.abspath(path), base).replace(os.sep, "/")


def iter_items(inputs: Sequence[str], recursive: bool, base: str) -> Iterator[Item]:
    """Lazily list the inputs (files taken as given, folders scanned for image extensions)."""
    seen = _Seen()
    for p in inputs:
        if os.path.isdir(p):
            for f, err in _walk(p, recursive, seen):
                yield Item(f, _rel(f, base), error=err)
        elif seen.first(p, os.path.islink(p), explicit=True):  # the same file twice: once
            st = os.stat(p)
            bad = None if stat.S_ISREG(st.st_mode) else f"cannot examine: {_NOT_REGULAR}"
            yield Item(p, _rel(p, base), error=bad)


# -- pipeline -----------------------------------------------------------------------------------


def prefetch(items: Iterable[Item], job: Callable[[Item], object], workers: int
             ) -> Iterator[tuple[Item, object]]:
    """Run `job` on a thread pool a bounded window ahead, yielding results in input order.

    Pillow releases the GIL while decoding and resizing, so decoding overlaps inference; the
    window bounds memory. An exception is yielded as the result, not raised.
    """
    def safe(item: Item) -> object:
        try:
            return job(item)
        except Exception as e:  # any decode error becomes this image's failure entry
            return e

    if workers <= 0:
        for item in items:
            yield item, safe(item)
        return
    window: deque[tuple[Item, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for item in items:
            window.append((item, pool.submit(safe, item)))
            if len(window) > 2 * workers + 2:
                it, fut = window.popleft()
                yield it, fut.result()
        while window:
            it, fut = window.popleft()
            yield it, fut.result()


class Progress:
    """Throttled progress on stderr: a long unattended run shows it is alive without flooding."""

    def __init__(self, every_s: float, stream: Optional[TextIO] = None, skipped: int = 0) -> None:
        self.every_s, self.stream, self.skipped = every_s, stream or sys.stderr, skipped
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()

    def tick(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        now = time.monotonic()
        if self.every_s >= 0 and now - self._last >= self.every_s:
            self._last = now
            self._print("")

    def _print(self, prefix: str) -> None:
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        skipped = f", {self.skipped} done earlier" if self.skipped else ""
        print(f"kerascls-edge: {prefix}{self.done} images ({rate:.1f}/s), {self.failed} failed"
              f"{skipped}", file=self.stream, flush=True)

    def finish(self) -> None:
        self._print("finished: ")


# -- whole-image and detection modes -----------------------------------------------------------


def _whole_image_job(clf: Classifier, opts: Options) -> Callable[[Item], Decoded]:
    def job(item: Item) -> Decoded:
        if item.error:
            raise ListingError(item.error)
        if is_video(item.path):  # one item: its sampled frames, each decoded as a photo
            return decode_video(item.path, clf.preprocess, opts.frame_every, opts.max_frames,
                                opts.video_time_limit)
        return clf.decode(item.path, strict=opts.strict)
    return job


def _detections_job(clf: Classifier, strict: bool, opts: Optional[Options] = None
                    ) -> Callable[[Item], Optional[Decoded]]:
    def job(item: Item) -> Optional[Decoded]:
        if not item.regions:
            return None
        if item.frames:  # a video's boxes: decode exactly the frames MegaDetector boxed
            return _video_crops(clf, item, opts or Options(output=Path("-")))
        regions = _crops(clf, item)
        groups = _scale_groups(item.path, regions, clf.preprocess)
        if len(groups) == 1:
            return clf.decode(item.path, regions=regions, strict=strict)
        decs = [clf.decode(item.path, regions=[regions[i] for i in g], strict=strict)
                for g in groups]
        arrays: list = [None] * len(regions)
        for g, d in zip(groups, decs):
            for i, a in zip(g, d.arrays):
                arrays[i] = a
        out = decs[0]
        out.arrays = arrays
        out.warnings = list(dict.fromkeys(w for d in decs for w in d.warnings))
        return out
    return job


def _scale_groups(path: str, regions: list[Box], pre) -> list[list[int]]:
    """Region indices grouped by the decode scale each needs on its own.

    One decode serves a frame's boxes at the scale its smallest box needs; training plans
    each box alone, so boxes that want different scales are decoded once per scale and
    every crop gets the pixels training saw (most frames: one group, one decode).
    """
    if len(regions) < 2:
        return [list(range(len(regions)))]
    try:
        size = upright_file_size(path)
    except Exception:  # unreadable: the decode reports it
        return [list(range(len(regions)))]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(regions):
        groups.setdefault(reduction(size, pre, [r]), []).append(i)
    return list(groups.values())


def _video_crops(clf: Classifier, item: Item, opts: Options) -> DecodedVideo:
    """A video's detector boxes, cropped on their frames (docs/edge-outputs.md, Videos).

    More boxed frames than ``max_frames``: that many, spread evenly; the other frames' boxes
    stay unclassified, with a warning (the bound on time and memory sampling has too).
    """
    numbers = sorted(set(item.frames))
    keep = set(spread_evenly(numbers, opts.max_frames or DEFAULT_MAX_FRAMES))
    chosen = [i for i, n in enumerate(item.frames) if n in keep]  # indices into regions
    dec = decode_video_crops(item.path, clf.preprocess,
                             [(item.frames[i], item.regions[i]) for i in chosen],
                             clf.spec.crop_padding, clf.spec.crop_square, opts.video_time_limit)
    dec.boxes = [chosen[b] for b in dec.boxes]
    if len(keep) < len(numbers):
        dec.warnings.append(f"boxes on {len(numbers)} frames: {len(keep)} of them (spread "
                            f"evenly, --max_frames) classified, the rest left unclassified")
    return dec


def _crops(clf: Classifier, item: Item) -> list[Box]:
    """The bundle's crop rule (model.json ``crop``) applied to the item's detector boxes."""
    pad, square = clf.spec.crop_padding, clf.spec.crop_square
    if not pad and not square:
        return item.regions
    size = upright_file_size(item.path) if square else (1, 1)
    return [crop_region(r, size, pad, square) for r in item.regions]


def _classify_video(clf: Classifier, item: Item, dec: DecodedVideo, opts: Options,
                    empty: set[int], rows: Optional[np.ndarray] = None) -> dict:
    """A video's record: every sampled frame classified, the per-video label by the rule."""
    probs = clf.predict_array(np.stack(dec.arrays)) if rows is None else rows
    if opts.post is not None:
        probs = np.stack([opts.post.probs(p, item.rel) for p in probs])
    v = dec.video
    return video_record(item.rel, probs, [(f.frame_number, f.time) for f in v.frames],
                        v.frame_rate, clf.labels, empty, opts.top_k, dec.capture_time,
                        dec.datetime, dec.warnings,
                        opts.post.ranking if opts.post is not None else None, opts.video_rule)


def _classify_whole(clf: Classifier, item: Item, dec: Decoded, opts: Options,
                    empty: set[int], rows: Optional[np.ndarray] = None) -> dict:
    if isinstance(dec, DecodedVideo):
        return _classify_video(clf, item, dec, opts, empty, rows)
    probs = (clf.predict_array(dec.arrays[0]) if rows is None else rows)[0]
    if opts.post is not None:
        probs = opts.post.probs(probs, item.rel)
    rec = image_record(item.rel, probs, clf.labels, empty, opts.top_k, dec.capture_time,
                       dec.datetime, dec.warnings)
    return opts.post.whole(rec, probs) if opts.post is not None else rec


def _classify_detections(clf: Classifier, item: Item, dec: Optional[Decoded],
                         opts: Options, rows: Optional[np.ndarray] = None) -> dict:
    """Write each eligible detection's classifications into (a copy of) its MegaDetector entry."""
    rec = item.entry
    if dec is None:
        return rec
    probs = clf.predict_array(np.stack(dec.arrays)) if rows is None else rows
    boxes = dec.boxes if isinstance(dec, DecodedVideo) else range(len(item.det_index))
    kept = []
    for row, b in enumerate(boxes):
        i = item.det_index[b]
        p = opts.post.probs(probs[row], item.rel) if opts.post is not None else probs[row]
        kept.append(p)
        k_list = ranked(p, opts.top_k)
        rec["detections"][i]["classifications"] = (opts.post.ranking(k_list, p)
                                                   if opts.post is not None else k_list)
    if isinstance(dec, DecodedVideo):
        _video_of_crops(rec, item, dec, kept, opts)
    if dec.warnings:
        rec["warnings"] = dec.warnings
    return rec


def _video_of_crops(rec: dict, item: Item, dec: DecodedVideo, probs: list, opts: Options
                    ) -> None:
    """A detector's video entry gets its ``video`` block (the per-video label) from its
    classified boxes, and the decoded frame rate if the detector's file had none."""
    times = {f.frame_number: f.time for f in dec.video.frames}
    by_frame: dict[int, list] = {}
    for b, p in zip(dec.boxes, probs):
        by_frame.setdefault(item.frames[b], []).append(p)
    frames = [(n, times.get(n, 0.0), np.stack(ps)) for n, ps in sorted(by_frame.items())]
    rec["video"] = crops_video_block(frames, opts.top_k, opts.post.ranking if opts.post
                                     is not None else None, opts.video_rule)
    rec.setdefault("frame_rate", dec.video.frame_rate)


def _md_items(md: dict, image_dir: str, opts: Options) -> Iterator[Item]:
    """Items for a MegaDetector file: each image's animal boxes above the threshold."""
    animal = {k for k, v in (md.get("detection_categories") or {}).items() if v == "animal"}
    for entry in md["images"]:
        entry = json.loads(json.dumps(entry))  # our copy: the old classifications go away
        path = os.path.join(image_dir, entry["file"])  # an absolute file name stays absolute
        item = Item(path, entry["file"], entry)
        entry.pop("video", None)  # an earlier run's per-video label: recomputed or gone
        if is_video(entry["file"]) and not isinstance(entry.get("frames_processed"), list):
            # MegaDetector 1.4 files lack it (1.5+ requires it): the frames it boxed
            entry["frames_processed"] = sorted({int(d["frame_number"]) for d in
                                                entry.get("detections") or []})
        for i, det in enumerate(entry.get("detections") or []):
            det.pop("classifications", None)
            if det["category"] in animal and det["conf"] >= opts.detection_threshold:
                item.regions.append(tuple(float(v) for v in det["bbox"]))
                item.det_index.append(i)
                if is_video(entry["file"]):
                    item.frames.append(int(det["frame_number"]))
        if entry.get("failure"):
            item.regions, item.det_index, item.frames = [], [], []
        yield item


def _check_detection(images: Fields, i: int, j: int, det: object) -> None:
    d = Fields(images.source, det, f"images[{i}].detections[{j}]")
    d.str_("category")
    d.number("conf")
    box = d.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
        d.fail(d._name("bbox"), "expected [x, y, width, height] (4 finite numbers), "
                                f"got {_kind(box)}")


def _check_md(path: Path, md: object) -> dict:
    """Check every field the detections mode reads: one line naming the file and the field."""
    top = Fields(path, md)
    images = top.get("images")
    if not isinstance(images, list):
        top.fail("images", f"expected a list, got {_kind(images)}")
    cats = top.obj("detection_categories")
    for k, v in cats.data.items():
        if not isinstance(v, str):
            cats.fail(cats._name(str(k)), f"expected a string, got {_kind(v)}")
    seen: dict[str, int] = {}
    for i, entry in enumerate(images):
        e = Fields(path, entry, f"images[{i}]")
        if not e.str_("file"):
            e.fail(e._name("file"), "empty file name")
        _check_unique(e, i, seen)
        e.str_("failure", None)
        dets = e.get("detections", [])
        if not isinstance(dets, list):
            e.fail(e._name("detections"), f"expected a list or null, got {_kind(dets)}")
        for j, det in enumerate(dets):
            _check_detection(e, i, j, det)
            if is_video(entry["file"]):
                Fields(path, det, f"images[{i}].detections[{j}]").int_("frame_number", lo=0,
                                                                       hi=1 << 40)
    return md


def _check_unique(entry: Fields, i: int, seen: dict[str, int]) -> None:
    """Each image once: a second entry for a file (also `a/./b.jpg` beside `a/b.jpg`) would be
    dropped or doubled downstream, and Camtrap DP's mediaID must be unique."""
    key = os.path.normpath(entry.data["file"])
    if key in seen:
        entry.fail(entry._name("file"), f"{entry.data['file']!r} is listed twice (also "
                                        f"images[{seen[key]}]); give each image once")
    seen[key] = i


def load_md(path: Path) -> dict:
    """Read and validate a MegaDetector batch output file (the --detections input)."""
    try:
        md = json.loads(read_text(path, "results"))  # a regular, size-capped file
    except EdgeError:
        raise
    except (OSError, ValueError, RecursionError) as e:
        raise EdgeError(f"cannot read detections file {path}: {e}") from None
    return _check_md(path, md)


# -- the run ------------------------------------------------------------------------------------


def _meta(clf: Classifier, inputs: Sequence[str], opts: Options) -> dict:
    """Everything that changes a result: resume refuses a checkpoint that differs in any.

    Files are recorded by content (sha256), so an edited allow-list or detections file is
    caught under the same name, and a moved one still resumes.
    """
    from . import decode, taxonomy

    spec = clf.spec
    tax = Path(spec.model_path).parent / taxonomy.FILE_NAME
    return {"bundle": bundle_identity(spec.model_path, clf.labels),
            "preprocess": {k: getattr(spec, k) for k in (
                "height", "width", "channels", "dtype", "value_range", "resize",
                "interpolation", "activation", "task", "empty_classes")},
            "crop": {"padding": spec.crop_padding, "square": spec.crop_square},
            "inputs": [os.path.abspath(p) for p in inputs],
            "recursive": opts.recursive,
            "detections": sha256_file(opts.detections, "results") if opts.detections else None,
            "detection_threshold": opts.detection_threshold if opts.detections else None,
            "top_k": opts.top_k,
            "video": {"frame_every": opts.frame_every, "max_frames": opts.max_frames,
                      "rule": opts.video_rule,
                      "bundle": opts.sampling.bundle if opts.sampling else None},
            "decode": {"strict": opts.strict,
                       "max_pixels": getattr(decode, "max_pixels_default", None)},
            "allow_list": sha256_file(opts.allow_path, "allow-list") if opts.allow_path
            else None,
            "taxonomy": sha256_file(tax, "taxonomy") if opts.post is not None and
            tax.is_file() else None,
            "post": opts.post.metadata() if opts.post is not None else None}


def resolve_video(clf: Classifier, opts: Options, stderr: Optional[TextIO] = None) -> None:
    """Settle the video sampling: the bundle's ``input.video`` unless the command line says
    otherwise (then a one-line warning; both are recorded in the info and the checkpoint)."""
    s = resolve_sampling(getattr(clf.spec, "video", None), opts.frame_every, opts.max_frames)
    opts.frame_every, opts.max_frames, opts.video_rule, opts.sampling = \
        s.frame_every, s.max_frames, s.rule, s
    if s.note:
        print(f"kerascls-edge: warning: {s.note}", file=stderr or sys.stderr)


def _record_for(clf: Classifier, item: Item, result: object, opts: Options,
                empty: set[int], rows: Optional[np.ndarray] = None) -> dict:
    rec = _result_record(clf, item, result, opts, empty, rows)
    rec["_id"] = item.ident  # what the journal compares on resume
    return rec


def _result_record(clf: Classifier, item: Item, result: object, opts: Options,
                   empty: set[int], rows: Optional[np.ndarray] = None) -> dict:
    if isinstance(result, Exception):
        if opts.detections:
            # MegaDetector read this image: keep its boxes, unclassified, and say why.
            rec = item.entry
            rec["warnings"] = [f"not classified: {failure_record(item.rel, result)['failure']}"]
            rec["_failed"] = True
            return rec
        rec = (video_failure_record if is_video(item.rel) else failure_record)(item.rel, result)
        if isinstance(result, ListingError):
            rec["_listing"] = True
        return rec
    if opts.detections:
        return _classify_detections(clf, item, result, opts, rows)
    return _classify_whole(clf, item, result, opts, empty, rows)


def _chunk_rows(clf: Classifier, pairs: Sequence[tuple[Item, object]]
                ) -> list[Optional[np.ndarray]]:
    """Per (item, decode result) its probability rows, from one `predict_array` call.

    A batched backend (the Keras model: `clf.batch_size` > 1) pays its per-call cost once
    per chunk; a failed or box-less item gets None.
    """
    arrays, counts = [], []
    for _, result in pairs:
        ok = isinstance(result, Decoded)
        arrays.extend(result.arrays if ok else [])
        counts.append(len(result.arrays) if ok else 0)
    probs = clf.predict_array(np.stack(arrays)) if arrays else None
    out, start = [], 0
    for n in counts:
        out.append(probs[start:start + n] if n else None)
        start += n
    return out


def empty_ids(clf: Classifier) -> set[int]:
    """Output indices of the classes the bundle names empty (blank frames)."""
    return {i for i, n in enumerate(clf.labels) if n in set(clf.spec.empty_classes)}


def classify_chunk(clf: Classifier, pairs: Sequence[tuple[Item, object]], opts: Options
                   ) -> list[dict]:
    """Result records for decoded items, in order: what `predict` journals, for any backend
    (kerascls's Keras model, a Ray actor) that decodes with `decode_job` and has
    `predict_array`."""
    empty = empty_ids(clf)
    return [_record_for(clf, item, result, opts, empty, rows)
            for (item, result), rows in zip(pairs, _chunk_rows(clf, pairs))]


def decode_job(clf: Classifier, opts: Options) -> Callable[[Item], object]:
    """The per-item decode `predict` runs (whole image, or the detector boxes' crops).

    The file's identity is taken first, so a file replaced during the decode is at worst
    redone on the next resume, never kept with a result of other content.
    """
    if opts.sampling is None:  # called without predict (a backend's own loop)
        resolve_video(clf, opts)
    decode = _detections_job(clf, opts.strict, opts) if opts.detections else \
        _whole_image_job(clf, opts)

    def job(item: Item) -> object:
        if item.ident is None and not item.error:
            item.ident = file_identity(item.path)
        return decode(item)
    return job


def pending(items: Iterable[Item], journal: Journal) -> Iterator[Item]:
    """The items a run still has to classify: new files, and files the journal holds whose
    content has changed since (same name, other photo: a refilled card)."""
    for item in items:
        if item.rel in journal.done:
            item.ident = None if item.error else file_identity(item.path)
        if journal.unchanged(item.rel, item.ident):
            continue
        yield item


def chunks(pairs: Iterable[tuple[Item, object]], size: int
           ) -> Iterator[list[tuple[Item, object]]]:
    """Lists of consecutive pairs holding at most `size` model inputs each (an item larger
    than that alone), taken lazily. An item counts its arrays (a video its sampled frames, at
    least one), so a chunk of 32-frame clips is one batch of memory, not `size` × 32 frames."""
    chunk: list[tuple[Item, object]] = []
    inputs = 0
    for pair in pairs:
        n = max(1, len(pair[1].arrays) if isinstance(pair[1], Decoded) else 1)
        if chunk and inputs + n > size:
            yield chunk
            chunk, inputs = [], 0
        chunk.append(pair)
        inputs += n
        if inputs >= size:
            yield chunk
            chunk, inputs = [], 0
    if chunk:
        yield chunk


class _Classified(NamedTuple):
    """A decode result and its probability rows, both from the worker thread."""

    decoded: object
    rows: Optional[np.ndarray]


def invoke_in_workers(clf: Classifier, workers: int) -> bool:
    """Whether each decode worker classifies what it decodes, on its own interpreter.

    That is the default for a one-thread interpreter and two or more workers: every core
    then decodes and infers, with no hand-over to one inference thread that either waits
    for decodes or keeps the decoders waiting (2 cores, lila_mixed: 0.94 of the machine
    bound against 0.86; bench/edge_predict.py). A batched backend (`batch_size` > 1) or a
    multi-thread interpreter keeps the single inference thread.
    """
    return (workers >= 2 and clf.threads == 1 and hasattr(clf, "replica")
            and int(getattr(clf, "batch_size", 1)) == 1)


def _classifying(clf: Classifier, job: Callable[[Item], object]) -> Callable[[Item], object]:
    """`job` followed by inference on the calling thread's own interpreter (`clf` for the
    first thread, a replica for each other)."""
    spare, lock, local = [clf], threading.Lock(), threading.local()

    def interpreter() -> Classifier:
        if not hasattr(local, "clf"):
            with lock:
                local.clf = spare.pop() if spare else None
            local.clf = local.clf or clf.replica()
        return local.clf

    def classify(item: Item) -> object:
        dec = job(item)
        if not isinstance(dec, Decoded) or not dec.arrays:
            return _Classified(dec, None)
        return _Classified(dec, interpreter().predict_array(np.stack(dec.arrays)))
    return classify


def _consume(clf: Classifier, items: Iterable[Item], journal: Journal, opts: Options,
             progress: Progress) -> None:
    """Classify everything not yet in the journal, checkpointing as it goes."""
    empty = empty_ids(clf)
    job = decode_job(clf, opts)
    todo = pending(items, journal)
    batch = int(getattr(clf, "batch_size", 1))
    try:
        workers = (default_decode_threads(clf.threads) if opts.decode_threads is None
                   else opts.decode_threads)
        if invoke_in_workers(clf, workers):
            job = _classifying(clf, job)
        pairs = prefetch(todo, job, workers)
        if batch > 1:  # a batched backend: one inference call per chunk of images
            recs = (r for chunk in chunks(pairs, batch) for r in classify_chunk(clf, chunk, opts))
        else:
            recs = (_record_for(clf, item, result, opts, empty)
                    if not isinstance(result, _Classified) else
                    _record_for(clf, item, result.decoded, opts, empty, result.rows)
                    for item, result in pairs)
        for rec in recs:
            failed = bool(rec.get("failure") or rec.pop("_failed", False))
            journal.add(rec)
            progress.tick(failed)
    finally:
        journal.flush()


def _header(clf: Classifier, opts: Options, md: Optional[dict], base: str) -> dict:
    """Top-level keys of the output file, `images` excluded."""
    extra = {"empty_classes": list(clf.spec.empty_classes), "top_k": opts.top_k,
             **(opts.post.metadata() if opts.post is not None else {})}
    if opts.sampling is not None:
        extra["video_sampling"] = opts.sampling.record()
    labels = opts.post.out_labels() if opts.post is not None else clf.labels
    if opts.smooth != "none":
        extra["sequence_smoothing"] = {"method": opts.smooth, "gap_seconds": opts.sequence_gap}
    if md is not None:
        info = info_block(clf.spec.name, clf.spec.thresholds, str(clf.spec.model_path),
                          {**extra, "detection_threshold": opts.detection_threshold},
                          base=md.get("info"))
        header = {k: v for k, v in md.items() if k not in ("images", "info",
                                                          "classification_categories",
                                                          "classification_category_descriptions")}
        return {"info": info, **header,
                "classification_categories": classification_categories(labels)}
    info = info_block(clf.spec.name, clf.spec.thresholds, str(clf.spec.model_path), extra,
                      base={"detector": "none (kerascls-edge whole-image classifier)",
                            "image_base": base})
    return {"info": info, "detection_categories": dict(DETECTION_CATEGORIES),
            "classification_categories": classification_categories(labels)}


def _final_records(journal: Journal, clf: Classifier, opts: Options) -> Iterator[dict]:
    recs = journal.records()
    if opts.smooth == "mean" and not opts.detections:
        recs = smooth(recs, opts.sequence_gap, len(clf.labels), opts.top_k)
    return recs


class _Counted:
    """Passes records through, counting the listing failures the final output holds."""

    def __init__(self, records: Iterable[dict]) -> None:
        self.records, self.listing = records, 0

    def __iter__(self) -> Iterator[dict]:
        for rec in self.records:
            self.listing += bool(rec.get("_listing"))
            yield rec


def _check_inputs(clf: Classifier, inputs: Sequence[str], opts: Options) -> Path:
    """Every refusal that needs no image: run before the first inference. Returns the output."""
    for p in inputs:
        if not os.path.exists(p):
            raise EdgeError(f"no such file or directory: {p}")
    reads = [*inputs, *bundle_files(clf.spec.model_path, opts.labels_path)]
    if opts.detections:
        reads.append(str(opts.detections))
    return check_output(Path(opts.output), reads, opts.overwrite)


def _write(output: Path, recs: Iterable[dict], clf: Classifier, opts: Options,
           header: Optional[dict]) -> int:
    """Write the final file, naming the user's file (not our temp file) if it fails."""
    try:
        if opts.format == "csv":
            labels = opts.post.out_labels() if opts.post is not None else clf.labels
            return write_csv(output, recs, labels)
        return write_json(output, header, recs)
    except OSError as e:
        raise EdgeError(f"cannot write {output}: {e.strerror or e}") from None


def predict(clf: Classifier, inputs: Sequence[str], opts: Options,
            stderr: Optional[TextIO] = None, consume: Optional[Callable] = None) -> dict:
    """Classify `inputs` (files/folders) into `opts.output`; returns a small summary dict.

    `consume(clf, items, journal, opts, progress)` replaces the local classify loop (the
    Ray engine classifies on a cluster into the same journal).

    `unreadable` in the summary counts folders and entries that could not be listed; they are
    `failure` entries of the output and make the CLI exit 1.
    """
    output = _check_inputs(clf, inputs, opts)
    resolve_video(clf, opts, stderr)
    md = load_md(opts.detections) if opts.detections else None
    if md is not None and opts.smooth != "none":
        raise EdgeError("--smooth works on whole-image results only, not with --detections")
    if md is not None and len(inputs) != 1:
        raise EdgeError("with --detections give exactly one image folder (the one the "
                        "MegaDetector file's paths are relative to)")
    base = os.path.abspath(inputs[0]) if md is not None else image_base(inputs)
    items = _md_items(md, base, opts) if md is not None else iter_items(inputs, opts.recursive,
                                                                        base)
    journal = Journal(output.with_name(output.name + ".partial"), opts.checkpoint_every,
                      stderr=stderr, n_classes=len(opts.post.out_labels() if opts.post
                                                   is not None else clf.labels))
    with OutputLock(output):  # a second run on this output refuses; see journal.OutputLock
        skipped = journal.open(_meta(clf, inputs, opts), opts.resume, opts.overwrite)
        progress = Progress(opts.progress_every, stderr, skipped)
        (consume or _consume)(clf, items, journal, opts, progress)
        recs = _Counted(_final_records(journal, clf, opts))
        header = None if opts.format == "csv" else _header(clf, opts, md, base)
        n = _write(output, recs, clf, opts, header)  # journal.records() refuses to end short
        progress.finish()
        if journal.unseen:
            print(f"kerascls-edge: note: {len(journal.unseen)} result(s) in the checkpoint are "
                  f"of files no longer in the inputs; left out of {output}",
                  file=stderr or sys.stderr)
        if not opts.keep_checkpoint:
            journal.remove()
    return {"images": n, "processed": progress.done, "failed": progress.failed,
            "resumed": skipped - journal.changed - len(journal.unseen),
            "changed": journal.changed, "gone": len(journal.unseen),
            "unreadable": recs.listing, "output": str(output)}

"""Data sources behind one ``--data`` spec string.

``fashion_mnist`` (the default) and ``tfds:NAME[:SPLIT]`` are served from memory as
arrays; ``folder:PATH``, ``csv:FILE`` and ``coco:FILE[:IMAGE_ROOT]`` become lists of file
records (``FileSource``) that ``pipeline.file_dataset`` decodes in tf.data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kerascls.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from kerascls.data.files import (
    SPLIT_DIRS,
    FileSource,
    csv_rows,
    existing,
    read_json,
    require_every_class,
)
from kerascls.data.records import Record, VideoRule, split_labels
from kerascls.errors import UserError

if TYPE_CHECKING:  # annotations only: camtrap_sources loads for md: and camtrapdp: alone
    from kerascls.data.camtrap_sources import DetectionOptions

DEFAULT_DATA = "fashion_mnist"
log = logging.getLogger("kerascls.data")


@dataclass
class ArraySource:
    """A dataset held in memory as uint8 NHWC images and integer labels."""

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Arrays of ``train`` or ``test``; a missing test split is a clear error."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "test" and self.x_test is not None:
            return self.x_test, self.y_test
        raise UserError(f"data source {self.name!r} has no {name!r} split")


FILE_KINDS = ("folder", "csv", "coco", "md", "camtrapdp")


def is_file_spec(spec: str) -> bool:
    """Whether a ``--data`` spec names image files (decoded in tf.data) rather than arrays."""
    return spec.partition(":")[0] in FILE_KINDS


def load_source(spec: str = DEFAULT_DATA, *, crop_boxes: bool = False,
                classes: list[str] | None = None, check: bool = True,
                detection: DetectionOptions | None = None,
                video: VideoRule | None = None) -> ArraySource | FileSource:
    """Resolve a ``--data`` spec to an ``ArraySource`` or a checked ``FileSource``.

    Args:
        spec: ``fashion_mnist``, ``tfds:NAME[:SPLIT]``, ``folder:PATH``, ``csv:FILE`` or
            ``coco:FILE[:IMAGE_ROOT]``.
        crop_boxes: COCO only: one example per annotation box (the animal crop).
        classes: the class list to hold file labels to (default: the labels found).
        check: probe the files (drop broken ones). Off only for tests of the parsers.
        detection: ``md:`` only: a ``camtrap_sources.DetectionOptions`` (default: defaults).
        video: which frames of each video file become examples (default: the device's
            defaults); folder, CSV and Camtrap DP sources take videos
            (``kerascls_edge.video.is_video``).

    Raises:
        ValueError: unknown kind, missing file, no readable image, a class with no image,
            or a label outside the class list.
    """
    kind, _, rest = spec.partition(":")
    if kind == "fashion_mnist":
        x_train, y_train = load_fashion_mnist("train")
        x_test, y_test = load_fashion_mnist("test")
        source = ArraySource("fashion_mnist", list(CLASS_NAMES), x_train, y_train, x_test, y_test)
        return select_classes(source, rest) if rest else source
    if kind == "tfds":
        return _tfds(rest)
    readers = {"folder": _folder, "csv": _csv, "coco": _coco}
    if kind in ("md", "camtrapdp") and rest:
        from kerascls.data import camtrap_sources as cs
        source = (cs.md_source(rest, detection or cs.DetectionOptions()) if kind == "md"
                  else cs.camtrapdp_source(rest, crop_boxes))
        source.class_names = _class_list(source, classes)
        source.video = video or VideoRule()
        return source.check() if check else source
    if kind not in readers or not rest:
        raise UserError(f"unknown data source {spec!r}; use fashion_mnist, tfds:NAME[:SPLIT], "
                         "folder:PATH, csv:FILE, coco:FILE[:IMAGE_ROOT], "
                         "md:RESULTS.json[:LABELS.csv] or camtrapdp:DATAPACKAGE.json[:MEDIA_ROOT]")
    if crop_boxes and kind != "coco":
        raise UserError("crop_boxes needs a coco: or camtrapdp: source (boxes come from its "
                         "annotations)")
    source = readers[kind](rest, crop_boxes) if kind == "coco" else readers[kind](rest)
    source.class_names = _class_list(source, classes)
    source.video = video or VideoRule()
    return source.check() if check else source


def select_classes(source: ArraySource, option: str) -> ArraySource:
    """``classes=0-4`` or ``classes=1,3,7``: keep those classes, relabelled 0..K-1 in order
    (transfer-learning experiments train on one subset and transfer to another)."""
    key, _, value = option.partition("=")
    if key != "classes" or not value:
        raise UserError(f"unknown option {option!r} for {source.name}; use classes=0-4 or "
                         "classes=1,3,7")
    keep = []
    for part in value.split(","):
        lo, _, hi = part.partition("-")
        keep += range(int(lo), int(hi or lo) + 1)
    if not keep or max(keep) >= len(source.class_names) or min(keep) < 0:
        raise UserError(f"classes={value}: indices must lie in 0..{len(source.class_names) - 1}")
    remap = np.full(len(source.class_names), -1)
    remap[keep] = np.arange(len(keep))

    def pick(x, y):
        mask = remap[y] >= 0
        return x[mask], remap[y[mask]]
    train, test = pick(source.x_train, source.y_train), pick(source.x_test, source.y_test)
    return ArraySource(f"{source.name}:{option}", [source.class_names[i] for i in keep],
                       *train, *test)


def _class_list(source: FileSource, classes: list[str] | None) -> list[str]:
    """The given class list (every label must be in it) or the source's own."""
    names = list(classes) if classes else source.class_names
    known = set(names)
    for r in source.records:
        for label in r.labels:
            if label not in known:
                raise UserError(f"{source.name}: label {label!r} of {r.path} is not in the "
                                 f"class list ({', '.join(names)})")
    require_every_class(source.records, names, source.name, "")
    return names


def _folder(path: str) -> FileSource:
    """``PATH/CLASS/*`` or ``PATH/{train,val,test}/CLASS/*``."""
    root = existing(path, "image folder")
    split_dirs = {s: d for s, names in SPLIT_DIRS.items() for n in names
                  if (d := root / n).is_dir()}
    if "train" in split_dirs:
        presplit = {s: _class_folders(d) for s, d in split_dirs.items()}
        names = sorted({lab for recs in presplit.values() for r in recs for lab in r.labels})
        records = [r for recs in presplit.values() for r in recs]
        return FileSource(f"folder:{root}", names, records, presplit)
    records = _class_folders(root)
    return FileSource(f"folder:{root}", sorted({r.labels[0] for r in records}), records)


def _class_folders(root: Path) -> list[Record]:
    """Every non-hidden file under each class subfolder; an empty class is an error."""
    records = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise UserError(f"folder:{root}: class {d.name!r} has no image")
        records += [Record(str(f), (d.name,)) for f in files]
    if not records:
        raise UserError(f"folder:{root}: no class subfolders with images")
    return records


def _csv(path: str) -> FileSource:
    """filepath,label[,location,datetime,seq_id]; paths relative to the CSV; ``a|b`` labels
    (``\\|`` is a literal ``|`` inside a label, as the run's split files write it). A row
    may name a video: its sampled frames are the examples (a ``frame`` column, as split
    files write it, names one frame)."""
    file = existing(path, "CSV file")
    rows = csv_rows(file)
    if not rows or not {"filepath", "label"} <= set(rows[0]):
        raise UserError(f"{file}: needs a header with filepath and label columns")
    records = [Record(str(file.parent / row["filepath"]),
                      tuple(x.strip() for x in split_labels(row["label"]) if x.strip()),
                      row.get("location") or "", row.get("seq_id") or "",
                      row.get("datetime") or "", frame=_frame_cell(file, row))
               for row in rows]
    unlabeled = next((r.path for r in records if not r.labels), None)
    if unlabeled:
        raise UserError(f"{file}: {unlabeled} has no label")
    names = sorted({lab for r in records for lab in r.labels})
    return FileSource(f"csv:{file}", names, records)


def _frame_cell(file: Path, row: dict) -> int:
    """The ``frame`` column (a split file's video frame), -1 when empty or absent."""
    text = (row.get("frame") or "").strip()
    if not text:
        return -1
    if not text.isdigit():
        raise UserError(f"{file}: frame {text!r} of {row.get('filepath')} is not a frame number")
    return int(text)


def _load_coco(file: Path) -> dict:
    """Parse and check a COCO Camera Traps file: errors name the file and the line or entry."""
    coco = read_json(file, "COCO Camera Traps file")
    if not isinstance(coco, dict):
        raise UserError(f"{file}: not a COCO Camera Traps file (the top level is not an object)")
    need = {"categories": ("id", "name"), "images": ("id", "file_name"),
            "annotations": ("image_id", "category_id")}
    for key, fields in need.items():
        entries = coco.get(key, [])
        if not isinstance(entries, list):
            raise UserError(f"{file}: {key!r} is not a list")
        for i, entry in enumerate(entries):
            _check_coco_entry(file, f"{key}[{i}]", entry, fields)
    return coco


def _check_coco_entry(file: Path, where: str, entry: object, fields: tuple) -> None:
    if not isinstance(entry, dict):
        raise UserError(f"{file}: {where} is not an object")
    for f in fields:
        value = entry.get(f)
        kinds = str if f in ("file_name", "name") else (int, str)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise UserError(f"{file}: {where} has no usable {f!r} (got {value!r:.40})")
    box = entry.get("bbox")
    if box is not None and not (isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise UserError(f"{file}: {where}: bbox must be [x, y, width, height]")


def _coco(rest: str, crop_boxes: bool) -> FileSource:
    """COCO Camera Traps JSON: labels from annotations, site/burst from the images."""
    file_part, _, root_part = rest.partition(":")
    file = existing(file_part, "COCO file")
    root = existing(root_part, "image root") if root_part else file.parent
    coco = _load_coco(file)
    cats = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
    images = {im["id"]: im for im in coco.get("images", [])}
    by_image: dict = {}
    for a in coco.get("annotations", []):
        if a["category_id"] not in cats:
            raise UserError(f"{file}: annotation {a.get('id')} has category_id "
                             f"{a['category_id']}, not in categories")
        if a["image_id"] not in images:
            raise UserError(f"{file}: annotation {a.get('id')} names unknown image "
                             f"{a['image_id']}")
        by_image.setdefault(a["image_id"], []).append(a)
    records = [rec for image_id, anns in by_image.items()
               for rec in _coco_records(images[image_id], anns, cats, root, crop_boxes)]
    used = {lab for r in records for lab in r.labels}
    names = [n for _, n in sorted(cats.items()) if n in used]
    skipped = len(images) - len(by_image)
    if skipped:
        log.warning("%s: %d images have no annotation and are left out", file, skipped)
    return FileSource(f"coco:{rest}", names, records)


def _coco_records(image: dict, anns: list[dict], cats: dict, root: Path,
                  crop_boxes: bool) -> list[Record]:
    """One record per image (its distinct labels), or one per box when cropping."""
    common = dict(path=str(root / image["file_name"]), location=str(image.get("location", "")),
                  seq_id=str(image.get("seq_id", "")), datetime=str(image.get("datetime", "")))
    if crop_boxes:
        boxed = [Record(labels=(cats[a["category_id"]],), bbox=tuple(a["bbox"]), **common)
                 for a in anns if a.get("bbox")]
        rest = [a for a in anns if not a.get("bbox")]
        return boxed + ([Record(labels=_distinct(rest, cats), **common)] if rest else [])
    return [Record(labels=_distinct(anns, cats), **common)]


def _distinct(anns: list[dict], cats: dict) -> tuple[str, ...]:
    return tuple(dict.fromkeys(cats[a["category_id"]] for a in anns))


def _tfds(rest: str) -> ArraySource:
    """A TensorFlow Datasets dataset in memory (fixed-size images, e.g. MNIST, CIFAR)."""
    name, _, split = rest.partition(":")
    try:
        import tensorflow_datasets as tfds
        builder = tfds.builder(name)
        builder.download_and_prepare()
        splits = list(builder.info.splits)
        test = "test" if "test" in splits and (split or "train") != "test" else None
        arrays = [tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1, as_supervised=True))
                  for s in [split or "train"] + ([test] if test else [])]
        names = list(builder.info.features["label"].names)
    except Exception as e:  # tfds raises many kinds: unknown name, no network, ragged shapes
        raise UserError(f"tfds:{rest}: cannot load ({str(e).splitlines()[0]})") from e
    (x, y), (xt, yt) = arrays[0], (arrays[1] if test else (None, None))
    return ArraySource(f"tfds:{name}", names, x.astype(np.uint8), y.astype(np.int64),
                       None if xt is None else xt.astype(np.uint8),
                       None if yt is None else yt.astype(np.int64))


def holdout(x: np.ndarray, y: np.ndarray, fraction: float, seed: int
            ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Seeded, class-stratified split of arrays into (train, validation) parts."""
    if not 0 <= fraction < 1:
        raise UserError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        val[rng.choice(idx, int(round(len(idx) * fraction)), replace=False)] = True
    return (x[~val], y[~val]), (x[val], y[val])

"""Reading a kerascls bundle (docs/bundle.md) or a bare .tflite into one `ModelSpec`.

The spec is the single place that decides how pixels are prepared and how outputs are read, so
the decoder and the classifier never look at model.json themselves.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import EdgeError
from .userfiles import read_text, sha256_file

RESIZE_MODES = ("stretch", "crop", "pad")
ACTIVATIONS = ("softmax", "sigmoid", "none")
#: per-video rules (``input.video.rule``; video.video_scores applies them); the first is the default
VIDEO_RULES = ("mean", "max")


@dataclass
class ModelSpec:
    """What the runtime needs to know about a model; filled from model.json or inferred.

    Sizes and dtype are later checked against (and, when absent, taken from) the interpreter.
    """

    model_path: Path
    labels: list[str]
    name: str = "classifier"
    height: Optional[int] = None
    width: Optional[int] = None
    channels: int = 3
    dtype: Optional[str] = None
    value_range: tuple[float, float] = (0.0, 255.0)
    resize: str = "stretch"
    interpolation: str = "bilinear"
    activation: str = "softmax"
    task: str = "multiclass"
    thresholds: dict = field(default_factory=lambda: {"default": 0.5})
    empty_classes: list[str] = field(default_factory=list)
    crop_padding: float = 0.0  # model.json crop: how --detections boxes become crops
    crop_square: bool = False
    video: Optional[dict] = None  # model.json input.video: how videos are sampled (None: older)
    from_bundle: bool = False


def read_labels(path: Union[str, os.PathLike]) -> list[str]:
    """Read a labels file: line i = output index i (trailing blank lines dropped).

    Through :mod:`userfiles`: a regular file of at most 16 MB (`/dev/zero` or a FIFO given
    as --labels is one error line, not an endless read).
    """

    lines = read_text(path, "labels").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def check_labels(labels: Sequence[str], source: object, where: str = "line {n}") -> list[str]:
    """Refuse class names a result could not tell apart, in one line naming the place.

    An empty name becomes "" in a CSV and a nameless folder when sorting; two lines with the
    same name (also differing only in case: allow-lists match case-insensitively and SD cards
    sort into case-insensitive folders) make two outputs one class. Positions in `where`
    count from 1 for lines, from 0 for a JSON list.
    """
    seen: dict[str, int] = {}
    base = 1 if "line" in where else 0
    for i, name in enumerate(labels):
        here = where.format(n=i + base)
        if not name.strip():
            raise EdgeError(f"{source}: {here} is an empty class name (output {i} needs a name)")
        key = name.strip().casefold()
        if key in seen:
            raise EdgeError(f"{source}: {here} {name.strip()!r} repeats "
                            f"{where.format(n=seen[key] + base)}: give each class its own name")
        seen[key] = i
    return list(labels)


def _resolve_labels(labels: Union[None, str, os.PathLike, Sequence[str]], near: Path) -> list[str]:
    """Labels from a list, a file, or a labels file beside the model (labels.txt, *labels*.txt),
    checked: no empty or repeated names."""
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        return check_labels([str(x) for x in labels], "labels", "label {n}")
    if labels is not None:
        return check_labels(read_labels(labels), f"labels file {labels}")
    candidates = [near / "labels.txt"] + sorted(near.glob("*labels*.txt"))
    for c in candidates:
        if c.is_file():
            return check_labels(read_labels(c), f"labels file {c}")
    return []


def check_files(folder: Path, meta: dict, source: object) -> None:
    """Refuse a bundle whose files differ from the sha256 model.json records for them.

    `kerascls export` records each file it writes (`files`: name -> {"sha256", "bytes"}); a
    copy damaged on its way to the device, or one file swapped from another bundle, would
    otherwise run with wrong labels or weights. Bundles without `files` (older exports, hand
    made) are not checked.
    """

    files = Fields(source, meta).obj("files")
    for name in files.data:
        entry = files.obj(name)
        want = entry.str_("sha256")
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            files.fail(files._name(name), "expected a file name inside the bundle")
        path = folder / name
        if sha256_file(path, "bundle file") != want.lower():
            raise EdgeError(f"{path}: not the file model.json records (its sha256 differs: a "
                            "damaged copy, or replaced?); copy the bundle again, or remove "
                            f"files.{name} from model.json if you changed it on purpose")


def _load_json(path: Path) -> dict:
    """Parse model.json, turning every failure into an EdgeError."""
    try:
            data = json.loads(read_text(path, "model.json"))
    except EdgeError:
        raise
    except (OSError, ValueError, RecursionError) as e:
        raise EdgeError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise EdgeError(f"{path}: expected a JSON object, got {_kind(data)}")
    return data


# -- a small typed reader: one line naming the file and the field for any wrong value -----------

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos")
TASKS = ("multiclass", "binary", "multilabel")
DTYPES = ("uint8", "int8", "float32", "float16")
_MISSING = object()


def _kind(value: object) -> str:
    """How a JSON value is named in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"


def is_number(value: object) -> bool:
    """A finite JSON number (booleans are not numbers here, though Python says they are ints)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class Fields:
    """Typed access to one JSON object; every error names the file and the dotted field."""

    def __init__(self, source: object, data: object, where: str = "") -> None:
        self.source, self.where = source, where
        if not isinstance(data, dict):
            self.fail(where or "top level", f"expected an object, got {_kind(data)}")
        self.data = data

    def fail(self, key: str, why: str) -> None:
        raise EdgeError(f"{self.source}: {key}: {why}")

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, default: object = _MISSING) -> object:
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                self.fail(self._name(key), "missing")
            return default
        return value

    def str_(self, key: str, default: object = _MISSING, choices: Sequence[str] = ()) -> object:
        value = self.get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            self.fail(self._name(key), f"expected a string, got {_kind(value)}")
        if choices and value not in choices:
            self.fail(self._name(key), f"{value!r} is not one of {', '.join(choices)}")
        return value

    def int_(self, key: str, default: object = _MISSING, lo: int = 1, hi: int = 1 << 20
             ) -> object:
        value = self.get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            self.fail(self._name(key), f"expected an integer in [{lo}, {hi}], got {_kind(value)}")
        return value

    def number(self, key: str, default: object = _MISSING) -> object:
        value = self.get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not is_number(value):
            self.fail(self._name(key), f"expected a finite number, got {_kind(value)}")
        return float(value)

    def str_list(self, key: str, default: object = _MISSING) -> object:
        value = self.get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(self._name(key), f"expected a list of strings, got {_kind(value)}")
        return list(value)

    def obj(self, key: str) -> "Fields":
        return Fields(self.source, self.get(key, {}), self._name(key))


def _value_range(inp: Fields) -> tuple[float, float]:
    value = inp.get("value_range", [0, 255])
    if not (isinstance(value, list) and len(value) == 2 and all(is_number(v) for v in value)
            and value[0] < value[1]):
        inp.fail(inp._name("value_range"), f"expected [low, high] with low < high, "
                                           f"got {_kind(value)}")
    return float(value[0]), float(value[1])


def _channels(inp: Fields) -> int:
    value = inp.int_("channels", 3, lo=1, hi=4)
    if value not in (1, 3):
        inp.fail(inp._name("channels"), f"must be 1 or 3, got {value}")
    return value


def _crop_square(crop: Fields) -> bool:
    value = crop.get("square", False)
    if not isinstance(value, bool):
        crop.fail(crop._name("square"), f"expected true or false, got {_kind(value)}")
    return value


def _video(inp: Fields) -> Optional[dict]:
    """``input.video`` (the sampling rule's parameters, docs/bundle.md), checked; None if absent."""
    if inp.get("video", None) is None:
        return None
    v = inp.obj("video")
    out: dict = {}
    every = v.number("frame_every", None)
    if every is not None:
        if not 1e-3 <= every <= 1e6:
            v.fail(v._name("frame_every"), f"expected seconds in [0.001, 1000000], got {every}")
        out["frame_every"] = every
    most = v.int_("max_frames", None)
    if most is not None:
        out["max_frames"] = most
    rule = v.str_("rule", None, VIDEO_RULES)
    if rule is not None:
        out["rule"] = rule
    return out


def _thresholds(meta: Fields) -> dict:
    th = meta.obj("thresholds")
    for k, v in th.data.items():
        if not (is_number(v) and 0 <= v <= 1):
            th.fail(th._name(str(k)), f"expected a number in [0, 1], got {_kind(v)}")
    return dict(th.data) or {"default": 0.5}


def _spec_from_json(model_path: Path, meta_dict: dict, labels: list[str],
                    source: object = "model.json") -> ModelSpec:
    """Map model.json onto a ModelSpec, checking the type and range of every field it reads."""
    meta = Fields(source, meta_dict)
    inp, out = meta.obj("input"), meta.obj("output")
    name = meta.str_("name", None) or meta.str_("architecture", None) or model_path.parent.name
    return ModelSpec(
        model_path=model_path,
        labels=labels or meta.str_list("class_names", []),
        name=name,
        height=inp.int_("height", None),
        width=inp.int_("width", None),
        channels=_channels(inp),
        dtype=inp.str_("dtype", None, DTYPES),
        value_range=_value_range(inp),
        resize=inp.str_("resize", "stretch", RESIZE_MODES),
        interpolation=inp.str_("interpolation", "bilinear", INTERPOLATIONS),
        activation=out.str_("activation", "softmax", ACTIVATIONS),
        task=meta.str_("task", "multiclass", TASKS),
        thresholds=_thresholds(meta),
        empty_classes=meta.str_list("empty_classes", []),
        crop_padding=meta.obj("crop").number("padding", 0.0),
        crop_square=_crop_square(meta.obj("crop")),
        video=_video(inp),
        from_bundle=True,
    )


def spec_from_json(model_path: Path, meta: dict, labels: Sequence[str] = ()) -> ModelSpec:
    """A ModelSpec from a model.json dict (kerascls builds one for a Keras run's contract)."""
    return _spec_from_json(Path(model_path), meta, list(labels))


def load_spec(model_path: Union[str, os.PathLike],
              labels: Union[None, str, os.PathLike, Sequence[str]] = None) -> ModelSpec:
    """Resolve a bundle directory or a bare .tflite into a ModelSpec.

    A bare .tflite (no model.json beside it) gets the conservative defaults a third-party
    classifier usually needs: stretch resize, 3 channels, outputs used as they are.
    """
    path = Path(model_path)
    if path.is_dir():
        tflite = path / "model.tflite"
        if not tflite.is_file():
            found = sorted(p for p in path.glob("*.tflite") if p.is_file())
            if len(found) != 1:
                raise EdgeError(f"{path}: no model.tflite in the bundle directory")
            tflite = found[0]
    elif path.is_file():
        tflite = path
    else:
        raise EdgeError(f"model not found: {path}")
    meta_path = tflite.parent / "model.json"
    meta = _load_json(meta_path) if meta_path.is_file() else None
    if meta is not None:
        check_files(tflite.parent, meta, meta_path)
    names = _resolve_labels(labels, tflite.parent)
    if meta is not None:
        spec = _spec_from_json(tflite, meta, names, meta_path)
        if not names:  # labels from model.json's class_names
            check_labels(spec.labels, meta_path, "class_names[{n}]")
        return spec
    # Outputs of a bare model are used as they are (no softmax): we cannot know it has logits.
    return ModelSpec(model_path=tflite, labels=names, name=tflite.stem)

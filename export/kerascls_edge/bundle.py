"""Reading a kerascls bundle (docs/bundle.md) or a bare .tflite into one `ModelSpec`.

The spec is the single place that decides how pixels are prepared and how outputs are read, so
the decoder and the classifier never look at model.json themselves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

RESIZE_MODES = ("stretch", "crop", "pad")
ACTIVATIONS = ("softmax", "sigmoid", "none")


class EdgeError(ValueError):
    """A user-facing error: the CLI prints its message on one line, without a traceback."""


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
    from_bundle: bool = False


def read_labels(path: Union[str, os.PathLike]) -> list[str]:
    """Read a labels file: line i = output index i (trailing blank lines dropped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"cannot read labels file {path}: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def _resolve_labels(labels: Union[None, str, os.PathLike, Sequence[str]], near: Path) -> list[str]:
    """Labels from a list, a file, or a labels file beside the model (labels.txt, *labels*.txt)."""
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        return [str(x) for x in labels]
    if labels is not None:
        return read_labels(labels)
    candidates = [near / "labels.txt"] + sorted(near.glob("*labels*.txt"))
    for c in candidates:
        if c.is_file():
            return read_labels(c)
    return []


def _load_json(path: Path) -> dict:
    """Parse model.json, turning every failure into an EdgeError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EdgeError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise EdgeError(f"{path} is not a JSON object")
    return data


def _spec_from_json(model_path: Path, meta: dict, labels: list[str]) -> ModelSpec:
    """Map model.json fields onto a ModelSpec, validating the enumerations the runtime obeys."""
    inp = meta.get("input") or {}
    out = meta.get("output") or {}
    spec = ModelSpec(
        model_path=model_path,
        labels=labels or list(meta.get("class_names") or []),
        name=str(meta.get("name") or meta.get("architecture") or model_path.parent.name),
        height=inp.get("height"),
        width=inp.get("width"),
        channels=int(inp.get("channels", 3)),
        dtype=inp.get("dtype"),
        value_range=tuple(inp.get("value_range", (0, 255))),
        resize=str(inp.get("resize", "stretch")),
        interpolation=str(inp.get("interpolation", "bilinear")),
        activation=str(out.get("activation", "softmax")),
        task=str(meta.get("task", "multiclass")),
        thresholds=dict(meta.get("thresholds") or {"default": 0.5}),
        empty_classes=list(meta.get("empty_classes") or []),
        from_bundle=True,
    )
    if spec.resize not in RESIZE_MODES:
        raise EdgeError(f"model.json: unknown resize {spec.resize!r} (expected {RESIZE_MODES})")
    if spec.activation not in ACTIVATIONS:
        raise EdgeError(f"model.json: unknown output activation {spec.activation!r}")
    if spec.channels not in (1, 3):
        raise EdgeError(f"model.json: channels must be 1 or 3, got {spec.channels}")
    return spec


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
            found = sorted(path.glob("*.tflite"))
            if len(found) != 1:
                raise EdgeError(f"{path}: no model.tflite in the bundle directory")
            tflite = found[0]
    elif path.is_file():
        tflite = path
    else:
        raise EdgeError(f"model not found: {path}")
    meta_path = tflite.parent / "model.json"
    names = _resolve_labels(labels, tflite.parent)
    if meta_path.is_file():
        return _spec_from_json(tflite, _load_json(meta_path), names)
    # Outputs of a bare model are used as they are (no softmax): we cannot know it has logits.
    return ModelSpec(model_path=tflite, labels=names, name=tflite.stem)

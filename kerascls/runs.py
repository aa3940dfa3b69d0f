"""A run directory as training leaves it: its model, its config, its images and splits.

``kerascls train`` writes ``RUN/model.keras``, ``RUN/config.json`` (``kerascls.config``) and
``RUN/splits/*.csv``; evaluation, export and the tfmot bridge read them back through this
module, so the images they score or calibrate on are decoded exactly as in training and the
held-out ones are the split training set aside. It sits below training, evaluation and
tflite and imports only layers and models (to load), data and the config.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerascls.config import TrainConfig
from kerascls.errors import UserError


@dataclass
class LoadedRun:
    """A Keras model with what the exporter needs to know about its training run."""

    model: object
    config: TrainConfig | None
    path: Path


def load_run(model_path: str | Path) -> LoadedRun:
    """Load ``RUN_DIR`` (model.keras + config.json) or a bare ``.keras`` file."""
    path = Path(model_path)
    file = path / "model.keras" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no model at {file} (give a run directory or a .keras file)")
    model = float32_model(load_model(file))
    cfg_dir = file.parent
    cfg = TrainConfig.load(cfg_dir) if (cfg_dir / "config.json").exists() else None
    return LoadedRun(model, cfg, file)


def float32_model(model):
    """``model`` with every layer computing in float32 (the same weights).

    A run trained with ``--mixed_precision`` saves its layers' bfloat16/float16 compute
    policy; TFLite has no kernels for those casts, and evaluate should score what export
    ships. A model already all float32 is returned as it is.
    """
    import keras

    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)  # the clone is for inference and saving
    float32 = _float32_policies(config)
    if float32 == config:
        return model
    clone = keras.saving.deserialize_keras_object(float32)
    clone.set_weights(model.get_weights())
    return clone


def _float32_policies(node):
    """A serialized model with each mixed dtype policy replaced by float32."""
    if isinstance(node, list):
        return [_float32_policies(v) for v in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") == "DTypePolicy":
        return {**node, "config": {**node["config"], "name": "float32"}}
    return {k: _float32_policies(v) for k, v in node.items()}


def load_model(path: str | Path, compile: bool = False):
    """A ``.keras`` file or run directory's ``model.keras``, with one-line errors.

    Keras says "File not found" both for a missing file and for one that is not a .keras
    archive, and a deep traceback for a class it cannot find; these say which.
    """
    import keras

    import kerascls.layers  # noqa: F401  (registers the custom layers)
    import kerascls.models  # noqa: F401  (and the families' own)
    path = Path(path)
    file = path / "model.keras" if path.is_dir() else path
    _check_keras_file(file)
    try:
        return keras.saving.load_model(file, compile=compile)
    except (TypeError, ValueError, KeyError, OSError) as e:
        raise UserError(f"{file}: cannot load the model: {_load_error(e)}") from e


def _check_keras_file(file: Path) -> None:
    """Tell a missing file from one that is not a .keras archive."""
    if not file.exists():
        raise FileNotFoundError(f"model not found: {file}")
    if file.is_dir() or (file.suffix == ".keras" and not zipfile.is_zipfile(file)):
        raise UserError(f"{file}: not a .keras model (not a zip archive: truncated, or "
                        "another kind of file)")


def _load_error(error: BaseException) -> str:
    """The one line that says why Keras could not load: an unknown class if there is one."""
    seen = error
    while seen is not None:
        found = re.search(r"Could not locate (?:class|function) '([^']+)'", str(seen))
        if found:
            return (f"it uses {found.group(1)!r}, which neither Keras nor kerascls defines "
                    "(saved by other code or a newer kerascls?)")
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def sample_images(data_spec: str, split: str, count: int, shape, seed: int = 0,
                  run_dir: Path | None = None, multi_hot: bool = False) -> tuple:
    """``count`` seeded images (resized to ``shape``, float 0–255) and labels of a split.

    For image-file sources the split is the run's own list (``RUN/splits/SPLIT.csv``),
    decoded and resized exactly as in training; ``multi_hot`` gives their K-hot labels
    (multi-label runs) instead of the first label's index.
    """
    from kerascls.data.pipeline import array_dataset
    from kerascls.data.runs import sample_file_images
    from kerascls.data.sources import is_file_spec, load_source
    if is_file_spec(data_spec):
        return sample_file_images(data_spec, split, count, shape, seed, run_dir, multi_hot)
    x, y = load_source(data_spec).split(split)
    idx = np.random.default_rng(seed).permutation(len(y))[:count]
    ds = array_dataset(x[idx], y[idx], 256, training=False, image_size=tuple(shape[:2]),
                       channels=shape[2])
    xs, ys = zip(*[(np.asarray(a, np.float32), np.asarray(b)) for a, b in ds])
    return np.concatenate(xs), np.concatenate(ys)


def heldout_split(data: str, run_dir: Path | None = None) -> str:
    """``test`` where the data has one (a file run's test list may be empty: then val)."""
    from kerascls.data.sources import is_file_spec, load_source
    if is_file_spec(data):
        test = Path(run_dir or ".") / "splits" / "test.csv"
        empty = test.exists() and len(test.read_text().splitlines()) < 2
        return "val" if empty else "test"
    return "test" if load_source(data).x_test is not None else "train"

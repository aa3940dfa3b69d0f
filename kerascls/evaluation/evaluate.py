"""``kerascls evaluate``: accuracy and loss of a Keras run or an exported TFLite model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerascls.training.train import classification_metrics


def _is_tflite(path: Path) -> bool:
    return path.suffix == ".tflite" or (path.is_dir() and (path / "model.tflite").exists()
                                        and not (path / "model.keras").exists())


def evaluate(model_path: str | Path, data: str | None = None, split: str = "test",
             batch_size: int = 512) -> dict:
    """Evaluate a run directory, .keras file, bundle directory or .tflite file.

    The data spec defaults to the one the run trained on (config.json), or for a bundle,
    the training run beside it.
    """
    from kerascls.tflite.export import load_run, sample_images
    path = Path(model_path)
    if _is_tflite(path):
        return _evaluate_tflite(path, data, split)
    run = load_run(path)
    data = data or (run.config.data if run.config else None)
    if not data:
        raise ValueError("no data to evaluate on: pass --data")
    shape = tuple(int(d) for d in run.model.input_shape[1:])
    x, y = sample_images(data, split, 10**9, shape, run_dir=run.path.parent)
    probs = run.model.predict(x, batch_size=batch_size, verbose=0)
    return {"model": str(path), "data": data, "split": split,
            **classification_metrics(probs, y)}


def _evaluate_tflite(path: Path, data: str | None, split: str) -> dict:
    from kerascls.tflite import audit as A
    from kerascls.tflite.export import sample_images
    file = path / "model.tflite" if path.is_dir() else path
    meta_file = file.parent / "model.json"
    if not data and meta_file.exists() and (file.parent.parent / "config.json").exists():
        data = json.loads((file.parent.parent / "config.json").read_text())["data"]
    if not data:
        raise ValueError("no data to evaluate on: pass --data")
    it = A.interpreter(str(file))
    shape = tuple(int(d) for d in it.get_input_details()[0]["shape"][1:])
    x, y = sample_images(data, split, 10**9, shape, run_dir=file.parent.parent)
    probs = A.run_batch(it, x)
    return {"model": str(file), "data": data, "split": split,
            **classification_metrics(np.asarray(probs), y)}

"""A trained Keras run behind ``kerascls_edge``'s classifier interface.

``kerascls predict`` (one process) and ``kerascls.ray_predict`` (each Ray actor) both
classify a run directory or ``.keras`` file through :class:`KerasClassifier`; it lives
below both so the Ray engine does not import the command that dispatches to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from kerascls_edge.bundle import EdgeError


def is_keras_model(path: str | Path) -> bool:
    """A run directory (model.keras inside) or a .keras file; else a bundle / .tflite."""
    p = Path(path)
    return p.suffix == ".keras" or (p.is_dir() and (p / "model.keras").is_file())


class KerasClassifier:
    """The `kerascls_edge.Classifier` interface over a trained Keras run.

    The spec is the run's model.json contract (what `export` would write), so decoding,
    crops, empty classes and labels match the bundle's; `predict_array` takes raw 0–255
    pixels and returns probabilities (a logits head gets its activation, a one-unit sigmoid
    head both columns, as the edge runtime reads it).
    """

    def __init__(self, model_path: str | Path, batch_size: int = 64,
                 threads: Optional[int] = None) -> None:
        from kerascls.data.decode import preprocess
        from kerascls.data.runs import task_of
        from kerascls.tflite.export import contract, load_run
        from kerascls.training.heads import probability_model
        from kerascls_edge.bundle import spec_from_json
        try:
            run = load_run(model_path)
        except FileNotFoundError as e:
            raise EdgeError(str(e)) from None
        meta = contract(run, "float32")
        self.spec = spec_from_json(run.path, meta, meta["class_names"])
        self.spec.dtype = "float32"
        self.labels = list(self.spec.labels)
        self.model = probability_model(run.model, task_of(run.config) if run.config else None)
        self.batch_size = int(batch_size)
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        self.preprocess = preprocess((self.spec.height, self.spec.width), self.spec.channels,
                                     self.spec.resize)
        units = int(self.model.output_shape[-1])
        if units != len(self.labels) and not (units == 1 and len(self.labels) == 2):
            raise EdgeError(f"{len(self.labels)} labels but the model has {units} outputs")

    def predict_array(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for raw NHWC pixels at the model's size."""
        x = np.asarray(batch, np.float32)
        x = x[None] if x.ndim == 3 else x
        outs = [np.asarray(self.model.predict_on_batch(x[i:i + self.batch_size]), np.float32)
                for i in range(0, len(x), self.batch_size)]
        y = np.concatenate(outs).reshape(len(x), -1)
        if y.shape[1] == 1 and len(self.labels) == 2:
            y = np.concatenate([1.0 - y, y], axis=1)
        return y

    def decode(self, src, regions=None, strict: bool = False):
        """The device decoder with the run's preprocessing (as `Classifier.decode`)."""
        from kerascls_edge.decode import decode
        return decode(src, self.preprocess, regions, strict)

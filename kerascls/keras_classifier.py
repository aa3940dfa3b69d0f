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


def device_names(strategy) -> list[str]:
    """The strategy's replica devices as ``/cpu:0``, ``/gpu:1`` (what --devices names)."""
    import tensorflow as tf
    try:
        names = list(strategy.extended.worker_devices)
    except (RuntimeError, NotImplementedError):  # the default strategy: TF's default device
        names = ["/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"]
    specs = (tf.DeviceSpec.from_string(d) for d in names)
    return [f"/{d.device_type.lower()}:{d.device_index or 0}" for d in specs]


class KerasClassifier:
    """The `kerascls_edge.Classifier` interface over a trained Keras run.

    The spec is the run's model.json contract (what `export` would write), so decoding,
    crops, empty classes and labels match the bundle's; `predict_array` takes raw 0–255
    pixels and returns probabilities (a logits head gets its activation, a one-unit sigmoid
    head both columns, as the edge runtime reads it). ``devices`` is ``--devices`` (empty:
    every visible GPU mirrored when there are 2+, else the default device; ``gpu:0,1``;
    ``cpu:N`` logical CPUs, only before TensorFlow has run an op): several replicas split
    each batch between them.
    """

    def __init__(self, model_path: str | Path, batch_size: int = 64,
                 threads: Optional[int] = None, devices: str = "") -> None:
        from kerascls.training.distribute import make_strategy
        # a TF_CONFIG left from training is no cluster for one-process inference
        self.strategy = make_strategy(devices, multi_worker=False)
        self.devices = device_names(self.strategy)
        with self.strategy.scope():  # mirrored variables: the model on every replica
            self._load(model_path)
        self.batch_size = int(batch_size)
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        self._replica_step = None

    def _load(self, model_path: str | Path) -> None:
        """The run's model (with its probabilities), contract spec and preprocessing."""
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
        self.preprocess = preprocess((self.spec.height, self.spec.width), self.spec.channels,
                                     self.spec.resize)
        units = int(self.model.output_shape[-1])
        if units != len(self.labels) and not (units == 1 and len(self.labels) == 2):
            raise EdgeError(f"{len(self.labels)} labels but the model has {units} outputs")

    def predict_array(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for raw NHWC pixels at the model's size."""
        x = np.asarray(batch, np.float32)
        x = x[None] if x.ndim == 3 else x
        call = (self._predict_replicas if self.strategy.num_replicas_in_sync > 1
                else self.model.predict_on_batch)  # one device: Keras' own fast path
        outs = [np.asarray(call(x[i:i + self.batch_size]), np.float32)
                for i in range(0, len(x), self.batch_size)]
        y = np.concatenate(outs).reshape(len(x), -1)
        if y.shape[1] == 1 and len(self.labels) == 2:
            y = np.concatenate([1.0 - y, y], axis=1)
        return y

    def _predict_replicas(self, x: np.ndarray) -> np.ndarray:
        """One batch split over the replicas: contiguous slices, outputs in replica order.

        Not `predict_on_batch`: Keras' TF trainer runs it through `strategy.run` with the
        whole batch on every replica (N× the rows); not `model.predict`: it builds a
        distributed dataset per call (~300 ms on 2 logical CPUs against ~4 ms here). A
        replica given no rows fails (oneDNN's MatMul on an empty batch), so a batch is
        padded with copies of its last row to a multiple of the replica count; the copies'
        rows are dropped.
        """
        import tensorflow as tf
        n, k = len(x), self.strategy.num_replicas_in_sync
        parts = np.split(np.concatenate([x, np.repeat(x[-1:], -n % k, axis=0)]), k)
        values = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group]))
        if self._replica_step is None:
            def replica(t):
                return self.model(t, training=False)
            self._replica_step = tf.function(
                lambda v: self.strategy.run(replica, args=(v,)), reduce_retracing=True)
        outs = self.strategy.experimental_local_results(self._replica_step(values))
        return np.concatenate([np.asarray(o) for o in outs])[:n]

    def decode(self, src, regions=None, strict: bool = False):
        """The device decoder with the run's preprocessing (as `Classifier.decode`)."""
        from kerascls_edge.decode import decode
        return decode(src, self.preprocess, regions, strict)

"""The head's output and everything that reads it: loss, metrics and probabilities agree.

``--model_arg logits=true`` builds a linear head (no softmax/sigmoid). Training then uses
``from_logits`` losses and metrics that threshold logits at 0, and every consumer of the
outputs — the run's test metrics, ``evaluate``, the export — turns them into
probabilities with ``probability_model``, so no number is ever read on the wrong scale.
"""

from __future__ import annotations

import keras

from kerascls.errors import UserError

TASKS_NEEDING = {"multiclass": 2, "binary": 2}  # least number of classes a task trains on


def task_of(cfg) -> str:
    """The head's task (model_args ``task``)."""
    return (cfg.model_args or {}).get("task", "multiclass")


def uses_logits(cfg) -> bool:
    """Whether the run's head outputs logits (``--model_arg logits=true``)."""
    value = (cfg.model_args or {}).get("logits", False)
    return value.lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


def check_classes(cfg) -> None:
    """Refuse a task the data's classes cannot train, before anything is written.

    One class trains a multiclass softmax to "accuracy 1.0" and teaches it nothing.
    """
    task, names = task_of(cfg), list(cfg.class_names)
    least = TASKS_NEEDING.get(task, 1)
    if len(names) < least:
        found = f" ({', '.join(map(str, names))})" if names else ""
        raise UserError(f"task={task} needs at least {least} classes; {cfg.data} has "
                        f"{len(names)}{found}")
    if task == "binary" and len(names) != 2:
        raise UserError(f"task=binary needs exactly 2 classes, {cfg.data} has {len(names)}")


def loss(cfg, num_classes: int, one_hot: bool) -> keras.losses.Loss:
    """Cross-entropy matching the head (probabilities or logits) and the labels."""
    smoothing, logits = cfg.label_smoothing, uses_logits(cfg)
    if task_of(cfg) in ("binary", "multilabel"):
        return keras.losses.BinaryCrossentropy(from_logits=logits, label_smoothing=smoothing)
    if one_hot:  # MixUp/CutMix: mixed float labels
        return keras.losses.CategoricalCrossentropy(from_logits=logits,
                                                    label_smoothing=smoothing)
    if smoothing:
        return SmoothedSparseCE(num_classes, smoothing, from_logits=logits)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)


def metrics(cfg, one_hot: bool) -> list[keras.metrics.Metric]:
    """Accuracy as the head's outputs need it (named ``accuracy`` in every case).

    Argmax is the same for logits and probabilities; a sigmoid decision at 0.5 is a
    logit decision at 0. Multiclass over more than 5 classes adds ``top5``.
    """
    if task_of(cfg) in ("binary", "multilabel"):
        return [keras.metrics.BinaryAccuracy("accuracy",
                                             threshold=0.0 if uses_logits(cfg) else 0.5)]
    top5 = len(getattr(cfg, "class_names", None) or []) > 5  # ``top5``: a --monitor choice
    if one_hot:
        return [keras.metrics.CategoricalAccuracy("accuracy"),
                *([keras.metrics.TopKCategoricalAccuracy(5, "top5")] if top5 else [])]
    return [keras.metrics.SparseCategoricalAccuracy("accuracy"),
            *([keras.metrics.SparseTopKCategoricalAccuracy(5, "top5")] if top5 else [])]


def metric_names(cfg, validation: bool) -> list[str]:
    """The history.csv columns a run of ``cfg`` will have (the choices of ``--monitor``)."""
    names = ["loss", *(m.name for m in metrics(cfg, one_hot=False))]
    return [*names, "learning_rate", *(f"val_{n}" for n in names if validation)]


@keras.saving.register_keras_serializable(package="kerascls")
class SmoothedSparseCE(keras.losses.Loss):
    """Sparse cross-entropy with label smoothing (Keras only offers it for one-hot labels)."""

    def __init__(self, num_classes: int, smoothing: float, from_logits: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.smoothing, self.from_logits = num_classes, smoothing, from_logits

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "smoothing": self.smoothing, "from_logits": self.from_logits}

    def call(self, y_true, y_pred):
        onehot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"),
                                   self.num_classes)
        return keras.losses.categorical_crossentropy(onehot, y_pred,
                                                     from_logits=self.from_logits,
                                                     label_smoothing=self.smoothing)


def outputs_logits(model: keras.Model) -> bool:
    """Whether a model built by ``create_model`` ends in a linear ``predictions`` layer."""
    layer = model.layers[-1] if model.layers else None
    if layer is None or layer.name != "predictions":
        return False
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "linear"


def output_activation(task: str, units: int) -> str:
    """The activation a logits head's outputs need: softmax over K, else sigmoid."""
    return "softmax" if task == "multiclass" and units > 1 else "sigmoid"


def probability_model(model: keras.Model, task: str | None = None) -> keras.Model:
    """``model`` itself, or for a logits head the same model with its activation applied.

    ``task`` defaults to multiclass for K > 1 outputs and binary for one.
    """
    if not outputs_logits(model):
        return model
    units = int(model.output_shape[-1])
    task = task or ("multiclass" if units > 1 else "binary")
    out = keras.layers.Activation(output_activation(task, units), dtype="float32",
                                  name="probabilities")(model.outputs[0])
    return keras.Model(model.inputs, out, name=model.name)

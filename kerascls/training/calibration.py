"""Temperature scaling: one scalar T fitted on the validation logits, folded into the head.

Softmax(z / T) (or sigmoid(z / T)) keeps every argmax and only changes how sure the model
says it is. Dividing the ``head`` Dense kernel and bias by T gives exactly those logits, so
the saved Keras model, its int8 export and the device runtime all output calibrated
probabilities with no runtime change (Guo et al. 2017, "On Calibration of Modern Neural
Networks").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np

from kerascls.evaluation import metrics as M

LOG_T_RANGE = (-3.0, 3.0)  # T in [0.05, 20]: beyond it the fit is saying something is wrong


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """The head's activation applied in numpy (softmax over K, else sigmoid)."""
    multiclass = task == "multiclass" and logits.shape[-1] > 1
    return softmax(logits) if multiclass else sigmoid(logits)


def nll(logits: np.ndarray, y: np.ndarray, task: str) -> float:
    """Mean negative log-likelihood of the labels (per image; per label for sigmoids)."""
    logits = np.asarray(logits, np.float64)
    if task == "multiclass" and logits.shape[-1] > 1:
        z = logits - logits.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return float(-np.mean(logp[np.arange(len(y)), np.ravel(y).astype(int)]))
    z, t = logits.ravel(), np.ravel(np.asarray(y, np.float64))
    return float(np.mean(np.logaddexp(0.0, z) - t * z))  # stable BCE with logits


def quality(logits: np.ndarray, y: np.ndarray, task: str) -> dict:
    """ECE (the evaluation code's ``calibration``) and NLL of logits against labels."""
    p = probabilities(logits, task)
    if task == "multiclass" and p.shape[-1] > 1:
        ece = M.calibration(p, y)["ece"]
    else:  # every sigmoid output a binary decision, as the multilabel report rates them
        ece = M.calibration(M.two_class(p.ravel()[:, None]),
                            np.ravel(y).astype(int))["ece"]
    return {"ece": float(ece), "nll": nll(logits, y, task)}


def fit_temperature(logits: np.ndarray, y: np.ndarray, task: str = "multiclass",
                    tol: float = 1e-4) -> float:
    """The T minimizing the NLL of ``logits / T``: golden-section search on log T.

    The NLL is convex in 1/T, hence unimodal in log T, so the 1-D search finds the optimum.
    """
    def f(log_t: float) -> float:
        return nll(np.asarray(logits, np.float64) / math.exp(log_t), y, task)
    a, b = LOG_T_RANGE
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


def separable(logits: np.ndarray, y: np.ndarray, task: str) -> bool:
    """Whether every label is decided right: then the NLL falls as T → 0 and the split
    cannot say how sure the model should be (a fitted T would only sharpen it blindly)."""
    logits = np.asarray(logits)
    if task == "multiclass" and logits.shape[-1] > 1:
        return bool(np.all(logits.argmax(-1) == np.ravel(y)))
    return bool(np.all((logits.ravel() > 0) == (np.ravel(y) > 0.5)))


def logits_model(model: keras.Model) -> keras.Model:
    """The model up to its ``head`` Dense layer: the logits before any activation."""
    return keras.Model(model.inputs, model.get_layer("head").output)


def predict_logits(model: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32) and labels of every batch of ``dataset``, in order."""
    net, zs, ys = logits_model(model), [], []
    for x, y in dataset:
        zs.append(np.asarray(keras.ops.convert_to_numpy(net(x, training=False)), np.float32))
        ys.append(np.asarray(y))
    return np.concatenate(zs), np.concatenate(ys)


def labels_for(y: np.ndarray, task: str) -> np.ndarray:
    """Class indices for a multiclass head (one-hot rows → argmax); others as given."""
    return y.argmax(-1) if task == "multiclass" and y.ndim == 2 else y


def fold_temperature(model: keras.Model, temperature: float) -> None:
    """Divide the ``head`` Dense kernel and bias by T, in place."""
    head = model.get_layer("head")
    head.set_weights([w / temperature for w in head.get_weights()])


def why_not(model: keras.Model) -> str | None:
    """Why this model's head cannot take a folded temperature, or None when it can."""
    try:
        head = model.get_layer("head")
    except ValueError:
        return "the model has no 'head' layer"
    if not isinstance(head, keras.layers.Dense):
        return f"its 'head' layer is a {type(head).__name__}, not Dense"
    return None


def bundle_entry(run_dir: Path) -> dict:
    """model.json's ``calibration`` entry: the temperature already folded into the head
    (the runtime applies nothing more), from the run's metrics.json; {} when none was fitted.
    """
    file = Path(run_dir) / "metrics.json"
    try:
        data = json.loads(file.read_text()) if file.exists() else None
    except (OSError, ValueError):
        return {}
    entry = data.get("calibration") if isinstance(data, dict) else None
    if not isinstance(entry, dict) or entry.get("temperature") is None:
        return {}
    return {"calibration": {"method": "temperature", "temperature": entry["temperature"],
                            "folded_into_head": True, "fitted_on": entry.get("fitted_on")}}

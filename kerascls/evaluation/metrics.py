"""Evaluation metrics from predicted class probabilities (NumPy only, no backend).

Everything here takes ``probs`` (N, C) and integer labels ``y`` (N,), so the same code scores
a Keras model, a TFLite bundle or saved predictions. Products of probabilities are computed
as sums of logs: a product over 10,000 images underflows float64 long before it is useful.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

EPS = 1e-12
EMPTY_NAMES = ("empty", "blank", "none", "nothing")


def _labels(y) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(int)


def topk_accuracy(probs: np.ndarray, y, k: int = 1) -> float:
    """Share of images whose label is among the ``k`` most probable classes."""
    y = _labels(y)
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def log_likelihood(p_observed) -> float:
    """Sum of the logs of the probabilities the model gave the observed labels."""
    return float(np.sum(np.log(np.clip(np.asarray(p_observed, np.float64), EPS, 1.0))))


def likelihood_report(p_observed) -> dict:
    """Likelihood (product of the observed labels' probabilities), its log and the NLL.

    ``nll`` is the mean negative log-likelihood per image (the cross-entropy loss); the
    likelihood itself is ``exp(log_likelihood)`` and underflows to 0.0 for large sets, which
    is why the log is reported beside it.
    """
    ll = log_likelihood(p_observed)
    n = max(len(np.asarray(p_observed).reshape(-1)), 1)
    return {"likelihood": float(np.exp(ll)), "log_likelihood": ll, "nll": -ll / n}


def binary_likelihood(y, p1) -> dict:
    """Likelihood of binary labels ``y`` under predicted ``p(y=1)``."""
    y, p1 = _labels(y), np.asarray(p1, np.float64).reshape(-1)
    return likelihood_report(np.where(y == 1, p1, 1.0 - p1))


def observed_probs(probs: np.ndarray, y) -> np.ndarray:
    """The probability each image's own label received."""
    y = _labels(y)
    return np.asarray(probs, np.float64)[np.arange(len(y)), y]


def confusion_matrix(y, pred, num_classes: int) -> np.ndarray:
    """Counts (true class rows, predicted class columns)."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (_labels(y), _labels(pred)), 1)
    return cm


def per_class(cm: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class, from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]


def calibration(probs: np.ndarray, y, bins: int = 15) -> dict:
    """Expected calibration error of the top-1 confidence, and the reliability-diagram bins.

    ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width confidence bins.
    """
    y = _labels(y)
    conf, correct = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        acc = float(correct[mask].mean()) if n else 0.0
        mean_conf = float(conf[mask].mean()) if n else 0.0
        ece += n / max(len(y), 1) * abs(acc - mean_conf)
        rows.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                     "accuracy": acc, "confidence": mean_conf})
    return {"ece": float(ece), "bins": rows}


def find_empty_class(class_names: list[str]) -> int | None:
    """Index of the class that means "no animal" (named empty, blank, …), if any."""
    for i, name in enumerate(class_names):
        if str(name).strip().lower() in EMPTY_NAMES:
            return i
    return None


EMPTY_THRESHOLDS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


def empty_filter_table(probs: np.ndarray, y, empty: int,
                       thresholds=EMPTY_THRESHOLDS) -> list[dict]:
    """Precision/recall of discarding frames whose p(empty) ≥ threshold.

    Precision: share of discarded frames that really are empty. Recall: share of the empty
    frames discarded. ``animals_lost``: non-empty frames discarded (what filtering costs).
    """
    y = _labels(y)
    is_empty, p_empty = y == empty, probs[:, empty]
    rows = []
    for t in thresholds:
        drop = p_empty >= t
        tp, dropped = int(np.sum(drop & is_empty)), int(drop.sum())
        rows.append({"threshold": float(t), "discarded": dropped,
                     "precision": tp / dropped if dropped else 1.0,
                     "recall": tp / int(is_empty.sum()) if is_empty.any() else 0.0,
                     "animals_lost": dropped - tp})
    return rows


def classification_report(probs: np.ndarray, y, class_names: list[str]) -> dict:
    """Every metric of a multiclass evaluation; images labelled -1 (unknown class) are skipped."""
    y = _labels(y)
    probs = np.asarray(probs, np.float64).reshape(len(y), -1)
    known = y >= 0
    probs, y = probs[known], y[known]
    cm = confusion_matrix(y, probs.argmax(1), probs.shape[1])
    lik = likelihood_report(observed_probs(probs, y))
    report = {"accuracy": topk_accuracy(probs, y, 1), "top5_accuracy": topk_accuracy(probs, y, 5),
              "loss": lik["nll"], **lik, "count": int(len(y)),
              "skipped_unknown_labels": int((~known).sum())}
    cal = calibration(probs, y)
    report.update(ece=cal["ece"], reliability=cal["bins"], confusion_matrix=cm.tolist(),
                  per_class=per_class(cm, class_names), class_names=list(class_names))
    empty = find_empty_class(class_names)
    if empty is not None:
        report["empty_class"] = class_names[empty]
        report["empty_filter"] = empty_filter_table(probs, y, empty)
    return report


def two_class(probs: np.ndarray) -> np.ndarray:
    """A binary head's p(class 1) as the (N, 2) probabilities the multiclass report takes."""
    probs = np.asarray(probs, np.float64).reshape(len(probs), -1)
    return np.concatenate([1.0 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve, Σ_n (R_n − R_{n−1}) · P_n (scikit-learn's AP).

    The thresholds n are the distinct scores: images with equal scores (common with int8
    outputs, 256 levels) count as one step, so the result does not depend on their order.
    NaN for a class with no positive image: it has no recall to average over.
    """
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    pos, ranked = np.asarray(positive, bool)[order], scores[order]
    if not pos.any():
        return float("nan")
    last = np.append(ranked[1:] != ranked[:-1], True)  # the end of each run of equal scores
    tp = np.cumsum(pos)[last]
    precision = tp / (np.flatnonzero(last) + 1)  # images at or above each threshold
    return float(np.sum(np.diff(tp, prepend=0) * precision) / pos.sum())


def _prf(tp, fp, fn) -> tuple:
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=(p + r) > 0)
    return p, r, f


def multilabel_report(probs: np.ndarray, y: np.ndarray, class_names: list[str],
                      threshold: float = 0.5) -> dict:
    """Every metric of a multi-label evaluation (K-hot ``y``, one sigmoid per class).

    Per class: average precision, and precision/recall/F1 at ``threshold``; overall: mAP
    (mean AP over classes with a positive image), micro and macro F1, exact-match ratio
    (every label right), the binary cross-entropy per label as ``loss``, its likelihood,
    and the ECE of the (image, class) decisions.
    """
    probs = np.asarray(probs, np.float64).reshape(len(y), -1)
    truth, pred = np.asarray(y) > 0.5, probs >= threshold
    tp, fp, fn = (np.sum(a & b, 0) for a, b in ((pred, truth), (pred, ~truth), (~pred, truth)))
    p, r, f = _prf(tp, fp, fn)
    ap = [average_precision(probs[:, c], truth[:, c]) for c in range(probs.shape[1])]
    rows = [{"class": n, "ap": a, "precision": float(pc), "recall": float(rc), "f1": float(fc),
             "support": int(s)} for n, a, pc, rc, fc, s in zip(class_names, ap, p, r, f,
                                                                truth.sum(0))]
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    lik = likelihood_report(np.where(truth, probs, 1.0 - probs).ravel())
    cal = calibration(two_class(probs.reshape(-1, 1)), truth.reshape(-1).astype(int))
    return {"task": "multilabel", "mAP": float(np.nanmean(ap)) if not np.isnan(ap).all()
            else float("nan"), "micro_f1": float(micro[2]), "macro_f1": float(f.mean()),
            "exact_match": float(np.mean(np.all(pred == truth, 1))), "threshold": threshold,
            "count": int(len(truth)), "loss": lik["nll"], **lik, "ece": cal["ece"],
            "reliability": cal["bins"], "per_class": rows, "class_names": list(class_names)}


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows of dicts to a CSV file (header from the first row)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def calibration_line(entry: dict | None) -> str | None:
    """One line on the run's temperature scaling (T, test ECE and NLL before → after)."""
    if not entry:
        return None
    if entry.get("temperature") is None:
        return f"calibration: none ({entry.get('skipped', 'not fitted')})"
    line = f"calibration: temperature {entry['temperature']:.3f} (fitted on val)"
    before, after = entry.get("test_before"), entry.get("test_after")
    if before and after:
        line += (f"; test ECE {before['ece']:.4f} → {after['ece']:.4f}, "
                 f"NLL {before['nll']:.4f} → {after['nll']:.4f}")
    return line

"""PNG figures of an evaluation (confusion matrix, reliability) and of training curves.

matplotlib is imported lazily with the non-interactive Agg backend, so headless servers and
training jobs never need a display.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def confusion_png(cm: np.ndarray, class_names: list[str], path: Path) -> None:
    """Row-normalized confusion matrix with counts; the figure grows with the class count
    so names stay readable."""
    plt = _pyplot()
    n = len(class_names)
    size = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reliability_png(bins: list[dict], ece: float, path: Path) -> None:
    """Accuracy against confidence per bin, beside the diagonal of perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    ax.bar(centers, [b["accuracy"] for b in bins], width=width, edgecolor="black",
           label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.4f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv columns as float lists."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows if r.get(k) not in (None, "")] for k in rows[0]
            } if rows else {}


def training_curves_png(history_csv: Path, path: Path) -> None:
    """Loss and accuracy per epoch (train and validation) from a run's history.csv."""
    hist = read_history(history_csv)
    if not hist:
        return
    plt = _pyplot()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in ("loss", "accuracy") if m in hist]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    epochs = [e + 1 for e in hist.get("epoch", range(len(hist[metrics[0]])))]
    for ax, name in zip(axes[0], metrics):
        ax.plot(epochs, hist[name], "o-", label=f"train {name}")
        if f"val_{name}" in hist:
            ax.plot(epochs[:len(hist[f"val_{name}"])], hist[f"val_{name}"], "o-",
                    label=f"val {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

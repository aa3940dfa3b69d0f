"""Temperature scaling on two real training runs: test ECE and NLL before → after, and T.

Run from a checkout: ``python bench/calibration_ece.py [OUT_DIR [fashion|rendered]]``.
Trains small_cnn on a Fashion-MNIST subset and on a folder of rendered photo-like textures
(5 classes, two pairs of them alike, so that a few epochs leave mistakes), then prints each
run's ``metrics.json`` calibration entry as a table row.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from kerascls.training.config import TrainConfig  # noqa: E402
from kerascls.training.train import train  # noqa: E402

EXTRA = {"stripes_mid": (3.2, 1.1, (0.7, 0.9, 0.95)),  # close to stripes_coarse
         "rings_fine": (5.8, None, (0.9, 1.0, 0.75))}   # close to rings


def fashion_mnist(out: Path) -> TrainConfig:
    return TrainConfig(arch="small_cnn", epochs=6, max_train_images=6000,
                       max_test_images=5000, batch_size=64, seed=0, output_dir=str(out))


def fashion_mnist_smoothed(out: Path) -> TrainConfig:
    """Label smoothing trains a model to be unsure (a peer default): T < 1 sharpens it."""
    cfg = fashion_mnist(out)
    cfg.label_smoothing = 0.1
    return cfg


def rendered_folder(out: Path) -> TrainConfig:
    from tests import scenes
    scenes.CLASSES.update(EXTRA)
    data = scenes.render_folder(out.parent / "images", per_class=150,
                                classes=tuple(scenes.CLASSES), seed=3)
    return scenes.small_run(data, out, epochs=3, val_fraction=0.2, test_fraction=0.3,
                            image_size=24, learning_rate=1e-3)


def row(name: str, run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text())
    c = m["calibration"]
    b, a = c["test_before"], c["test_after"]
    return (f"| {name} | {m['count']} | {m['accuracy']:.3f} | {c['temperature']:.3f} | "
            f"{b['ece']:.4f} → {a['ece']:.4f} | {b['nll']:.4f} → {a['nll']:.4f} |")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    rows = []
    for name, make in (("Fashion-MNIST, small_cnn", fashion_mnist),
                       ("Fashion-MNIST, small_cnn, label smoothing 0.1",
                        fashion_mnist_smoothed),
                       ("rendered image files, small_cnn 24 px", rendered_folder)):
        if only and only not in make.__name__:
            continue
        out = root / make.__name__
        rows.append(row(name, train(make(out), overwrite=True)))
    print("| run | test images | accuracy | T | test ECE before → after | "
          "test NLL before → after |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""How many augmented views a cached frozen phase needs: test accuracy by ``--feature_views``.

With ``--augment`` and a frozen backbone, kerascls computes the backbone's features for a fixed
number of augmented views of each training image once (``--feature_views``), instead of
augmenting and running the backbone at every step (``--feature_cache off``). This bench
measures what that costs in accuracy, with no download: a backbone is trained here on
Fashion-MNIST classes 0-4 (the "pretrained" network), then frozen and transferred to classes
5-9 from few labelled images per class, where augmentation matters. The head is trained

* without augmentation (cached features, exact),
* with ``--augment`` on V cached views per image, for each V of ``--views``,
* with ``--augment`` and ``--feature_cache off`` (fresh augmentation every step: the reference),

at several seeds, and each run's test accuracy is read from its ``metrics.json`` (the 5,000
Fashion-MNIST test images of classes 5-9). Prints the mean and spread per setting, and the
frozen phase's wall time.

    python bench/feature_views.py [--per_class 100] [--seeds 3] [--views 1,2,4,8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import common  # noqa: E402,F401  (bench/common.py; puts the checkout on sys.path)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per_class", type=int, default=100, help="training images per new class")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--views", default="1,2,4,8")
    p.add_argument("--augment", default="flip,rrc")
    p.add_argument("--epochs", type=int, default=30, help="frozen-phase epochs of each run")
    p.add_argument("--pretrain_epochs", type=int, default=4)
    p.add_argument("--workdir", default="")
    return p.parse_args(argv)


def write_splits(roots: dict[Path, int], x: np.ndarray, y: np.ndarray, classes: list[int],
                 seed: int) -> None:
    """``root/CLASS/i.png`` for each root: that many images of each class (0: the rest), no
    image in two roots (the duplicate check refuses a test on training images)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for root, n in roots.items():
            take = idx[start:start + n] if n else idx[start:]
            start += len(take)
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in take:
                Image.fromarray(x[i, ..., 0]).save(root / f"c{c}" / f"{i}.png")


def datasets(work: Path, per_class: int) -> tuple[str, str]:
    """folder: specs of the pretraining set (classes 0-4) and the transfer set (5-9).

    A rerun in the same ``--workdir`` reuses a set only when it was written whole (its
    ``.done`` marker) for the same ``--per_class`` (the folder's name)."""
    from kerascls.data.fashion_mnist import load_fashion_mnist
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    old, new = work / "old", work / f"new_{per_class}"
    if not (old / ".done").exists():
        write_splits({old / "train": 2000, old / "val": 200}, x, y, [0, 1, 2, 3, 4], 0)
        (old / ".done").touch()
    if not (new / ".done").exists():
        write_splits({new / "train": per_class, new / "val": max(per_class // 4, 10)},
                     x, y, [5, 6, 7, 8, 9], 1)
        write_splits({new / "test": 0}, xt, yt, [5, 6, 7, 8, 9], 2)
        (new / ".done").touch()
    return f"folder:{old}", f"folder:{new}"


def run(cfg) -> tuple[float, float]:
    """Train ``cfg`` in this process: (test accuracy, wall seconds)."""
    from kerascls.training.train import train
    keras.backend.clear_session()
    start = time.perf_counter()
    out = train(cfg, overwrite=True)
    wall = time.perf_counter() - start
    return json.loads((Path(out) / "metrics.json").read_text()).get("accuracy", np.nan), wall


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from kerascls.config import TrainConfig
    work = Path(args.workdir or tempfile.mkdtemp(prefix="feature_views_"))
    old, new = datasets(work, args.per_class)
    base = dict(arch="small_cnn", image_size=28, batch_size=64, calibrate=False, warmup_steps=10)
    backbone = work / f"backbone_{args.pretrain_epochs}"
    if not (backbone / "model.keras").exists():
        run(TrainConfig(**base, data=old, epochs=args.pretrain_epochs, output_dir=str(backbone)))
    settings = {"no augmentation": dict(augment="", feature_cache="auto")}
    settings.update({f"{v} views": dict(augment=args.augment, feature_views=v)
                     for v in (int(s) for s in args.views.split(","))})
    settings["every step (cache off)"] = dict(augment=args.augment, feature_cache="off")
    results = {}
    for name, kw in settings.items():
        accs, walls = [], []
        for seed in range(args.seeds):
            cfg = TrainConfig(**base, data=new, epochs=args.epochs, weights=str(backbone),
                              freeze_backbone=True, seed=seed, **kw,
                              output_dir=str(work / f"{name.replace(' ', '_')}_{seed}"))
            acc, wall = run(cfg)
            accs.append(acc)
            walls.append(wall)
        results[name] = {"accuracy": [round(a, 4) for a in accs],
                         "mean": round(float(np.mean(accs)), 4),
                         "std": round(float(np.std(accs)), 4),
                         "wall_s": round(float(np.mean(walls)), 1)}
    print(f"\nsmall_cnn backbone (Fashion-MNIST 0-4) frozen, head on 5-9 from {args.per_class} "
          f"images per class, --augment {args.augment}, {args.epochs} epochs, "
          f"{args.seeds} seeds:")
    print(f"{'setting':26s} {'test accuracy':>22s} {'wall s':>8s}")
    for name, r in results.items():
        print(f"{name:26s} {r['mean']:>13.4f} ± {r['std']:.4f} {r['wall_s']:>8.1f}")
    result = {"bench": "feature_views", "per_class": args.per_class, "augment": args.augment,
              "epochs": args.epochs, "seeds": args.seeds, "results": results}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""What the training benchmarks share: the twins, the timing rounds and the report.

Imports only keras and kerascls.models, never TensorFlow, so the JAX benchmark can use it
on a machine without TF.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

# our registry name: the keras.applications constructor it is measured against
TWINS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
         "vgg16": "VGG16", "vgg19": "VGG19"}


def build_pair(arch: str, image_size: int, num_classes: int):
    """(ours, theirs), or None when ``arch`` is not registered here (yet)."""
    import keras

    from kerascls.models import create_model, list_models
    if arch not in TWINS or arch not in list_models():
        print(f"skip {arch}: " + ("no keras.applications twin" if arch not in TWINS
                                   else "not registered in kerascls"), file=sys.stderr)
        return None
    shape = (image_size, image_size, 3)
    ours = create_model(arch, num_classes=num_classes, input_shape=shape)
    theirs = getattr(keras.applications, TWINS[arch])(weights=None, input_shape=shape,
                                                      classes=num_classes)
    return ours, theirs


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, n: int,
                images_per_step: int,
                sync: dict[str, Callable[[], None]] | None = None) -> dict[str, float]:
    """Median images/s per name over ``rounds`` rounds of ``n`` steps each.

    The candidates alternate within every round (and swap order each round), so load
    from other processes on a shared machine hits all of them alike. ``sync[name]``
    (if given) runs inside the timed region after the steps: asynchronous backends
    must finish the work they were handed before the clock stops.
    """
    rates: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    sync = sync or {}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            for _ in range(n):
                steps[name]()
            sync.get(name, lambda: None)()
            rates[name].append(n * images_per_step / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in rates.items()}


def report(bench: str, results: dict[str, dict[str, float]], **context) -> None:
    """A readable table, then one JSON line for scripts and the README table."""
    print(f"\n{bench}  " + "  ".join(f"{k}={v}" for k, v in context.items()))
    print(f"{'arch':<12}{'ours img/s':>12}{'theirs img/s':>14}{'ours/theirs':>13}")
    for arch, r in results.items():
        print(f"{arch:<12}{r['ours']:>12.1f}{r['theirs']:>14.1f}{r['ratio']:>13.3f}")
    print(json.dumps({"bench": bench, **context, "results": results}))


def ratio_row(rates: dict[str, float]) -> dict[str, float]:
    """{ours, theirs, ratio} rounded for the report."""
    return {"ours": round(rates["ours"], 2), "theirs": round(rates["theirs"], 2),
            "ratio": round(rates["ours"] / rates["theirs"], 4)}

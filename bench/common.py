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


def build_pair(arch: str, image_size: int, num_classes: int, **overrides):
    """(ours, theirs), or None when ``arch`` is not registered here (yet).

    ``overrides`` go to our ``create_model`` (e.g. ``dropout=0`` to isolate a difference).
    """
    import keras

    from kerascls.models import create_model, list_models
    if arch not in TWINS or arch not in list_models():
        print(f"skip {arch}: " + ("no keras.applications twin" if arch not in TWINS
                                   else "not registered in kerascls"), file=sys.stderr)
        return None
    shape = (image_size, image_size, 3)
    ours = create_model(arch, num_classes=num_classes, input_shape=shape, **overrides)
    theirs = getattr(keras.applications, TWINS[arch])(weights=None, input_shape=shape,
                                                      classes=num_classes)
    return ours, theirs


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, n: int,
                images_per_step: int,
                sync: dict[str, Callable[[], None]] | None = None) -> dict[str, list[float]]:
    """Images/s per name for each of ``rounds`` rounds of ``n`` steps.

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
    return rates


def report(bench: str, results: dict[str, dict[str, float]], **context) -> None:
    """A readable table, then one JSON line for scripts and the README table."""
    print(f"\n{bench}  " + "  ".join(f"{k}={v}" for k, v in context.items()))
    print(f"{'arch':<16}{'ours img/s':>12}{'theirs img/s':>14}{'ours/theirs':>13}"
          f"{'round ratios':>22}")
    for arch, r in results.items():
        spread = f"{r['ratio_min']:.3f}–{r['ratio_max']:.3f}"
        print(f"{arch:<16}{r['ours']:>12.1f}{r['theirs']:>14.1f}{r['ratio']:>13.3f}"
              f"{spread:>22}")
    print(json.dumps({"bench": bench, **context, "results": results}))


def ratio_row(rates: dict[str, list[float]]) -> dict[str, float]:
    """Median images/s of each, and the median of the per-round ours/theirs ratios.

    A round's two timings sit next to each other in time, so their ratio cancels slow
    drifts in machine load that the ratio of two medians would not.
    """
    ratios = sorted(o / t for o, t in zip(rates["ours"], rates["theirs"]))
    return {"ours": round(statistics.median(rates["ours"]), 2),
            "theirs": round(statistics.median(rates["theirs"]), 2),
            "ratio": round(statistics.median(ratios), 4),
            "ratio_min": round(ratios[0], 4), "ratio_max": round(ratios[-1], 4),
            "rounds": len(ratios)}

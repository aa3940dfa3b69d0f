"""Replays issue 26's nine surviving mutants of the camera-trap workflow and names the test
that catches each.

    python mutation/issue26.py [--workdir DIR] [--head] [NAME ...]

How a mutant is applied and judged: ``mutation/replay.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import replay  # noqa: E402  (the tree copy, the pytest run and the replay loop)

EDGE = "export/kerascls_edge"

# name: (file, old text, new text, test files): issue 26's lines (3b7c4e1), as they read now
MUTANTS = {
    "1 roll-up total >= threshold -> >": (
        f"{EDGE}/taxonomy.py", "if total >= self.threshold:", "if total > self.threshold:",
        ["tests/test_workflow_mutants.py", "tests/test_rollup.py"]),
    "2 deployment = parent folder, not top-level": (
        f"{EDGE}/taxonomy.py", "    if len(parts) > 1:\n        return parts[0]\n",
        "    if len(parts) > 1:\n        return parts[-2]\n",
        ["tests/test_workflow_mutants.py", "tests/test_rollup.py"]),
    "3 blank classificationProbability 1 - min(confs)": (
        f"{EDGE}/camtrapdp.py", '1.0 - max(confs):.4f}', '1.0 - min(confs):.4f}',
        ["tests/test_workflow_mutants.py", "tests/test_camtrapdp_out.py"]),
    "4 bboxX <-> bboxY": (
        f"{EDGE}/camtrapdp.py", '{"bboxX": f"{x:.4f}", "bboxY": f"{y:.4f}"',
        '{"bboxX": f"{y:.4f}", "bboxY": f"{x:.4f}"',
        ["tests/test_workflow_mutants.py", "tests/test_camtrapdp_out.py"]),
    "5 sort folder from the first detection": (
        f"{EDGE}/sortinto.py", "        if p > top:\n", "        if top < 0:\n",
        ["tests/test_workflow_mutants.py", "tests/test_sort_into.py"]),
    "6 sort conf < threshold -> <=": (
        f"{EDGE}/sortinto.py", "if conf < threshold:", "if conf <= threshold:",
        ["tests/test_workflow_mutants.py", "tests/test_sort_into.py"]),
    "7 only the last --detection_categories entry": (
        "kerascls/data/camtrap_sources.py", "        ids |= hit\n", "        ids = hit\n",
        ["tests/test_workflow_sources.py", "tests/test_data_md_camtrapdp.py"]),
    "8 monitor mode: only 'loss' is a min": (
        "kerascls/training/callbacks.py", 'monitor.endswith("loss")', 'monitor == "loss"',
        ["tests/test_workflow_training.py", "tests/test_best_epoch.py"]),
    "9 replica outputs concatenated in reverse": (
        "kerascls/keras_classifier.py", "np.concatenate([np.asarray(o) for o in outs])[:n]",
        "np.concatenate([np.asarray(o) for o in outs][::-1])[:n]",
        ["tests/test_workflow_training.py", "tests/test_predict_devices.py"]),
}



if __name__ == "__main__":
    sys.exit(replay.main(MUTANTS, "issue26", __doc__))

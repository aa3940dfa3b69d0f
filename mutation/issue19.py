"""Replays the hand-made mutants of issue 19's table and names the test that catches each.

    python mutation/issue19.py [--workdir DIR] [--head] [NAME ...]

How a mutant is applied and judged: ``mutation/replay.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import replay  # noqa: E402  (the tree copy, the pytest run and the replay loop)

# name: (file, old text, new text, test files)
MUTANTS = {
    "letterbox offset +1 px (edge decode)": (
        "export/kerascls_edge/decode.py",
        "((pre.width - inner[0]) // 2, (pre.height - inner[1]) // 2)",
        "((pre.width - inner[0]) // 2 + 1, (pre.height - inner[1]) // 2)",
        ["tests/test_fidelity.py"]),
    "training resize antialias=False": (
        "kerascls/data/transforms.py",
        "antialias=True)",
        "antialias=False)",
        ["tests/test_fidelity.py"]),
    "int8 calibration without the 0/255 checkerboard": (
        "kerascls/tflite/convert.py",
        "yield [full_range_sample(shape)]",
        "pass",
        ["tests/test_contracts.py::test_int8_input_is_raw_pixels_even_when_calibration_is_narrow"]),
    "MegaDetector conf = top probability": (
        "export/kerascls_edge/mdformat.py",
        "conf = 1.0 - float(sum(probs[i] for i in empty)) if empty else float(probs[top])",
        "conf = float(probs[top])",
        ["tests/test_contracts.py"]),
    "splits: last group also put in train": (
        "kerascls/data/splits.py",
        "        out[split].extend(groups[key])\n    return out\n",
        ("        out[split].extend(groups[key])\n    if split != \"train\":\n"
         "        out[\"train\"].extend(groups[key])\n    return out\n"),
        ["tests/test_contracts.py", "tests/test_data.py"]),
    "ECE bin index off by one": (
        "kerascls/evaluation/metrics.py",
        "np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)",
        "np.digitize(conf, edges[1:-1], right=True) + 1, 0, bins - 1)",
        ["tests/test_metrics.py", "tests/test_contracts.py"]),
    "ECE bin confidence = bin midpoint": (
        "kerascls/evaluation/metrics.py",
        "mean_conf = float(conf[mask].mean()) if n else 0.0",
        "mean_conf = float((edges[b] + edges[b + 1]) / 2) if n else 0.0",
        ["tests/test_metrics.py", "tests/test_contracts.py"]),
    "augmenter returns its input unchanged": (
        "kerascls/data/transforms.py",
        "    def augment(images: tf.Tensor, labels: tf.Tensor):\n",
        "    def augment(images: tf.Tensor, labels: tf.Tensor):\n        return images, labels\n",
        ["tests/test_contracts.py", "tests/test_data.py"]),
    "random-resized-crop skips the crop": (
        "kerascls/data/transforms.py",
        "crop = tf.slice(image, begin, extent)",
        "crop = image",
        ["tests/test_contracts.py", "tests/test_data.py"]),
}



if __name__ == "__main__":
    sys.exit(replay.main(MUTANTS, "issue19", __doc__))

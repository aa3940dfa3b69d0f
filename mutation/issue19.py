"""Replays the hand-made mutants of issue 19's table and names the test that catches each.

    python mutation/issue19.py [--workdir DIR] [NAME ...]

Each mutant is one textual edit applied to a fresh clone of HEAD (the working tree is never
touched); the named test files then run (``pytest -x``) and the first failing test is the one
that catches it. A mutant whose edit no longer applies (the code moved) is reported as such.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def run_one(name: str, clone: Path) -> str:
    """Apply one mutant in ``clone``, run its tests, restore; returns a one-line verdict."""
    path, old, new, tests = MUTANTS[name]
    src = clone / path
    text = src.read_text()
    if text.count(old) != 1:
        return f"{name}: edit does not apply ({text.count(old)} matches) — code changed?"
    if not all((clone / t.split("::")[0]).exists() for t in tests):
        return f"{name}: pending ({', '.join(tests)} not in HEAD yet)"
    src.write_text(text.replace(old, new))
    try:
        env = {**os.environ, "PYTHONPATH": f"{clone}{os.pathsep}{clone / 'export'}"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                               "no:cacheprovider", "-n", "0", "-m", "not slow", *tests], cwd=clone,
                              env=env, capture_output=True, text=True, timeout=1800, check=False)
    finally:
        src.write_text(text)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode == 0:
        return f"{name}: SURVIVED ({' '.join(tests)})"
    return f"{name}: caught by {failed[0] if failed else proc.stdout.strip().splitlines()[-1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="substrings of mutant names (default all)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kerascls-mutation"))
    args = parser.parse_args(argv)
    clone = args.workdir / "issue19"
    subprocess.run(["rm", "-rf", str(clone)], check=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    survived = 0
    for name in MUTANTS:
        if args.names and not any(n in name for n in args.names):
            continue
        verdict = run_one(name, clone)
        survived += "SURVIVED" in verdict
        print(verdict, flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())

"""Replays issue 26's nine surviving mutants of the camera-trap workflow and names the test
that catches each.

    python mutation/issue26.py [--workdir DIR] [--head] [NAME ...]

Each mutant is one textual edit, applied in a copy of the working tree (tracked and untracked,
not ignored files: uncommitted tests count; ``--head``: a clone of the committed HEAD
instead), never in the working tree itself. The default (not ``slow``) tests of the named
files then run with ``-x``; the first failing test is the one that catches the mutant. An
edit that no longer applies (the code moved) is reported as such.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def copy_tree(dest: Path, head: bool) -> None:
    """dest: a clone of HEAD, or a copy of the working tree's tracked and unignored files."""
    shutil.rmtree(dest, ignore_errors=True)
    shared = dest.parent / "shared"  # the tests find ../shared/data beside the checkout
    if not shared.exists() and (ROOT.parent / "shared").is_dir():
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.symlink_to(ROOT.parent / "shared")
    if head:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
        return
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True).stdout.split(b"\0")
    for f in filter(None, (os.fsdecode(b) for b in files)):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def pytest_in(clone: Path, tests: list[str], timeout: float = 1800, stop: bool = True
              ) -> subprocess.CompletedProcess | None:
    """The default-mark run of ``tests`` in ``clone`` (``-x`` unless not ``stop``), its
    packages first on the path; None when it runs past ``timeout`` seconds (an endless loop
    counts as caught)."""
    env = {**os.environ, "PYTHONPATH": f"{clone}{os.pathsep}{clone / 'export'}"}
    try:
        return subprocess.run([sys.executable, "-m", "pytest", *(["-x"] if stop else []),
                               "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "0",
                               "-m", "not slow", *tests], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None


def run_one(name: str, clone: Path) -> str:
    """Apply one mutant in ``clone``, run its tests, restore; returns a one-line verdict."""
    path, old, new, tests = MUTANTS[name]
    src = clone / path
    text = src.read_text()
    if text.count(old) != 1:
        return f"{name}: edit does not apply ({text.count(old)} matches) — code changed?"
    tests = [t for t in tests if (clone / t).exists()]
    src.write_text(text.replace(old, new))
    try:
        proc = pytest_in(clone, tests)
    finally:
        src.write_text(text)
    if proc is None:
        return f"{name}: caught (timeout)"
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode == 0:
        skipped = re.search(r"(\d+) skipped", proc.stdout)
        return (f"{name}: SURVIVED ({' '.join(tests)}"
                f"{f'; {skipped.group(1)} skipped' if skipped else ''})")
    return f"{name}: caught by {failed[0] if failed else proc.stdout.strip().splitlines()[-1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="substrings of mutant names (default all)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kerascls-mutation"))
    parser.add_argument("--head", action="store_true",
                        help="mutate a clone of HEAD instead of a copy of the working tree")
    args = parser.parse_args(argv)
    clone = args.workdir / "issue26"
    copy_tree(clone, args.head)
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

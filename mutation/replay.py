"""What the hand-made mutant replays (``issue19.py``, ``issue26.py``) and ``quick.py`` share:
a copy of the tree to mutate, a default-mark pytest run in it, and the replay loop.

Each mutant is one textual edit ``(file, old text, new text, test files)`` applied in a copy of
the working tree (tracked and untracked, not ignored files: uncommitted tests count; ``--head``:
a clone of the committed HEAD instead), never in the working tree itself. The default (not
``slow``) tests of the named files then run with ``-x``; the first failing test is the one that
catches the mutant. An edit that no longer applies (the code moved) is reported as such.
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

Mutants = dict[str, tuple[str, str, str, list[str]]]


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


def run_one(mutants: Mutants, name: str, clone: Path) -> str:
    """Apply one mutant in ``clone``, run its tests, restore; returns a one-line verdict."""
    path, old, new, tests = mutants[name]
    src = clone / path
    text = src.read_text()
    if text.count(old) != 1:
        return f"{name}: edit does not apply ({text.count(old)} matches) — code changed?"
    if not all((clone / t.split("::")[0]).exists() for t in tests):
        return f"{name}: pending ({', '.join(tests)} not all in the tree yet)"
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


def main(mutants: Mutants, label: str, doc: str, argv: list[str] | None = None) -> int:
    """Replay ``mutants`` (those whose names contain a given substring); 1 if any survived."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("names", nargs="*", help="substrings of mutant names (default all)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kerascls-mutation"))
    parser.add_argument("--head", action="store_true",
                        help="mutate a clone of HEAD instead of a copy of the working tree")
    args = parser.parse_args(argv)
    clone = args.workdir / label
    copy_tree(clone, args.head)
    survived = 0
    for name in mutants:
        if args.names and not any(n in name for n in args.names):
            continue
        verdict = run_one(mutants, name, clone)
        survived += "SURVIVED" in verdict
        print(verdict, flush=True)
    return 1 if survived else 0

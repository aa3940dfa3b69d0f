"""Repeatable mutation testing of the modules whose contracts the tests pin (mutmut 3).

    python mutation/run.py [TARGET ...] [--workdir DIR] [--jobs N]
                           [--report_only | --rerun_survivors]

Targets: metrics, splits, mdformat, decode, transforms (default: all, in that order). Each
runs in a fresh clone of the committed HEAD under WORKDIR/TARGET — the working tree is
never mutated — with a ``[tool.mutmut]`` section appended to the clone's pyproject.toml
(``source_paths`` copies both packages, kerascls and export/kerascls_edge, into mutmut's
``mutants/`` folder; ``only_mutate`` limits mutation to the one module; the test selection
is the module's fast test files). mutmut forks one child per mutant after the imports, so
a run costs seconds per module rather than a fresh interpreter per mutant.

Writes WORKDIR/TARGET.md: the score, killed / (total − skipped), and the diff of every
surviving mutant. Not part of CI (minutes of both cores); see README "Mutation testing".
Needs ``pip install -e ".[mutation]"`` (mutmut 3.8.1 was used).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """One module and the tests that pin it (``-k`` keeps slow or unrelated tests out)."""

    module: str
    tests: tuple[str, ...]
    select: str
    isolation: str = "fork"  # "forkserver" where tests run TensorFlow (not fork-safe)


_NOT_METRICS = ("keras", "int8", "edge_output", "augment", "crop", "pipeline", "split",
                "megadetector", "csv_rows", "resume")
TARGETS = {
    "metrics": Target("kerascls/evaluation/metrics.py",
                      ("tests/test_metrics.py", "tests/test_contracts.py"),
                      " and ".join(f"not {w}" for w in _NOT_METRICS)),
    "splits": Target("kerascls/data/splits.py",
                     ("tests/test_contracts.py", "tests/test_data.py"), "split"),
    "mdformat": Target("export/kerascls_edge/mdformat.py", ("tests/test_contracts.py",),
                       "megadetector or csv_rows"),
    # TensorFlow-free tests only (the bundle tests of test_edge.py run TF in subprocesses)
    "decode": Target("export/kerascls_edge/decode.py",
                     ("tests/test_contracts_decode.py", "tests/test_edge.py"),
                     "contracts_decode or stretch or convert or exif or draft or trailing"),
    "transforms": Target("kerascls/data/transforms.py",
                         ("tests/test_contracts.py", "tests/test_data.py",
                          "tests/test_fidelity.py"),
                         "(augment or crop or pipeline or resize or letterbox or training) and"
                         " not rendered and not rss and not camtrap and not greyscale",
                         "forkserver"),
}


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(target: Target, clone: Path) -> None:
    """A clean clone of HEAD with the mutmut section for this target.

    mutmut names a mutant after its file's path (``export/kerascls_edge/x.py`` would be
    module ``export.kerascls_edge.x``, never imported under that name), so the clone moves
    the edge package to the top (``kerascls_edge/``, with ``export/kerascls_edge`` a link
    to it, where the tests look).
    """
    subprocess.run(["rm", "-rf", str(clone)], check=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / "export" / "kerascls_edge").rename(clone / "kerascls_edge")
    (clone / "export" / "kerascls_edge").symlink_to(Path("..") / "kerascls_edge")
    section = (f"\n[tool.mutmut]\n"
               f"source_paths = [\"kerascls/\", \"kerascls_edge/\"]\n"
               f"only_mutate = {_toml_list([target.module.removeprefix('export/')])}\n"
               f"pytest_add_cli_args_test_selection = {_toml_list(target.tests)}\n"
               "pytest_add_cli_args = "
               f"{_toml_list(['-p', 'no:cacheprovider', '-n', '0', '-k', target.select])}\n"
               f"process_isolation = \"{target.isolation}\"\n")
    with open(clone / "pyproject.toml", "a") as f:
        f.write(section)


def results(clone: Path) -> dict[str, str]:
    """``{mutant name: status}`` from ``mutmut results --all true``."""
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=clone, check=True,
                         capture_output=True, text=True).stdout
    pairs = (line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)
    return {name: status for name, status in pairs}


def report(name: str, target: Target, clone: Path, seconds: float) -> str:
    """Markdown: score and the diff of every survivor."""
    status = results(clone)
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    scored = len(status) - counts.get("skipped", 0) - counts.get("not checked", 0)
    score = 100.0 * killed / scored if scored else float("nan")
    summary = (f"score {score:.1f} % ({killed} killed of {scored}; {counts}), "
               f"{seconds:.0f} s")
    lines = [f"## {name}: {target.module}", "", summary, ""]
    for mutant, s in sorted(status.items()):
        if s in ("killed", "timeout", "skipped", "not checked"):
            continue
        diff = subprocess.run(["mutmut", "show", mutant], cwd=clone, capture_output=True,
                              text=True, check=False).stdout
        lines += [f"### {mutant} ({s})", "", "```diff", diff.strip(), "```", ""]
    return "\n".join(lines)


def rerun_survivors(target: Target, clone: Path, jobs: int) -> subprocess.CompletedProcess:
    """Re-run only the survivors of an earlier run, against the committed HEAD's tests.

    HEAD's tests/ folder is copied into the clone (and mutmut's copy of it), and mutmut's
    test-to-function map is dropped so it is collected again (mutmut only maps test ids it
    has not seen, and new parametrize cases can reuse old ids). Cheaper than a fresh run.
    """
    (clone / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    tests = subprocess.run(["git", "archive", "HEAD", "tests"], cwd=ROOT, check=True,
                           capture_output=True).stdout
    for where in (clone, clone / "mutants"):
        subprocess.run(["tar", "-x", "-C", str(where)], input=tests, check=True)
    names = [n for n, s in results(clone).items() if s not in ("killed", "timeout", "skipped")]
    return subprocess.run(["mutmut", "run", "--max-children", str(jobs), *names], cwd=clone,
                          capture_output=True, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", choices=[*TARGETS, []], default=[])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kerascls-mutation"))
    parser.add_argument("--jobs", type=int, default=2, help="mutmut --max-children")
    parser.add_argument("--report_only", action="store_true",
                        help="summarize an existing (even interrupted) run in WORKDIR")
    parser.add_argument("--rerun_survivors", action="store_true",
                        help="re-run an existing run's survivors with HEAD's current tests")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for name in args.targets or list(TARGETS):
        target, clone = TARGETS[name], args.workdir / name
        if args.report_only:
            print(report(name, target, clone, 0.0))
            continue
        start = time.time()
        if args.rerun_survivors:
            run = rerun_survivors(target, clone, args.jobs)
        else:
            prepare(target, clone)
            run = subprocess.run(["mutmut", "run", "--max-children", str(args.jobs)],
                                 cwd=clone, capture_output=True, text=True, check=False)
        (args.workdir / f"{name}.log").write_text(run.stdout[-20000:] + run.stderr[-20000:])
        if run.returncode:
            print(f"{name}: mutmut run exited {run.returncode}, see "
                  f"{args.workdir / name}.log", file=sys.stderr)
            return run.returncode
        text = report(name, target, clone, time.time() - start)
        (args.workdir / f"{name}.md").write_text(text)
        print(text.split("\n\n")[1] if "\n\n" in text else text, f"→ {args.workdir}/{name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

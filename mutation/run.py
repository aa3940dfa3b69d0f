"""Repeatable mutation testing of the modules whose contracts the tests pin (mutmut 3).

    python mutation/run.py [TARGET ...] [--workdir DIR] [--jobs N] [--worktree]
                           [--report_only | --rerun_survivors]

Targets: metrics, splits, mdformat, decode, transforms, and the camera-trap workflow's
taxonomy, camtrapdp, sortinto, sequences, journal, convert, report, outputs, camtrap_sources,
keras_classifier, callbacks, calibration (default: all, in that order). Each
runs in a fresh clone of the committed HEAD under WORKDIR/TARGET — the working tree is
never mutated — with a ``[tool.mutmut]`` section appended to the clone's pyproject.toml
(``source_paths`` copies both packages, kerascls and export/kerascls_edge, into mutmut's
``mutants/`` folder; ``only_mutate`` limits mutation to the one module; the test selection
is the module's fast test files). mutmut forks one child per mutant after the imports, so
a run costs seconds per module rather than a fresh interpreter per mutant.

Writes WORKDIR/TARGET.md: the score, killed / (total − skipped), and the diff of every
surviving mutant. Not part of CI (minutes of both cores); see README "Mutation testing".
Needs ``pip install -e ".[mutation]"`` (mutmut 3.8.1 was used); without mutmut,
``mutation/quick.py TARGET`` estimates one target's score with a few stdlib (ast) operators.
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
# The camera-trap workflow (issue 26). ``-k`` leaves out the tests of a file that do not
# concern the module and are slow to reach (a training or bundle build in a subprocess).
_EDGE_RUNS = ("tests/test_workflow_mutants.py", "tests/test_edge_camtrap.py",
              "tests/test_camtrapdp_out.py")
_WORKFLOW = {
    "taxonomy": ("export/kerascls_edge/taxonomy.py",
                 ("tests/test_workflow_mutants.py", "tests/test_rollup.py",
                  "tests/test_camtrapdp_out.py"), "not train"),
    "camtrapdp": ("export/kerascls_edge/camtrapdp.py",
                  ("tests/test_workflow_camtrapdp.py",  # the video rows: issue 27's test
                   "tests/test_video_outputs.py::test_camtrapdp_video_observation_types_hand_made",
                   *_EDGE_RUNS, "tests/test_field_camtrapdp.py"), "not million"),
    "packagedir": ("export/kerascls_edge/packagedir.py",
                   ("tests/test_workflow_camtrapdp.py", "tests/test_field_camtrapdp.py"),
                   "not million"),
    "sortinto": ("export/kerascls_edge/sortinto.py",
                 ("tests/test_workflow_outputs.py", "tests/test_workflow_mutants.py",
                  "tests/test_sort_into.py",
                  "tests/test_field_sorting.py"), "not million"),
    "sequences": ("export/kerascls_edge/sequences.py",
                  ("tests/test_workflow_mutants.py", "tests/test_edge_camtrap.py"), ""),
    "journal": ("export/kerascls_edge/journal.py",
                ("tests/test_workflow_outputs.py", "tests/test_edge.py",
                 "tests/test_edge_hardening.py",
                 "tests/test_field_resume.py"),
                "resume or journal or checkpoint or interrupt or lock or identity or meta"),
    "convert": ("export/kerascls_edge/convert.py",
                ("tests/test_workflow_convert.py", "tests/test_workflow_video_report.py")
                + _EDGE_RUNS + ("tests/test_field_convert.py",), "not million"),
    "mdstream": ("export/kerascls_edge/mdstream.py",
                 ("tests/test_workflow_convert.py", "tests/test_field_convert.py"),
                 "not million"),
    "spreadsheet": ("export/kerascls_edge/spreadsheet.py",
                    ("tests/test_workflow_convert.py", "tests/test_field_convert.py",
                     "tests/test_field_sorting.py"), "case20 or formula or spreadsheet"),
    "report": ("export/kerascls_edge/report.py",
               ("tests/test_workflow_convert.py", "tests/test_review_page.py",
                "tests/test_camtrapdp_out.py", "tests/test_field_html.py",
                "tests/test_video_outputs.py",  # of that file only the strip (video) tests
                "tests/test_workflow_video_report.py"),
               "not million and (not video_outputs or strip)"),
    "outputs": ("export/kerascls_edge/outputs.py",
                ("tests/test_workflow_outputs.py", "tests/test_edge.py",
                 "tests/test_edge_hardening.py"), ""),
    "camtrap_sources": ("kerascls/data/camtrap_sources.py",
                        ("tests/test_workflow_sources.py", "tests/test_data_md_camtrapdp.py",
                         "tests/test_video_train.py"),
                        "not crop_pixels and not trains and not exports and not round_trip"
                        " and not zamba"),
    "keras_classifier": ("kerascls/keras_classifier.py",
                         ("tests/test_workflow_keras.py", "tests/test_workflow_training.py",
                          "tests/test_predict_devices.py"),
                         "keras_classifier or replicas or devices"),
    "callbacks": ("kerascls/training/callbacks.py",
                  ("tests/test_workflow_keras.py", "tests/test_workflow_training.py",
                   "tests/test_training.py"),
                  "callbacks_ or best_epoch or a_tie or patience or resumed or nan or history"),
    "calibration": ("kerascls/training/calibration.py",
                    ("tests/test_workflow_keras.py", "tests/test_calibration.py",
                     "tests/test_contracts.py"), "calibrat"),
}
_TF = {"camtrap_sources", "keras_classifier", "callbacks", "calibration"}  # not fork-safe
TARGETS.update({name: Target(module, tests, select, "forkserver" if name in _TF else "fork")
                for name, (module, tests, select) in _WORKFLOW.items()})


def _select(target: Target) -> list[str]:
    """``-k SELECT`` where the target narrows its test files (none: all their tests)."""
    return ["-k", target.select] if target.select else []


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(target: Target, clone: Path, worktree: bool = False) -> None:
    """A clean clone of HEAD (``worktree``: a copy of the working tree's tracked and
    unignored files, to measure tests not yet committed) with this target's mutmut section.

    mutmut names a mutant after its file's path (``export/kerascls_edge/x.py`` would be
    module ``export.kerascls_edge.x``, never imported under that name), so the clone moves
    the edge package to the top (``kerascls_edge/``, with ``export/kerascls_edge`` a link
    to it, where the tests look).
    """
    from replay import copy_tree  # the one tree copier (mutation/ is on sys.path)

    copy_tree(clone, head=not worktree)
    if (ROOT.parent / "shared").is_dir():  # mutmut runs the tests in clone/mutants, whose
        (clone / "shared").symlink_to(ROOT.parent / "shared")  # ../shared is clone/shared
    (clone / "export" / "kerascls_edge").rename(clone / "kerascls_edge")
    (clone / "export" / "kerascls_edge").symlink_to(Path("..") / "kerascls_edge")
    section = (f"\n[tool.mutmut]\n"
               f"source_paths = [\"kerascls/\", \"kerascls_edge/\"]\n"
               f"only_mutate = {_toml_list([target.module.removeprefix('export/')])}\n"
               f"pytest_add_cli_args_test_selection = {_toml_list(target.tests)}\n"
               "pytest_add_cli_args = "
               f"{_toml_list(['-p', 'no:cacheprovider', '-n', '0', *_select(target)])}\n"
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
    parser.add_argument("--worktree", action="store_true",
                        help="mutate a copy of the working tree (uncommitted tests) not HEAD")
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
            prepare(target, clone, args.worktree)
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

"""A stdlib-only mutation estimate for one module, where mutmut is not installed.

    python mutation/quick.py TARGET [--workdir DIR] [--head] [--limit N] [--lines A-B]

TARGET is a name of ``run.TARGETS`` (its module and test selection). The module is parsed
with ``ast``; each mutant changes one node — a comparison flipped (``<`` ↔ ``<=``, ``>`` ↔
``>=``, ``==`` ↔ ``!=``, ``in`` ↔ ``not in``, ``is`` ↔ ``is not``), an arithmetic operator
swapped (``+`` ↔ ``-``, ``*`` ↔ ``/``, ``//`` → ``/``, ``%`` → ``*``), ``and`` ↔ ``or``,
a ``not`` dropped, a number changed (0 → 1, n → n + 1, an index ``[i]`` → ``[i + 1]``),
``True`` ↔ ``False``, ``min`` ↔ ``max``, ``|=``/``+=`` → ``=``, ``break`` ↔ ``continue`` —
and is written (``ast.unparse`` of the whole module) over the module in a copy of the
working tree (``--head``: a clone of HEAD), never the working tree itself. The target's
default-mark tests then run with ``pytest -x`` in a child forked after the slow third-party
imports (``--subprocess``: a fresh interpreter each time); any failure (or a timeout) kills
the mutant. The original text is written back in a ``finally`` after each mutant.

Prints the score, killed / total, and every survivor (line, what changed, the line). Coarser
than mutmut (fewer operators, no string or call mutations), so it estimates, not replaces,
``run.py``'s score.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import replay  # noqa: E402  (copy_tree, pytest_in)
import run  # noqa: E402  (TARGETS: module -> tests)

FLIP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
            ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
            ast.Is: ast.IsNot, ast.IsNot: ast.Is}
FLIP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
            ast.FloorDiv: ast.Div, ast.Mod: ast.Mult}
FLIP_NAME = {"min": "max", "max": "min"}


@dataclass
class Mutant:
    """One change: where (line), what (a short description) and the mutated source."""

    line: int
    what: str
    source: str


@dataclass
class _Edit:
    """Replace ``holder[key]`` (a list slot) or ``holder.key`` (a node field) with ``new``."""

    line: int
    what: str
    holder: object
    key: object
    new: object

    def swap(self) -> None:
        """Put ``new`` in place and keep what was there (so a second swap undoes it)."""
        if isinstance(self.holder, list):
            self.holder[self.key], self.new = self.new, self.holder[self.key]
        else:
            old = getattr(self.holder, self.key)
            setattr(self.holder, self.key, self.new)
            self.new = old


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring constants (never mutated)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _own_edits(node: ast.AST, skip: set[int]) -> Iterator[_Edit]:
    """Mutations of ``node`` itself: operators, numbers, booleans, min/max."""
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in FLIP_CMP:
                new = FLIP_CMP[type(op)]
                yield _Edit(line, f"{type(op).__name__} -> {new.__name__}", node.ops, i, new())
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in FLIP_BIN:
        new = FLIP_BIN[type(node.op)]
        yield _Edit(line, f"{type(node.op).__name__} -> {new.__name__}", node, "op", new())
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield _Edit(line, f"{type(node.op).__name__} -> {new.__name__}", node, "op", new())
    elif (isinstance(node, ast.Constant) and id(node) not in skip
          and type(node.value) in (int, float, bool)):
        v = node.value
        new = (not v) if isinstance(v, bool) else (1 if v == 0 else v + 1)
        yield _Edit(line, f"{v!r} -> {new!r}", node, "value", new)
    elif isinstance(node, ast.Name) and node.id in FLIP_NAME:
        yield _Edit(line, f"{node.id} -> {FLIP_NAME[node.id]}", node, "id", FLIP_NAME[node.id])


def _replacement(child: ast.AST) -> tuple[Optional[ast.AST], str]:
    """A node to put instead of ``child``: ``not x`` -> ``x``, ``x |= y`` / ``x += y`` ->
    ``x = y``, ``break`` <-> ``continue``; (None, "") for anything else."""
    if isinstance(child, ast.UnaryOp) and isinstance(child.op, ast.Not):
        return child.operand, "not dropped"
    if isinstance(child, ast.AugAssign) and isinstance(child.op, (ast.BitOr, ast.Add)):
        return (ast.Assign(targets=[child.target], value=child.value, lineno=child.lineno),
                f"{type(child.op).__name__}= -> =")
    if isinstance(child, ast.Break):
        return ast.Continue(), "Break -> Continue"
    if isinstance(child, ast.Continue):
        return ast.Break(), "Continue -> Break"
    return None, ""


def _child_edits(parent: ast.AST) -> Iterator[_Edit]:
    """Mutations that replace one of ``parent``'s children (see ``_replacement``)."""
    for field, value in ast.iter_fields(parent):
        slots = [(value, k) for k in range(len(value))] if isinstance(value, list) \
            else [(parent, field)]
        for holder, key in slots:
            child = holder[key] if isinstance(holder, list) else getattr(holder, key)
            if isinstance(child, ast.AST):
                new, what = _replacement(child)
                if new is not None:
                    yield _Edit(child.lineno, what, holder, key, new)


def _annotation_lines(tree: ast.AST) -> set[int]:
    """Lines of type annotations (nothing to mutate there)."""
    lines = set()
    for node in ast.walk(tree):
        ann = getattr(node, "annotation", None) or getattr(node, "returns", None)
        if isinstance(ann, ast.AST):
            lines.update(range(ann.lineno, (ann.end_lineno or ann.lineno) + 1))
    return lines


def mutants(source: str, lines: Optional[set[int]] = None) -> list[Mutant]:
    """Every single-node mutant of ``source`` (optionally on some lines only), as source."""
    tree = ast.parse(source)
    skip, typed = _docstrings(tree), _annotation_lines(tree)
    baseline = ast.unparse(tree)
    out = []
    for node in list(ast.walk(tree)):
        for edit in [*_own_edits(node, skip), *_child_edits(node)]:
            if edit.line in typed or (lines and edit.line not in lines):
                continue
            edit.swap()
            try:
                text = ast.unparse(tree)
            finally:
                edit.swap()
            if text != baseline:
                out.append(Mutant(edit.line, edit.what, text))
    return out


# Imported once in the parent and shared by every forked child (never the mutated module).
PRELOAD = ("numpy", "PIL.Image", "pytest", "xdist", "hypothesis", "frictionless",
           "megadetector.postprocessing.validate_batch_results")
PRELOAD_TF = ("tensorflow", "keras")


def _module_name(path: str) -> str:
    """The import name of a module file: ``export/kerascls_edge/x.py`` -> ``kerascls_edge.x``."""
    return path.removeprefix("export/").removesuffix(".py").replace("/", ".")


def preload(clone: Path, module: str, tf: bool) -> None:
    """Put the clone first on the path and import the slow third-party packages once."""
    import importlib
    import os
    sys.path[:0] = [str(clone), str(clone / "export")]
    os.environ["PYTHONPATH"] = f"{clone}{os.pathsep}{clone / 'export'}"
    os.chdir(clone)
    for name in PRELOAD + (PRELOAD_TF if tf else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    assert module not in sys.modules, f"{module} imported before the mutants"


def pytest_forked(args: list[str], timeout: float) -> Optional[int]:
    """pytest.main(args) in a forked child (the parent's imports shared); its exit status, or
    None past ``timeout`` seconds."""
    import os
    import signal
    pid = os.fork()
    if pid == 0:  # the child: quiet, then gone without running the parent's cleanup
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        code = 3
        try:
            import pytest
            code = int(pytest.main(args))
        finally:
            os._exit(code)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _line_set(text: str) -> Optional[set[int]]:
    """'46,181-193' -> {46, 181, ..., 193}; '' -> None (every line)."""
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=list(run.TARGETS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kerascls-mutation"))
    parser.add_argument("--head", action="store_true", help="mutate a clone of HEAD")
    parser.add_argument("--limit", type=int, default=0, help="at most N mutants (0: all)")
    parser.add_argument("--lines", default="",
                        help="only these lines of the module, e.g. 46,181-193 (re-running "
                             "an earlier run's survivors)")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds per mutant (default: 3 x the clean run + 30)")
    parser.add_argument("--subprocess", action="store_true",
                        help="a fresh interpreter per mutant (default: fork after imports)")
    args = parser.parse_args(argv)
    target = run.TARGETS[args.target]
    clone = args.workdir / f"quick-{args.target}"
    replay.copy_tree(clone, args.head)
    module = clone / target.module
    original = module.read_text()
    lines = _line_set(args.lines)
    found = mutants(original, lines)
    if args.limit:
        found = found[:args.limit]
    extra = ["-k", target.select] if target.select else []
    start = time.time()
    module.write_text(ast.unparse(ast.parse(original)))  # the mutants' spelling, unmutated
    try:
        clean = replay.pytest_in(clone, [*target.tests, *extra], stop=False)
    finally:
        module.write_text(original)
    broken = re.findall(r"^(?:FAILED|ERROR) (\S+)", clean.stdout, re.MULTILINE)
    for test in broken:  # a tree in flux: what fails unmutated cannot judge a mutant
        print(f"{args.target}: fails without a mutant, left out: {test}", file=sys.stderr)
        extra += ["--deselect", test]
    if clean.returncode and not broken:
        print(f"{args.target}: the tests do not run:\n{clean.stdout[-3000:]}")
        return 2
    limit = args.timeout or 3 * (time.time() - start) + 30
    if not args.subprocess:
        preload(clone, _module_name(target.module), target.isolation != "fork")
    pytest_args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "0", "-m",
                   "not slow", *target.tests, *extra]
    killed, survivors = 0, []
    src_lines = original.splitlines()
    for n, m in enumerate(found, 1):
        module.write_text(m.source)
        try:
            if args.subprocess:
                proc = replay.pytest_in(clone, [*target.tests, *extra], timeout=limit)
                dead = proc is None or proc.returncode != 0
            else:
                code = pytest_forked(pytest_args, limit)
                dead = code is None or code != 0
        finally:
            module.write_text(original)
        killed += dead
        if not dead:
            code = src_lines[m.line - 1].strip() if 0 < m.line <= len(src_lines) else ""
            survivors.append(f"line {m.line}: {m.what}: {code}")
        print(f"[{n}/{len(found)}] line {m.line} {m.what}: {'killed' if dead else 'SURVIVED'}"
              f" ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    score = 100.0 * killed / len(found) if found else float("nan")
    print(f"## {args.target}: {target.module} (mutation/quick.py)\n\n"
          f"score {score:.1f} % ({killed} killed of {len(found)}), "
          f"{time.time() - start:.0f} s; left out (failing unmutated): {broken or 'none'}\n")
    for s in survivors:
        print(f"- {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


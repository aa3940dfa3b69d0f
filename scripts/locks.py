"""The dependency locks in locks/: what they were made from, and whether they still agree.

`python scripts/locks.py check` — each lock's inputs hash equals the hash of today's
dependency lists in pyproject.toml / export/pyproject.toml, and every dependency is locked at
a version its specifier allows (a stale lock is caught, not shipped).
`python scripts/locks.py check --installed` — also: this environment has exactly the test
lock's versions (CI runs it right after installing through the lock).
`python scripts/locks.py finalize KIND RAW OUT` — turn pip-compile's output into a lock with our
header (used by scripts/update-locks.sh). `python scripts/locks.py diff OLD NEW` — what moved.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import platform
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
#: kind → (lock file, the extras of pyproject.toml it covers (None: export/ only), platform).
KINDS = {
    "test": ("test-cp311-linux-x86_64.txt", ("test", "ray"), "CPython 3.11, Linux x86_64"),
    "edge": ("edge-cp311-linux.txt", None, "CPython 3.11, Linux x86_64 and aarch64"),
}
PYTHON = (3, 11)
_HASH = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})", re.M)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", re.M)


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))["project"]


def requirements(kind: str) -> list[Requirement]:
    """The dependencies a lock must cover: export/'s always, the package's and extras for test."""
    edge = _project(ROOT / "export" / "pyproject.toml")
    reqs = [Requirement(r) for r in edge["dependencies"]]
    extras = KINDS[kind][1]
    if extras is not None:
        main = _project(ROOT / "pyproject.toml")
        reqs += [Requirement(r) for r in main["dependencies"]]
        for extra in extras:
            reqs += [Requirement(r) for r in main["optional-dependencies"][extra]]
    return reqs


def inputs_hash(kind: str) -> str:
    """sha256 of the normalised requirement strings and Python ranges (comments don't count)."""
    lines = sorted(str(r) for r in requirements(kind))
    lines.append("export:" + _project(ROOT / "export" / "pyproject.toml")["requires-python"])
    if KINDS[kind][1] is not None:
        lines.append("main:" + _project(ROOT / "pyproject.toml")["requires-python"])
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pins(text: str) -> dict[str, str]:
    """name → version of every `name==version` line of a lock."""
    return {canonicalize_name(n): v for n, v in _PIN.findall(text)}


def problems(kind: str) -> list[str]:
    """Why the lock of `kind` disagrees with the pyproject files (empty: it agrees)."""
    path = LOCKS / KINDS[kind][0]
    if not path.is_file():
        return [f"{path.relative_to(ROOT)} is missing: run scripts/update-locks.sh"]
    text = path.read_text(encoding="utf-8")
    out = []
    m = _HASH.search(text)
    if m is None or m.group(1) != inputs_hash(kind):
        out.append(f"{path.name} was made from other dependency lists than pyproject.toml's "
                   "today: run scripts/update-locks.sh")
    locked = pins(text)
    env = {"python_version": "%d.%d" % PYTHON, "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
    for req in requirements(kind):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name == "kerascls-edge":  # this repository's own ./export, installed editable
            continue
        if name not in locked:
            out.append(f"{req} is not in {path.name}")
        elif not req.specifier.contains(locked[name], prereleases=True):
            out.append(f"{req} does not allow the locked {name}=={locked[name]} ({path.name})")
    return out


def installed_problems() -> list[str]:
    """Packages of the test lock that this environment has at another version (or not at all)."""
    out = []
    for name, want in pins((LOCKS / KINDS["test"][0]).read_text(encoding="utf-8")).items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(f"{name}=={want} is locked but not installed")
            continue
        if have != want:
            out.append(f"{name} {have} is installed, the lock says {want}")
    return out


def finalize(kind: str, raw: Path, out: Path, tool: str) -> None:
    """Write pip-compile's output `raw` as the lock `out`: our header, no editable lines."""
    body = [re.sub(r"-c \S+/test\.txt$", "-c locks/" + KINDS["test"][0], ln)
            for ln in raw.read_text(encoding="utf-8").splitlines()
            if not ln.startswith("-e ") and not ln.startswith("#    pip-compile")]
    name, _, where = KINDS[kind]
    how = ('pip install -c locks/test-cp311-linux-x86_64.txt -e ./export -e ".[test,ray]"'
           if kind == "test" else "pip install -c locks/edge-cp311-linux.txt ./export")
    head = [f"# locks/{name}: exact versions for {where}.",
            f"# Install through it:  {how}",
            f"# Made by scripts/update-locks.sh on {dt.date.today()} ({tool}, Python "
            f"{platform.python_version()}); the default tests passed with these versions.",
            f"# inputs-sha256: {inputs_hash(kind)}  (pyproject dependency lists; "
            "scripts/locks.py check)"]
    out.write_text("\n".join(head + body).rstrip() + "\n", encoding="utf-8")


def diff(old: Path, new: Path) -> list[str]:
    """'name a -> b' for each package that moved, appeared or went."""
    a = pins(old.read_text(encoding="utf-8")) if old.is_file() else {}
    b = pins(new.read_text(encoding="utf-8"))
    return [f"{n} {a.get(n, '(new)')} -> {b.get(n, '(gone)')}"
            for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--installed", action="store_true")
    f = sub.add_parser("finalize")
    f.add_argument("kind", choices=sorted(KINDS))
    f.add_argument("raw", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--tool", default="pip-tools")
    d = sub.add_parser("diff")
    d.add_argument("old", type=Path)
    d.add_argument("new", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "finalize":
        finalize(args.kind, args.raw, args.out, args.tool)
        return 0
    if args.cmd == "diff":
        print("\n".join(diff(args.old, args.new)) or "nothing moved")
        return 0
    found = [p for kind in KINDS for p in problems(kind)]
    if args.installed:
        found += installed_problems()
    for p in found:
        print(f"locks: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

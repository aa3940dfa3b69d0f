"""A Camtrap DP package folder: written as a unit, replacing only what is ours.

Users are told to fill in `deployments.csv` (coordinates, setupBy, cameraModel) and
`datapackage.json` (title, contributors, licence), so a rerun must keep those edits and must
never replace tables somebody else wrote. Every file we write is recorded with its sha256 in
`datapackage.json` under `kerascls`; a file that no longer matches its record was edited.

New files are written into a staging folder inside the package folder (same filesystem) and
swapped in by rename, each old file moved aside first: a failure anywhere (disk full, a kill)
leaves the earlier package whole, and the next run finishes the roll-back of an interrupted swap.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, TextIO

from .bundle import EdgeError
from .userfiles import open_text, read_text, sha256_file

GENERATOR = "kerascls-edge"
RECORD_KEY = "kerascls"
DESCRIPTOR = "datapackage.json"
TABLE_FILES = ("deployments.csv", "media.csv", "observations.csv")
PACKAGE_FILES = (*TABLE_FILES, DESCRIPTOR)  # the swap order: the descriptor last
_NEW, _OLD, _SWAP = ".camtrapdp-new-", ".camtrapdp-old-", "swap.json"
_OVERWRITE = "pass --overwrite to replace"


@dataclass
class Existing:
    """What the folder held before this write: our record of it, or nothing to keep."""

    out_dir: Path
    overwrite: bool
    record: Optional[dict] = None       # datapackage.json's `kerascls` record (ours only)
    descriptor: Optional[dict] = None   # the datapackage.json now in the folder (ours only)
    kept: list = field(default_factory=list)  # "deployments.csv site_a.latitude", ...


def _sha_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def _our_descriptor(out_dir: Path) -> tuple[Optional[dict], str]:
    """(datapackage.json, "") when it is ours and records its files, else (None, why not)."""
    path = out_dir / DESCRIPTOR
    if not os.path.lexists(path):
        return None, "they are not from kerascls-edge (no datapackage.json of ours records them)"
    try:
        desc = json.loads(read_text(path, "datapackage.json"))
    except (EdgeError, ValueError, RecursionError) as e:
        return None, f"{DESCRIPTOR} is not readable JSON ({str(e).splitlines()[0][:120]})"
    record = desc.get(RECORD_KEY) if isinstance(desc, dict) else None
    if isinstance(record, dict) and record.get("generator") == GENERATOR and \
            isinstance(record.get("files"), dict):
        return desc, ""
    if GENERATOR in json.dumps(desc.get("sources") if isinstance(desc, dict) else None):
        return None, ("an older kerascls-edge wrote them without recording them, so your edits "
                      "cannot be told from ours (keep a copy of deployments.csv)")
    return None, "they are not from kerascls-edge (its datapackage.json is someone else's)"


def inspect(out_dir: Path, overwrite: bool) -> Existing:
    """Refuse, in one line, a folder whose package files are not ours or were edited (tables
    other than deployments.csv); returns what a rerun merges with."""
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise EdgeError(f"refusing to write a Camtrap DP package to {out_dir}: not a folder")
    present = [n for n in PACKAGE_FILES if os.path.lexists(out_dir / n)]
    folders = [n for n in present if (out_dir / n).is_dir()]
    if folders:  # never replaced, not even with --overwrite: a folder is not a table
        raise EdgeError(f"refusing to write a Camtrap DP package to {out_dir}: "
                        f"{', '.join(folders)} there is a folder")
    if not present:
        return Existing(out_dir, overwrite)
    desc, why = _our_descriptor(out_dir)
    if desc is None:
        if overwrite:
            return Existing(out_dir, overwrite)
        raise EdgeError(f"refusing to replace {', '.join(present)} in {out_dir}: {why}; "
                        f"{_OVERWRITE} them")
    existing = Existing(out_dir, overwrite, desc[RECORD_KEY], desc)
    edited = [n for n in TABLE_FILES[1:] if n in present and not existing_matches(existing, n)]
    if edited and not overwrite:
        raise EdgeError(f"refusing to replace {' and '.join(edited)} in {out_dir}: changed "
                        f"since kerascls-edge wrote them; {_OVERWRITE} them")
    return existing


def existing_matches(existing: Existing, name: str) -> bool:
    """Is the file still byte for byte what we recorded?"""
    path = existing.out_dir / name
    want = (existing.record or {}).get("files", {}).get(name)
    return bool(want) and os.path.isfile(path) and sha256_file(path, name) == want


# -- merging the user's edits ----------------------------------------------------------------


def _read_user_deployments(path: Path, fields: Sequence[str]) -> tuple[list[dict], str]:
    """The user's deployments.csv rows, or ([], why they cannot be merged)."""
    try:
        with open_text(path, "csv", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except (EdgeError, csv.Error, UnicodeDecodeError) as e:
        return [], f"it cannot be read ({str(e).splitlines()[0][:120]})"
    extra = [h for h in header if h not in fields]
    if extra or "deploymentID" not in header:
        return [], f"its columns are not Camtrap DP's ({', '.join(extra) or 'no deploymentID'})"
    ids = [r.get("deploymentID") for r in rows]
    if len(set(ids)) != len(ids) or any(r.get(None) for r in rows):
        return [], "it repeats a deploymentID or has rows longer than its header"
    return [{k: v or "" for k, v in r.items() if k is not None} for r in rows], ""


def merge_deployments(existing: Existing, new_rows: list[dict], fields: Sequence[str]
                      ) -> list[dict]:
    """The new deployments with every field the user changed since we wrote it kept.

    A field differs from what we generated last time (recorded per deployment, so an edit stays
    kept run after run): the user's value wins. Rows the user added stay; our own untouched rows
    that no longer have media go.
    """
    path = existing.out_dir / "deployments.csv"
    if existing.record is None or not os.path.lexists(path):
        return new_rows
    user, why = _read_user_deployments(path, fields)
    if why:
        if existing.overwrite:
            return new_rows
        raise EdgeError(f"refusing to replace {path}: you edited it and {why}, so your edits "
                        f"cannot be merged; fix it or {_OVERWRITE} it")
    wrote = existing.record.get("deployments") or {}
    new_by_id = {r["deploymentID"]: r for r in new_rows}
    merged = []
    for row in user:
        did = row["deploymentID"]
        was = wrote.get(did) if isinstance(wrote.get(did), dict) else {}
        new = new_by_id.pop(did, None)
        changed = [f for f in fields if row.get(f, "") != str(was.get(f, ""))]
        if new is None:
            if changed or did not in wrote:
                merged.append({f: row.get(f, "") for f in fields})
            continue
        existing.kept += [f"{did}.{f}" for f in changed if row.get(f, "") != new.get(f, "")]
        merged.append({f: row.get(f, "") if f in changed else new.get(f, "") for f in fields})
    return merged + list(new_by_id.values())


def merge_descriptor(existing: Existing, new: dict) -> dict:
    """datapackage.json: each top-level key the user changed (or added) since we wrote it is
    kept; the rest (resources, temporal, taxonomic, ...) are refreshed."""
    if existing.descriptor is None:
        return dict(new)
    wrote = existing.record.get("descriptor") or {}
    out = dict(new)
    for key, value in existing.descriptor.items():
        if key != RECORD_KEY and _sha_json(value) != wrote.get(key):
            out[key] = value
            if value != new.get(key):
                existing.kept.append(f"{DESCRIPTOR} {key}")
    return out


def make_record(files: dict, deployments: list[dict], descriptor: dict) -> dict:
    """What the next run compares against: our files' hashes and the values we generated."""
    return {"generator": GENERATOR, "files": files,
            "deployments": {r["deploymentID"]: {k: v for k, v in r.items() if v != ""}
                            for r in deployments},
            "descriptor": {k: _sha_json(v) for k, v in descriptor.items() if k != RECORD_KEY}}


def report_kept(existing: Existing, warn: Optional[TextIO]) -> None:
    if existing.kept:
        shown = ", ".join(existing.kept[:8]) + (" ..." if len(existing.kept) > 8 else "")
        print(f"{GENERATOR}: kept your edits ({len(existing.kept)}): {shown}",
              file=warn or sys.stderr)


# -- writing as a unit -----------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _restore(out_dir: Path, old: Path) -> None:
    """Undo a swap: the files moved aside go back, the files it created go."""
    try:
        created = json.loads((old / _SWAP).read_text("utf-8")).get("created", [])
    except (OSError, ValueError, AttributeError):
        created = []
    for name in PACKAGE_FILES:
        if os.path.lexists(old / name):
            os.replace(old / name, out_dir / name)
        elif name in created and os.path.lexists(out_dir / name):
            os.unlink(out_dir / name)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out_dir)


def _ours(path: Path, prefix: str) -> bool:
    return path.name.startswith(prefix) and path.is_dir() and not path.is_symlink()


def recover(out_dir: Path) -> None:
    """Finish what an interrupted run left: roll back a half-done swap, drop staged files."""
    if not out_dir.is_dir():
        return
    for path in sorted(out_dir.iterdir()):
        if _ours(path, _OLD):
            _restore(out_dir, path)
        elif _ours(path, _NEW):
            shutil.rmtree(path, ignore_errors=True)


def swap_in(out_dir: Path, staged: Path, names: Sequence[str]) -> None:
    """Move the staged files in, the old ones aside; on any failure put the old ones back."""
    old = Path(tempfile.mkdtemp(prefix=_OLD, dir=out_dir))
    created = [n for n in names if not os.path.lexists(out_dir / n)]
    with open(old / _SWAP, "w", encoding="utf-8") as f:
        json.dump({"created": created}, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(out_dir)
    try:
        for name in names:
            if name not in created:
                os.replace(out_dir / name, old / name)
            os.replace(staged / name, out_dir / name)
        _fsync_dir(out_dir)
    except BaseException:
        _restore(out_dir, old)
        raise
    shutil.rmtree(old, ignore_errors=True)


class Staging:
    """A folder for the new files inside the package folder; removed unless committed."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.dir = Path(tempfile.mkdtemp(prefix=_NEW, dir=out_dir))

    def path(self, name: str) -> Path:
        return self.dir / name

    def sha256(self, name: str) -> str:
        return sha256_file(self.dir / name, name)

    def commit(self, names: Sequence[str]) -> None:
        for name in names:
            with open(self.dir / name, "rb") as f:
                os.fsync(f.fileno())
        swap_in(self.out_dir, self.dir, names)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

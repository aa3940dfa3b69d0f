"""`kerascls-edge convert` and `predict --format camtrapdp`: results into other formats.

`predict --format camtrapdp -o DIR` runs as a normal MegaDetector-format run whose file lives
inside the package folder (`DIR/megadetector.json`, kept: it is the run's full record and makes
`--resume` work), then converts it — so a run and a later `convert` give the same package.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional

from .bundle import EdgeError
from .camtrapdp import PackageOptions, _check_out_dir, parse_location, parse_offset, write_package
from .runner import load_md

RESULTS_NAME = "megadetector.json"


def _package_options(args: argparse.Namespace, image_dir: Optional[str],
                     taxon_of=None, classified_by: Optional[str] = None) -> PackageOptions:
    parse_offset(args.utc_offset)  # a bad offset fails before anything is written
    opts = PackageOptions(
        image_dir=Path(image_dir) if image_dir else None, deployment=args.deployment,
        location=parse_location(args.location) if args.location else None,
        utc_offset=args.utc_offset, overwrite=getattr(args, "overwrite", False),
        detection_threshold=getattr(args, "detection_threshold", None) if not
        getattr(args, "detections", None) else args.detection_threshold,
        classified_by=classified_by)
    if taxon_of is not None:
        opts.taxon_of = taxon_of
    return opts


def prepare_package(args: argparse.Namespace) -> Path:
    """Check the package flags and create the folder before any image is classified."""
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise EdgeError(f"with --format camtrapdp, --output is a folder; {out} is a file")
    _package_options(args, None)
    _check_out_dir(out, args.overwrite)  # a foreign datapackage.json is refused up front
    return out


def _classified_by(clf) -> str:
    """The bundle's name and version (model.json `version`, else the model file's hash)."""
    from .journal import bundle_identity

    spec = clf.spec
    meta = spec.model_path.parent / "model.json"
    version = None
    try:
        version = json.loads(meta.read_text("utf-8")).get("version") if meta.exists() else None
    except (OSError, ValueError, AttributeError):
        pass
    version = version or f"sha256:{bundle_identity(spec.model_path, clf.labels)[:12]}"
    return f"{spec.name} {version}"


def package_from_run(args: argparse.Namespace, clf, package: Path) -> dict:
    """After `predict`: the package from the MegaDetector file the run just wrote."""
    md = load_md(package / RESULTS_NAME)
    image_dir = args.images[0] if args.detections else None
    from .taxonomy import taxon_lookup
    opts = _package_options(args, image_dir, taxon_lookup(clf), _classified_by(clf))
    opts.overwrite = True  # the folder was checked (and claimed) before the run
    return write_package(md, package, opts)


def _image_dir(args: argparse.Namespace, md: dict) -> str:
    if args.image_dir:
        return args.image_dir
    base = (md.get("info") or {}).get("image_base")
    if isinstance(base, str) and os.path.isdir(base):
        return base
    return os.path.dirname(os.path.abspath(args.results))


def _csv(md: dict, out: Path) -> int:
    """Our CSV from any MegaDetector file: whole-image results one row per image."""
    from .mdformat import write_csv

    labels = {int(k): v for k, v in (md.get("classification_categories") or {}).items()
              if str(k).isdigit()}
    whole = str((md.get("info") or {}).get("detector", "")).startswith("none")

    def records():
        for rec in md.get("images") or []:
            if whole and not rec.get("failure"):
                dets = rec.get("detections") or []
                rec = {**rec, "_k": (dets[0].get("classifications") or []) if dets else []}
            yield rec
    return write_csv(out, records(), labels)


def convert_cli(args: argparse.Namespace) -> int:
    md = load_md(Path(args.results))
    if args.to == "csv":
        from .outputs import check_output
        out = check_output(Path(args.output), [args.results], args.overwrite)
        n = _csv(md, out)
        print(json.dumps({"images": n, "output": str(out)}))
        return 0
    taxon_of = None
    if args.taxonomy:
        from .taxonomy import read_taxonomy
        names = [str(v) for v in (md.get("classification_categories") or {}).values()]
        taxon_of = read_taxonomy(Path(args.taxonomy), names).scientific_name
    opts = _package_options(args, _image_dir(args, md), taxon_of)
    print(json.dumps(write_package(md, Path(args.output), opts)))
    return 0

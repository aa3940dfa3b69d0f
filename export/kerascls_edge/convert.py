"""`kerascls-edge convert` and `predict --format camtrapdp`: results into other formats.

`predict --format camtrapdp -o DIR` runs as a normal MegaDetector-format run whose file lives
inside the package folder (`DIR/megadetector.json`, kept: it is the run's full record and makes
`--resume` work), then converts it — so a run and a later `convert` give the same package.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Optional

from .bundle import EdgeError
from .camtrapdp import (
    PackageOptions,
    check_deployment,
    check_out_dir,
    parse_location,
    parse_offset,
    write_package_stream,
)
from .mdstream import Results, typical_threshold, whole_image
from .userfiles import read_text

RESULTS_NAME = "megadetector.json"


def _package_options(args: argparse.Namespace, image_dir: Optional[str],
                     taxon_of=None, classified_by: Optional[str] = None) -> PackageOptions:
    parse_offset(args.utc_offset)  # a bad offset fails before anything is written
    if args.deployment is not None:
        check_deployment(args.deployment)
    opts = PackageOptions(
        image_dir=Path(image_dir) if image_dir else None, deployment=args.deployment,
        location=parse_location(args.location) if args.location else None,
        utc_offset=args.utc_offset, overwrite=args.overwrite,
        detection_threshold=getattr(args, "detection_threshold", None),
        classified_by=classified_by)
    if taxon_of is not None:
        opts.taxon_of = taxon_of
    return opts


def prepare_package(args: argparse.Namespace) -> Path:
    """Check the package flags and the folder (package files that are not ours, or that were
    edited beyond merging, are refused) and create it, before any image is classified."""
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise EdgeError(f"with --format camtrapdp, --output is a folder; {out} is a file")
    _package_options(args, None)
    check_out_dir(out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _classified_by(clf) -> str:
    """The bundle's name and version (model.json `version`, else the model file's hash)."""
    from .journal import bundle_identity

    spec = clf.spec
    meta = spec.model_path.parent / "model.json"
    version = None
    try:
        version = json.loads(read_text(meta, "model.json")).get("version") if meta.exists() \
            else None
    except (OSError, ValueError, AttributeError):
        pass
    version = version or f"sha256:{bundle_identity(spec.model_path, clf.labels)[:12]}"
    return f"{spec.name} {version}"


def package_from_run(args: argparse.Namespace, clf, package: Path) -> dict:
    """After `predict`: the package from the MegaDetector file the run just wrote, streamed
    (the folder is checked again: it is written only if it is still ours or --overwrite)."""
    results = Results(package / RESULTS_NAME)
    image_dir = args.images[0] if args.detections else None
    from .taxonomy import taxon_lookup
    opts = _package_options(args, image_dir, taxon_lookup(clf), _classified_by(clf))
    return write_package_stream(results.header, results.images(), package, opts)


def _image_dir(args: argparse.Namespace, md: dict) -> str:
    if args.image_dir:
        return args.image_dir
    base = (md.get("info") or {}).get("image_base")
    if isinstance(base, str) and os.path.isdir(base):
        return base
    return os.path.dirname(os.path.abspath(args.results))


def _ranking_row(ranking: list, cls: dict) -> dict:
    """label / confidence / top_k cells of a [[id, conf], ...] ranking (highest first)."""
    return {"label": cls[str(ranking[0][0])], "confidence": f"{float(ranking[0][1]):.4f}",
            "top_k": ";".join(f"{cls[str(c)]}:{float(p):.4f}" for c, p in ranking)}


def _detection_rows(rec: dict, results: Results, threshold: float) -> list[dict]:
    """A row per classified box and per unclassified box at or above `threshold` (label: its
    detection category, confidence: the detector's)."""
    rows = []
    for i, det in enumerate(rec["detections"] or []):
        ranking = det.get("classifications")
        if not ranking and det["conf"] < threshold:
            continue
        row = {"detection": i, "bbox": " ".join(f"{float(v):.4f}" for v in det["bbox"])}
        if ranking:
            row.update(_ranking_row(ranking, results.classification_categories))
        else:
            row.update(label=results.detection_categories.get(det["category"], det["category"]),
                       confidence=f"{float(det['conf']):.4f}")
        rows.append(row)
    return rows


def csv_rows(rec: dict, results: Results, whole: bool, threshold: float) -> list[dict]:
    """Every image gets at least one row: a failure row, a blank row (nothing detected, empty
    label), one row for a whole-image result, or one per box (`_detection_rows`)."""
    base = {"file": rec["file"], "datetime": rec.get("datetime") or "",
            "failure": rec.get("failure") or "", "warnings": ";".join(rec.get("warnings") or [])}
    seq = rec.get("sequence") or {}
    if seq.get("classifications"):
        c, p = seq["classifications"][0]
        base.update(sequence_id=str(seq.get("id", "")), sequence_confidence=f"{float(p):.4f}",
                    sequence_label=results.classification_categories[str(c)])
    if whole and ("video" in rec or "frames_processed" in rec):  # as predict's CSV: the
        from .mdformat import _video_rows  # video's row (its per-video label), then its frames

        names = {int(k): v for k, v in results.classification_categories.items()}
        return list(_video_rows(rec, base, names))
    if rec.get("failure"):
        return [base]
    dets = rec["detections"] or []
    if whole:
        ranking = (dets[0].get("classifications") or []) if dets else []
        return [{**base, **_ranking_row(ranking, results.classification_categories)}
                if ranking else base]
    return [{**base, **row} for row in _detection_rows(rec, results, threshold)] or [base]


def _csv(results: Results, out: Path, threshold: Optional[float]) -> int:
    """Our CSV from any MegaDetector file, streamed: memory does not grow with the file."""
    from .mdformat import CSV_FIELDS, _atomic_stream, csv_text
    from .spreadsheet import spreadsheet_row

    whole = whole_image(results.info)
    if threshold is None:
        threshold = typical_threshold(results.info)
    n = 0
    with _atomic_stream(out) as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for rec in results.images():
            writer.writerows(spreadsheet_row({k: csv_text(v) for k, v in row.items()})
                             for row in csv_rows(rec, results, whole, threshold))
            n += 1
    return n


def convert_cli(args: argparse.Namespace) -> int:
    if args.to == "csv":
        from .outputs import check_output
        out = check_output(Path(args.output), [args.results], args.overwrite)
        n = _csv(Results(Path(args.results)), out, args.detection_threshold)
        print(json.dumps({"images": n, "output": str(out)}))
        return 0
    out = Path(args.output)
    _package_options(args, None)  # bad flags and a folder we may not write fail first
    check_out_dir(out, args.overwrite)
    results = Results(Path(args.results))  # streamed: memory does not grow with the file
    taxon_of = None
    if args.taxonomy:
        from .taxonomy import read_taxonomy
        names = [str(v) for v in results.classification_categories.values()]
        taxon_of = read_taxonomy(Path(args.taxonomy), names).scientific_name
    opts = _package_options(args, _image_dir(args, results.header), taxon_of)
    print(json.dumps(write_package_stream(results.header, results.images(), out, opts)))
    return 0

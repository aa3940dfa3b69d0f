"""Camtrap DP 1.0 (TDWG) packages from MegaDetector-format results, ours or MegaDetector's own.

Camtrap DP is what GBIF, Agouti, Wildlife Insights and camtrapR read, so a run's results are
written as `datapackage.json` + `deployments.csv`, `media.csv`, `observations.csv`. Everything
is derived from the MegaDetector file (one path for `predict --format camtrapdp` and `convert`),
plus the images themselves for EXIF capture times when the file does not carry them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import mimetypes
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TextIO

from .bundle import EdgeError
from .journal import atomic_write_text

VERSION = "1.0.2"
_BASE = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE_URL = f"{_BASE}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
# Every column of the 1.0 table schemas, in their order (frictionless checks the header).
DEPLOYMENT_FIELDS = [
    "deploymentID", "locationID", "locationName", "latitude", "longitude",
    "coordinateUncertainty", "deploymentStart", "deploymentEnd", "setupBy", "cameraID",
    "cameraModel", "cameraDelay", "cameraHeight", "cameraDepth", "cameraTilt", "cameraHeading",
    "detectionDistance", "timestampIssues", "baitUse", "featureType", "habitat",
    "deploymentGroups", "deploymentTags", "deploymentComments"]
MEDIA_FIELDS = ["mediaID", "deploymentID", "captureMethod", "timestamp", "filePath",
                "filePublic", "fileName", "fileMediatype", "exifData", "favorite",
                "mediaComments"]
OBSERVATION_FIELDS = [
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
    "observationLevel", "observationType", "cameraSetupType", "scientificName", "count",
    "lifeStage", "sex", "behavior", "individualID", "individualPositionRadius",
    "individualPositionAngle", "individualSpeed", "bboxX", "bboxY", "bboxWidth", "bboxHeight",
    "classificationMethod", "classifiedBy", "classificationTimestamp",
    "classificationProbability", "observationTags", "observationComments"]
_TYPE_OF_CATEGORY = {"animal": "animal", "person": "human", "human": "human",
                     "vehicle": "vehicle"}
_OFFSET = re.compile(r"^(Z|[+-](\d\d):?(\d\d))$")
GENERATOR = "kerascls-edge"


@dataclass
class PackageOptions:
    """What a package needs that a MegaDetector file does not say."""

    image_dir: Optional[Path] = None        # the folder the results' file paths are relative to
    deployment: Optional[str] = None        # one deployment for everything (--deployment)
    location: Optional[tuple[float, float]] = None  # latitude, longitude of the deployments
    utc_offset: str = "Z"                   # camera clocks have no zone: the user says which
    detection_threshold: Optional[float] = None  # None: the file's typical threshold, else 0.2
    classified_by: Optional[str] = None     # default: the file's classifier (and version)
    taxon_of: Callable[[str], str] = field(default=lambda label: label)  # label -> sci. name
    title: str = "Camera trap classifications (kerascls-edge)"
    overwrite: bool = False


def parse_offset(text: str) -> timezone:
    """'Z', '+02:00' or '-0500' -> a timezone; anything else is a one-line error."""
    m = _OFFSET.match(text.strip())
    if not m:
        raise EdgeError(f"--utc_offset must be Z or +HH:MM / -HH:MM, got {text!r}")
    if m.group(1) == "Z":
        return timezone.utc
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    if delta > timedelta(hours=14):
        raise EdgeError(f"--utc_offset out of range: {text!r}")
    return timezone(-delta if text.strip()[0] == "-" else delta)


def parse_location(text: str) -> tuple[float, float]:
    """'LAT,LON' in decimal degrees (WGS84)."""
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise EdgeError(f"--location must be LAT,LON in decimal degrees, got {text!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise EdgeError(f"--location out of range: {text!r}")
    return lat, lon


def _iso_z(dt: datetime) -> str:
    """The schemas' datetime format (%Y-%m-%dT%H:%M:%S%z): Z or +HH:MM, as the standard's
    example writes it."""
    text = dt.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _capture_time(rec: dict, image_path: Path, tz: timezone) -> datetime:
    """The frame's time: the record's EXIF datetime, else the image's EXIF, else its mtime."""
    text = rec.get("datetime")
    if isinstance(text, str):
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y:%m:%d %H:%M:%S"):
            try:
                return datetime.strptime(text[:19], fmt).replace(tzinfo=tz)
            except ValueError:
                pass
    from PIL import Image

    from .decode import capture_time
    try:
        with Image.open(image_path) as img:
            _, iso = capture_time(img, None)
    except Exception:  # unreadable image: its mtime still says when it was written
        iso = None
    if iso:
        return datetime.fromisoformat(iso).replace(tzinfo=tz)
    try:
        return datetime.fromtimestamp(os.stat(image_path).st_mtime, timezone.utc)
    except OSError:
        raise EdgeError(f"cannot find image {image_path} for its capture time (pass "
                        "--image_dir, the folder the results' file paths are relative to)"
                        ) from None


def media_id(file: str) -> str:
    """A stable id: the same file gets the same id in every package made from it."""
    return hashlib.sha1(file.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _deployment_of(file: str, opts: PackageOptions, base: Path) -> str:
    from .taxonomy import deployment_of
    return deployment_of(file, opts.deployment, base.name)


def _file_path(image_path: Path, out_dir: Path, file: str) -> tuple[str, bool]:
    """filePath relative to the package (the standard's rule: no '..', no leading '/' or '.');
    (path, True) when the image lies under the package folder, else (results path, False)."""
    rel = os.path.relpath(os.path.abspath(image_path), os.path.abspath(out_dir))
    rel = rel.replace(os.sep, "/")
    if not rel.startswith("..") and not os.path.isabs(rel) and rel[:1] not in ".~":
        return rel, True
    return file.replace("\\", "/").lstrip("./~"), False


def _threshold(md: dict, opts: PackageOptions) -> float:
    if opts.detection_threshold is not None:
        return opts.detection_threshold
    meta = (md.get("info") or {}).get("detector_metadata") or {}
    value = meta.get("typical_detection_threshold")
    return float(value) if isinstance(value, (int, float)) else 0.2


def _classified_by(md: dict, opts: PackageOptions) -> str:
    if opts.classified_by:
        return opts.classified_by
    info = md.get("info") or {}
    who = [str(info[k]) for k in ("detector", "classifier") if info.get(k)]
    if str(info.get("detector", "")).startswith("none"):
        who = who[1:]
    return " + ".join(who) or "unknown model"


def _classification_time(md: dict) -> str:
    info = md.get("info") or {}
    for key in ("classification_completion_time", "detection_completion_time"):
        try:
            dt = datetime.strptime(str(info.get(key))[:19], "%Y-%m-%d %H:%M:%S")
            return _iso_z(dt.replace(tzinfo=timezone.utc))
        except ValueError:
            continue
    return ""


def _is_whole(det: dict) -> bool:
    return [round(float(v), 6) for v in det.get("bbox") or []] == [0.0, 0.0, 1.0, 1.0]


def _box(det: dict) -> dict:
    """Normalized top-left x, y, width, height, clipped into the image (schema: (0, 1])."""
    x, y, w, h = (float(v) for v in det["bbox"])
    x, y = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    w, h = min(max(w, 1e-6), 1.0 - x) or 1e-6, min(max(h, 1e-6), 1.0 - y) or 1e-6
    return {"bboxX": f"{x:.4f}", "bboxY": f"{y:.4f}", "bboxWidth": f"{max(w, 1e-4):.4f}",
            "bboxHeight": f"{max(h, 1e-4):.4f}"}


@dataclass
class _Ctx:
    md: dict
    opts: PackageOptions
    threshold: float
    classified_by: str
    when: str
    det_names: dict
    cls_names: dict
    first_taxon: Optional[int] = None  # classification ids from here on are rolled-up taxa


def _observations(rec: dict, ctx: _Ctx, base_row: dict) -> list[dict]:
    """One observation per detection at or above the threshold; none: one `blank` (or
    `unclassified` for a failure)."""
    common = {**base_row, "observationLevel": "media", "classificationMethod": "machine",
              "classifiedBy": ctx.classified_by, "classificationTimestamp": ctx.when}
    if rec.get("failure") or rec.get("detections") is None:
        return [{**common, "observationType": "unclassified", "classificationMethod": "",
                 "classifiedBy": "", "classificationTimestamp": "",
                 "observationComments": str(rec.get("failure", ""))[:300]}]
    rows = []
    for det in rec["detections"]:
        # A whole-image classifier's entry is its call (its empty classes give no entry);
        # only detector boxes are thresholded.
        if not _is_whole(det) and float(det.get("conf", 0)) < ctx.threshold:
            continue
        rows.append({**common, **_detection_fields(det, ctx)})
    if not rows:  # boxes all below the threshold: P(blank) ~ 1 - the best box's confidence
        confs = [float(d.get("conf", 0)) for d in rec["detections"]]
        rows.append({**common, "observationType": "blank",
                     "classificationProbability": f"{1.0 - max(confs):.4f}" if confs else ""})
    return rows


def _detection_fields(det: dict, ctx: _Ctx) -> dict:
    kind = _TYPE_OF_CATEGORY.get(str(ctx.det_names.get(str(det.get("category")), "")).lower(),
                                 "unknown")
    out: dict = {"observationType": kind, "count": "1",
                 "classificationProbability": f"{float(det.get('conf', 0)):.4f}"}
    if not _is_whole(det):
        out.update(_box(det))
    else:
        out["count"] = ""  # a whole-image classifier does not count individuals
    ranking = det.get("classifications") or []
    if ranking:
        top = ranking[0]
        label = str(ctx.cls_names.get(str(top[0]), top[0]))
        out["classificationProbability"] = f"{float(top[1]):.4f}"
        if kind == "animal":
            out["scientificName"] = ctx.opts.taxon_of(label)
        out["observationTags"] = f"label:{label}"
        if ctx.first_taxon is not None and int(top[0]) >= ctx.first_taxon and len(ranking) > 1:
            raw = ranking[1]  # rolled up: the raw top label follows the taxon
            out["observationTags"] += (f"|rolledUpFrom:{ctx.cls_names.get(str(raw[0]), raw[0])}"
                                       f"|rawProbability:{float(raw[1]):.4f}")
    return out


def _first_taxon(md: dict) -> Optional[int]:
    meta = ((md.get("info") or {}).get("classifier_metadata") or {}).get("taxonomy_rollup")
    value = meta.get("first_taxon_id") if isinstance(meta, dict) else None
    return value if isinstance(value, int) else None


def _rows(md: dict, out_dir: Path, opts: PackageOptions, warn: TextIO):
    """Media and observation rows, and per-deployment [start, end] times."""
    base = Path(opts.image_dir or (md.get("info") or {}).get("image_base") or ".")
    tz = parse_offset(opts.utc_offset)
    ctx = _Ctx(md, opts, _threshold(md, opts), _classified_by(md, opts),
               _classification_time(md), md.get("detection_categories") or {},
               md.get("classification_categories") or {}, _first_taxon(md))
    media, obs, spans, outside = [], [], {}, 0
    for rec in md.get("images") or []:
        file = str(rec["file"])
        path = Path(file) if os.path.isabs(file) else base / file
        when = _capture_time(rec, path, tz)
        dep = _deployment_of(file, opts, base)
        lo, hi = spans.get(dep, (when, when))
        spans[dep] = (min(lo, when), max(hi, when))
        mid = media_id(file)
        fpath, inside = _file_path(path, out_dir, file)
        outside += not inside
        media.append({"mediaID": mid, "deploymentID": dep, "timestamp": _iso_z(when),
                      "filePath": fpath, "filePublic": "false", "fileName": Path(file).name,
                      "fileMediatype": mimetypes.guess_type(file)[0] or "image/jpeg"})
        seq = rec.get("sequence") if isinstance(rec.get("sequence"), dict) else {}
        base_row = {"deploymentID": dep, "mediaID": mid, "eventStart": _iso_z(when),
                    "eventEnd": _iso_z(when),  # a burst (--smooth) is the event
                    "eventID": f"{dep}-{seq['id']}" if seq.get("id") is not None else ""}
        for k, row in enumerate(_observations(rec, ctx, base_row)):
            obs.append({"observationID": f"{mid}-{k}", **row})
    if outside:
        print(f"{GENERATOR}: warning: {outside} image(s) lie outside {out_dir}; their "
              f"media.filePath is relative to {base} (Camtrap DP wants paths relative to the "
              "package: write the package at or above the image folder)", file=warn)
    return media, obs, spans


def _csv_text(rows: Iterable[dict], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    from .mdformat import csv_text  # non-UTF-8 file names: escaped as `ls -b` shows them
    w.writerows({k: csv_text(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _deployments(spans: dict, opts: PackageOptions) -> list[dict]:
    lat, lon = opts.location if opts.location else ("", "")
    note = "" if opts.location else "location unknown: fill in latitude/longitude"
    return [{"deploymentID": d, "latitude": lat, "longitude": lon,
             "deploymentStart": _iso_z(lo), "deploymentEnd": _iso_z(hi),
             "deploymentComments": note} for d, (lo, hi) in sorted(spans.items())]


def _spatial(opts: PackageOptions) -> dict:
    lat, lon = opts.location or (0.0, 0.0)
    return {"type": "Point", "coordinates": [lon, lat]}


def descriptor(md: dict, media: list, obs: list, spans: dict, opts: PackageOptions) -> dict:
    """datapackage.json: the resources plus the package metadata the profile requires."""
    from . import __version__

    times = [t for span in spans.values() for t in span]
    names = sorted({o["scientificName"] for o in obs if o.get("scientificName")})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    resources = [{"name": t, "path": f"{t}.csv", "profile": "tabular-data-resource",
                  "format": "csv", "mediatype": "text/csv", "encoding": "utf-8",
                  "schema": f"{_BASE}/{t}-table-schema.json"} for t in TABLES]
    return {
        "resources": resources, "profile": PROFILE_URL, "created": now,
        "title": opts.title,
        "contributors": [{"title": _classified_by(md, opts), "role": "contributor"}],
        "sources": [{"title": GENERATOR, "version": __version__}],
        "project": {"title": opts.title, "samplingDesign": "opportunistic",
                    "captureMethod": ["activityDetection"], "individualAnimals": False,
                    "observationLevel": ["media"]},
        "spatial": _spatial(opts),
        "temporal": {"start": min(times).date().isoformat() if times else now[:10],
                     "end": max(times).date().isoformat() if times else now[:10]},
        "taxonomic": [{"scientificName": n} for n in names],
    }


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """The package folder: created if absent; an existing foreign package is not replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeError(f"refusing to write a Camtrap DP package to {out_dir}: not a folder")
    dp = out_dir / "datapackage.json"
    if dp.exists() and not overwrite:
        try:
            ours = GENERATOR in json.dumps(json.loads(dp.read_text("utf-8")).get("sources"))
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise EdgeError(f"refusing to replace {dp}: it is not a kerascls-edge package "
                            "(pass --overwrite to replace it)")
    out_dir.mkdir(parents=True, exist_ok=True)


def write_package(md: dict, out_dir: Path, opts: PackageOptions,
                  warn: Optional[TextIO] = None) -> dict:
    """Write the four files (each atomically, datapackage.json last); returns counts."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, opts.overwrite)
    if opts.location is None:
        print(f"{GENERATOR}: warning: no --location: deployments.csv has empty latitude/"
              "longitude, which Camtrap DP requires; fill them in before publishing",
              file=warn or sys.stderr)
    media, obs, spans = _rows(md, out_dir, opts, warn or sys.stderr)
    deps = _deployments(spans, opts)
    for name, rows, fields in (("deployments", deps, DEPLOYMENT_FIELDS),
                               ("media", media, MEDIA_FIELDS),
                               ("observations", obs, OBSERVATION_FIELDS)):
        atomic_write_text(out_dir / f"{name}.csv", _csv_text(rows, fields))
    atomic_write_text(out_dir / "datapackage.json",
                      json.dumps(descriptor(md, media, obs, spans, opts), indent=2) + "\n")
    return {"deployments": len(deps), "media": len(media), "observations": len(obs),
            "output": str(out_dir)}

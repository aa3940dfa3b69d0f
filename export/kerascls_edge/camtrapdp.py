"""Camtrap DP 1.0 (TDWG) packages from MegaDetector-format results, ours or MegaDetector's own.

Camtrap DP is what GBIF, Agouti, Wildlife Insights and camtrapR read, so a run's results are
written as `datapackage.json` + `deployments.csv`, `media.csv`, `observations.csv`. Everything
is derived from the MegaDetector file (one path for `predict --format camtrapdp` and `convert`),
plus the images themselves for EXIF capture times when the file does not carry them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import mimetypes
import os
import posixpath
import re
import sys
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TextIO

from . import packagedir
from .bundle import EdgeError
from .userfiles import open_regular
from .video import media_type

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
GENERATOR = packagedir.GENERATOR
# Formats whose EXIF capture time is read (opening nothing else: an ICO or other container can
# decode a whole embedded image inside Image.open).
_EXIF_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP")  # MPO opens through JPEG ("MPO": KeyError)


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
    """'Z', '+02:00' or '-0500' -> a timezone; anything else is a one-line error.

    Minutes are 00-59 (a clock never reads +12:75) and the offset lies within the world's
    range, -12:00 to +14:00."""
    m = _OFFSET.match(text.strip())
    if not m:
        raise EdgeError(f"--utc_offset must be Z or +HH:MM / -HH:MM, got {text!r}")
    if m.group(1) == "Z":
        return timezone.utc
    hours, minutes = int(m.group(2)), int(m.group(3))
    if minutes >= 60:
        raise EdgeError(f"--utc_offset minutes must be 00-59, got {text!r}")
    delta = timedelta(hours=hours, minutes=minutes)
    negative = text.strip()[0] == "-"
    if delta > (timedelta(hours=12) if negative else timedelta(hours=14)):
        raise EdgeError(f"--utc_offset out of range (-12:00 to +14:00): {text!r}")
    return timezone(-delta if negative else delta)


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
    """The frame's time: the record's EXIF datetime, else the image's EXIF, else its mtime;
    each a reading of the camera's clock, so each takes the ``--utc_offset`` zone."""
    text = rec.get("datetime")
    if isinstance(text, str):
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y:%m:%d %H:%M:%S"):
            try:
                return datetime.strptime(text[:19], fmt).replace(tzinfo=tz)
            except ValueError:
                pass
    from PIL import Image

    from .decode import capture_time
    try:  # a regular file only: a FIFO named like an image must not hang the package
        with open_regular(image_path, "image") as f, \
                Image.open(f, formats=_EXIF_FORMATS) as img:
            _, iso = capture_time(img, None)
    except Exception:  # unreadable image: its mtime still says when it was written
        iso = None
    if iso:
        return datetime.fromisoformat(iso).replace(tzinfo=tz)
    try:  # the time `ls -l` shows, read as the camera's clock: a card's FAT times are local
        return datetime.fromtimestamp(os.stat(image_path).st_mtime).replace(tzinfo=tz)
    except OSError:
        raise EdgeError(f"cannot find image {image_path} for its capture time (pass "
                        "--image_dir, the folder the results' file paths are relative to)"
                        ) from None


def normal_file(file: str) -> str:
    """A results path in one spelling: '/' separators, no './' or 'a/../' steps.

    `./IMG_0001.JPG` and `IMG_0001.JPG` are one image (one mediaID), and no path step can
    become a deployment called '.' or '..'."""
    path = posixpath.normpath(file.replace("\\", "/"))
    return "" if path == "." else path


def media_id(file: str) -> str:
    """A stable id: the same file gets the same id in every package made from it."""
    key = normal_file(file)
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _deployment_of(file: str, opts: PackageOptions, base_name: str) -> str:
    from .taxonomy import deployment_of
    return deployment_of(normal_file(file), opts.deployment, base_name)


def _safe_path(path: str) -> str:
    """The standard's filePath pattern (no leading '.', '/' or '~'; no '..' anywhere), met by
    percent-encoding the offending dots and tildes, as in a URL."""
    path = path.lstrip("/")
    path = re.sub(r"\.(?=\.)", "%2E", path)
    return {".": "%2E", "~": "%7E"}.get(path[:1], path[:1]) + path[1:]


def _file_path(image_path: str, out_abs: str, file: str) -> tuple[str, bool]:
    """filePath relative to the package (the standard's rule: no '..', no leading '/' or '.');
    (path, True) when the image lies under the package folder, else (results path, False)."""
    rel = os.path.relpath(os.path.abspath(image_path), out_abs)
    rel = rel.replace(os.sep, "/")
    if rel != ".." and not rel.startswith("../") and not os.path.isabs(rel):  # '.x', '..x': in
        return _safe_path(rel), True
    return _safe_path(normal_file(file).lstrip("./~") or "unnamed"), False


def _threshold(md: dict, opts: PackageOptions) -> float:
    if opts.detection_threshold is not None:
        return opts.detection_threshold
    meta = md["info"].get("detector_metadata")
    value = meta.get("typical_detection_threshold") if isinstance(meta, dict) else None
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


def _prob(value: object) -> float:
    """A confidence: a finite number in [0, 1]; anything else makes the entry malformed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"confidence {value!r} is not a number from 0 to 1")
    return float(value)


def _bbox(det: dict) -> list[float]:
    box = det.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in box):
        raise ValueError(f"bbox {box!r} is not four finite numbers")
    return [float(v) for v in box]


def _is_whole(det: dict) -> bool:
    return [round(v, 6) for v in _bbox(det)] == [0.0, 0.0, 1.0, 1.0]


def _box(det: dict) -> dict:
    """Normalized top-left x, y, width, height, clipped into the image (schema: (0, 1])."""
    x, y, w, h = _bbox(det)
    x, y = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    w, h = min(max(w, 1e-6), 1.0 - x) or 1e-6, min(max(h, 1e-6), 1.0 - y) or 1e-6
    return {"bboxX": f"{x:.4f}", "bboxY": f"{y:.4f}", "bboxWidth": f"{max(w, 1e-4):.4f}",
            "bboxHeight": f"{max(h, 1e-4):.4f}"}


@dataclass
class _Ctx:
    """What every image's rows need from the file's header and the options."""

    header: dict
    opts: PackageOptions
    out_dir: Path
    base: Path
    tz: timezone
    base_name: str  # the image folder's own name: the deployment of files at its top
    out_abs: str
    threshold: float
    classified_by: str
    when: str
    det_names: dict
    cls_names: dict
    first_taxon: Optional[int] = None  # classification ids from here on are rolled-up taxa


def _context(header: dict, out_dir: Path, opts: PackageOptions) -> _Ctx:
    info = header.get("info") if isinstance(header.get("info"), dict) else {}
    header = {**header, "info": info}
    base = info.get("image_base") if isinstance(info.get("image_base"), str) else None
    base = Path(opts.image_dir or base or ".")
    cats = [header.get(k) if isinstance(header.get(k), dict) else {}
            for k in ("detection_categories", "classification_categories")]
    return _Ctx(header, opts, out_dir, base, parse_offset(opts.utc_offset),
                base.resolve().name, os.path.abspath(out_dir),
                _threshold(header, opts), _classified_by(header, opts),
                _classification_time(header), *cats, _first_taxon(header))


def _observations(rec: dict, ctx: _Ctx, base_row: dict) -> list[dict]:
    """One observation per detection at or above the threshold; none: one `blank` (or
    `unclassified` for a failure)."""
    common = {**base_row, "observationLevel": "media", "classificationMethod": "machine",
              "classifiedBy": ctx.classified_by, "classificationTimestamp": ctx.when}
    dets = rec.get("detections")
    if rec.get("failure") or dets is None:
        return [{**common, "observationType": "unclassified", "classificationMethod": "",
                 "classifiedBy": "", "classificationTimestamp": "",
                 "observationComments": str(rec.get("failure", ""))[:300]}]
    if not isinstance(dets, list) or not all(isinstance(d, dict) for d in dets):
        raise ValueError("detections is not a list of objects")
    video = rec.get("video")
    if isinstance(video, dict) and video.get("classifications"):
        return [{**common, **_video_fields(video, ctx)}]
    rows = []
    for det in dets:
        # A whole-image classifier's entry is its call (its empty classes give no entry);
        # only detector boxes are thresholded.
        if not _is_whole(det) and _prob(det.get("conf", 0)) < ctx.threshold:
            continue
        rows.append({**common, **_detection_fields(det, ctx)})
    if not rows:  # boxes all below the threshold: P(blank) ~ 1 - the best box's confidence
        confs = [_prob(d.get("conf", 0)) for d in dets]
        rows.append({**common, "observationType": "blank",
                     "classificationProbability": f"{1.0 - max(confs):.4f}" if confs else ""})
    return rows


def _label(ctx: _Ctx, pair: object) -> tuple[str, float]:
    """A [category_id, conf] pair: the id must name one of the file's classes."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"classification {pair!r} is not [category_id, confidence]")
    if str(pair[0]) not in ctx.cls_names:
        raise ValueError(f"classification id {pair[0]!r} is not in classification_categories")
    return str(ctx.cls_names[str(pair[0])]), _prob(pair[1])


def _detection_fields(det: dict, ctx: _Ctx) -> dict:
    kind = _TYPE_OF_CATEGORY.get(str(ctx.det_names.get(str(det.get("category")), "")).lower(),
                                 "unknown")
    out: dict = {"observationType": kind, "count": "1",
                 "classificationProbability": f"{_prob(det.get('conf', 0)):.4f}"}
    if not _is_whole(det):
        out.update(_box(det))
    else:
        out["count"] = ""  # a whole-image classifier does not count individuals
    ranking = det.get("classifications") or []
    if not isinstance(ranking, list):
        raise ValueError(f"classifications {ranking!r} is not a list")
    if ranking:
        label, prob = _label(ctx, ranking[0])
        out["classificationProbability"] = f"{prob:.4f}"
        if kind == "animal":
            out["scientificName"] = ctx.opts.taxon_of(label)
        out["observationTags"] = f"label:{label}"
        top_id = str(ranking[0][0])
        if ctx.first_taxon is not None and top_id.isdigit() and \
                int(top_id) >= ctx.first_taxon and len(ranking) > 1:
            raw, raw_p = _label(ctx, ranking[1])  # rolled up: the raw top label follows
            out["observationTags"] += f"|rolledUpFrom:{raw}|rawProbability:{raw_p:.4f}"
    return out


def _video_fields(video: dict, ctx: _Ctx) -> dict:
    """A video's one observation: its per-video label (the ``video`` block, by its rule), not
    one per frame, which would count one animal once a second. ``blank`` when the label is
    one of the bundle's empty classes; ``count`` the most boxes on one frame (detector)."""
    from .mdformat import detection_category

    label, prob = _label(ctx, video["classifications"][0])
    meta = ctx.header["info"].get("classifier_metadata")
    empty = meta.get("empty_classes") if isinstance(meta, dict) else None
    if isinstance(empty, list) and label in empty:
        return {"observationType": "blank", "classificationProbability": f"{prob:.4f}"}
    frames = video.get("frames") if isinstance(video.get("frames"), list) else []
    boxes = [f["boxes"] for f in frames if isinstance(f, dict) and isinstance(f.get("boxes"),
                                                                            int)]
    det = {"category": "", "classifications": video["classifications"],
           "bbox": [0.0, 0.0, 1.0, 1.0]}
    name = {"1": "animal", "2": "person", "3": "vehicle"}[detection_category(label)]
    det["category"] = next((k for k, v in ctx.det_names.items() if v == name), "")
    out = _detection_fields(det, ctx)
    out["observationType"] = _TYPE_OF_CATEGORY[name]
    if out["observationType"] == "animal":
        out["scientificName"] = ctx.opts.taxon_of(label)
    out["count"] = str(max(boxes)) if boxes else ""
    return out


def _video_end(rec: dict, when: datetime) -> datetime:
    """A video's event ends at its last classified frame (its start: the capture time)."""
    video = rec.get("video") if isinstance(rec.get("video"), dict) else {}
    times = [f.get("time") for f in video.get("frames") or [] if isinstance(f, dict)]
    times = [t for t in times if isinstance(t, (int, float)) and math.isfinite(t) and t >= 0]
    return when + timedelta(seconds=max(times)) if times else when


def _first_taxon(md: dict) -> Optional[int]:
    meta = md["info"].get("classifier_metadata")
    meta = meta.get("taxonomy_rollup") if isinstance(meta, dict) else None
    value = meta.get("first_taxon_id") if isinstance(meta, dict) else None
    return value if isinstance(value, int) else None


def _image_rows(rec: dict, ctx: _Ctx) -> tuple[dict, list[dict], str, datetime, bool]:
    """One results entry: its media row, its observation rows, its deployment and time, and
    whether the image lies inside the package folder."""
    file = rec.get("file")
    if not isinstance(file, str) or not normal_file(file):
        raise ValueError(f"file {file!r} is not a path")
    path = os.path.join(ctx.base, file)  # an absolute `file` stays as it is
    when = _capture_time(rec, Path(path), ctx.tz)
    dep = _deployment_of(file, ctx.opts, ctx.base_name)
    mid = media_id(file)
    fpath, inside = _file_path(path, ctx.out_abs, file)
    media = {"mediaID": mid, "deploymentID": dep, "timestamp": _iso_z(when),
             "filePath": fpath, "filePublic": "false",
             "fileName": posixpath.basename(normal_file(file)),  # 'a\\b.jpg': b.jpg
             "fileMediatype": media_type(file) or mimetypes.guess_type(file)[0] or
             "image/jpeg"}
    if not media["fileMediatype"].startswith(("image/", "video/", "audio/")):
        media["fileMediatype"] = "image/jpeg"
    seq = rec.get("sequence") if isinstance(rec.get("sequence"), dict) else {}
    base_row = {"deploymentID": dep, "mediaID": mid, "eventStart": _iso_z(when),
                "eventEnd": _iso_z(_video_end(rec, when)),  # a burst (--smooth), a video
                "eventID": f"{dep}-{seq['id']}" if seq.get("id") is not None else ""}
    obs = [{"observationID": f"{mid}-{k}", **row}
           for k, row in enumerate(_observations(rec, ctx, base_row))]
    return media, obs, dep, when, inside


def _entry_rows(i: int, rec: object, ctx: _Ctx):
    """_image_rows, with a malformed entry a one-line error naming the entry and its file."""
    try:
        if not isinstance(rec, dict):
            raise ValueError(f"expected an object, got {type(rec).__name__}")
        return _image_rows(rec, ctx)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        name = rec.get("file") if isinstance(rec, dict) else None
        raise EdgeError(f"malformed results entry images[{i}]"
                        f"{f' ({name!r})' if isinstance(name, str) else ''}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


class _Stats:
    """Per-deployment time spans, scientific names and the mediaIDs seen (8 bytes each):
    all a streamed package keeps."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[datetime, datetime]] = {}
        self.names: set[str] = set()
        self.ids = array("Q")
        self.media = self.observations = self.outside = self.gone = 0

    def add(self, media: dict, obs: list[dict], dep: str, when: datetime, inside: bool) -> None:
        lo, hi = self.spans.get(dep, (when, when))
        self.spans[dep] = (min(lo, when), max(hi, when))
        self.names.update(o["scientificName"] for o in obs if o.get("scientificName"))
        self.ids.append(int(media["mediaID"], 16))
        self.media += 1
        self.observations += len(obs)
        self.outside += not inside

    def duplicate(self) -> Optional[str]:
        """A mediaID that occurs twice (the same image listed twice), else None."""
        import numpy as np

        ids = np.sort(np.frombuffer(self.ids, dtype=np.uint64)) if self.ids else None
        if ids is None or ids.size < 2:
            return None
        same = ids[1:][ids[1:] == ids[:-1]]
        return f"{int(same[0]):016x}" if same.size else None


def _writer(f: TextIO, fields: Sequence[str]) -> csv.DictWriter:
    w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    return w


def _cells(row: dict) -> dict:
    from .mdformat import csv_text  # non-UTF-8 file names: escaped as `ls -b` shows them
    return {k: csv_text(v) for k, v in row.items()}


def _gone_failure(rec: object, ctx: _Ctx) -> bool:
    """A failure entry whose file no longer exists (deleted, the card reformatted since): it
    has no capture time and no observation to give, so it is left out with a warning instead
    of stopping the whole package."""
    if not isinstance(rec, dict) or not rec.get("failure") or isinstance(rec.get("datetime"), str):
        return False
    file = rec.get("file")
    return isinstance(file, str) and not os.path.exists(os.path.join(ctx.base, file))


def _stream_tables(header: dict, images: Iterable[object], ctx: _Ctx,
                   staging: packagedir.Staging) -> _Stats:
    """media.csv and observations.csv, written row by row as the entries are read."""
    stats = _Stats()
    with open(staging.path("media.csv"), "w", encoding="utf-8", newline="") as fm, \
            open(staging.path("observations.csv"), "w", encoding="utf-8", newline="") as fo:
        media_w, obs_w = _writer(fm, MEDIA_FIELDS), _writer(fo, OBSERVATION_FIELDS)
        for i, rec in enumerate(images):
            if _gone_failure(rec, ctx):
                stats.gone += 1
                continue
            media, obs, dep, when, inside = _entry_rows(i, rec, ctx)
            stats.add(media, obs, dep, when, inside)
            media_w.writerow(_cells(media))
            obs_w.writerows(_cells(o) for o in obs)
    return stats


def _refuse_duplicates(stats: _Stats, staging: packagedir.Staging) -> None:
    """Camtrap DP's primary keys: one row per image. The same image twice is refused."""
    dup = stats.duplicate()
    if dup is None:
        return
    with open(staging.path("media.csv"), encoding="utf-8", newline="") as f:
        name = next((r["filePath"] for r in csv.DictReader(f) if r["mediaID"] == dup), dup)
    raise EdgeError(f"the results list {name!r} more than once (mediaID {dup}): each image "
                    "must be one entry; remove the duplicate entries")


def _deployments(spans: dict, opts: PackageOptions) -> list[dict]:
    lat, lon = (str(v) for v in opts.location) if opts.location else ("", "")
    note = "" if opts.location else "location unknown: fill in latitude/longitude"
    return [{"deploymentID": d, "latitude": lat, "longitude": lon,
             "deploymentStart": _iso_z(lo), "deploymentEnd": _iso_z(hi),
             "deploymentComments": note} for d, (lo, hi) in sorted(spans.items())]


def _spatial(opts: PackageOptions) -> dict:
    lat, lon = opts.location or (0.0, 0.0)
    return {"type": "Point", "coordinates": [lon, lat]}


def descriptor(md: dict, spans: dict, names: Iterable[str], opts: PackageOptions) -> dict:
    """datapackage.json: the resources plus the package metadata the profile requires."""
    from . import __version__

    times = [t for span in spans.values() for t in span]
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
        "taxonomic": [{"scientificName": n} for n in sorted(names)],
    }


def check_out_dir(out_dir: Path, overwrite: bool) -> packagedir.Existing:
    """Refuse a folder whose package files are not ours (or were edited beyond merging)
    before anything is computed (see packagedir.inspect); a swap an earlier run left half-done
    is rolled back first."""
    from .journal import OutputLock

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return packagedir.inspect(out_dir, overwrite)
    with OutputLock(out_dir / packagedir.DESCRIPTOR):  # no other writer is mid-swap
        packagedir.recover(out_dir)
        return packagedir.inspect(out_dir, overwrite)


def _finish(header: dict, stats: _Stats, existing: packagedir.Existing,
            staging: packagedir.Staging, opts: PackageOptions) -> list[dict]:
    """deployments.csv (merged with the user's edits) and datapackage.json (with our record)."""
    new_deps = _deployments(stats.spans, opts)
    deps = packagedir.merge_deployments(existing, new_deps, DEPLOYMENT_FIELDS)
    with open(staging.path("deployments.csv"), "w", encoding="utf-8", newline="") as f:
        _writer(f, DEPLOYMENT_FIELDS).writerows(_cells(r) for r in deps)
    new_desc = descriptor(header, stats.spans, stats.names, opts)
    desc = packagedir.merge_descriptor(existing, new_desc)
    files = {n: staging.sha256(n) for n in packagedir.TABLE_FILES}
    desc[packagedir.RECORD_KEY] = packagedir.make_record(files, new_deps, new_desc)
    with open(staging.path(packagedir.DESCRIPTOR), "w", encoding="utf-8") as f:
        f.write(json.dumps(desc, indent=2) + "\n")
    return deps


def write_package_stream(header: dict, images: Iterable[object], out_dir: Path,
                         opts: PackageOptions, warn: Optional[TextIO] = None) -> dict:
    """Write the package from a results header and its image entries, read one at a time.

    Rows go to a staging folder as they are made; the four files are swapped in together only
    when all are written, so the folder holds the old package or the new one, never a mix."""
    from .journal import OutputLock

    out_dir, warn = Path(out_dir), warn or sys.stderr
    ctx = _context(header, out_dir, opts)
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise EdgeError(f"refusing to write a Camtrap DP package to {out_dir}: not a folder")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:  # one writer per package: a second run refuses instead of mixing two packages
        with OutputLock(out_dir / packagedir.DESCRIPTOR):
            existing = check_out_dir(out_dir, opts.overwrite)  # recovers, then inspects
            with packagedir.Staging(out_dir) as staging:
                stats = _stream_tables(header, images, ctx, staging)
                _refuse_duplicates(stats, staging)
                deps = _finish(ctx.header, stats, existing, staging, opts)
                staging.commit(packagedir.PACKAGE_FILES)
    except BaseException:
        if created:  # a folder this run made stays only if the package is in it
            try:
                out_dir.rmdir()
            except OSError:
                pass
        raise
    _warnings(stats, ctx, existing, warn)
    summary = {"deployments": len(deps), "media": stats.media,
               "observations": stats.observations, "output": str(out_dir)}
    if existing.kept:
        summary["kept_edits"] = existing.kept
    if stats.gone:
        summary["left_out_failures"] = stats.gone
    return summary


def _warnings(stats: _Stats, ctx: _Ctx, existing: packagedir.Existing, warn: TextIO) -> None:
    if ctx.opts.location is None:
        print(f"{GENERATOR}: warning: no --location: deployments.csv has empty latitude/"
              "longitude for new deployments, which Camtrap DP requires; fill them in before "
              "publishing (a rerun keeps what you fill in)", file=warn)
    if stats.gone:
        print(f"{GENERATOR}: warning: {stats.gone} failure entr{'y' if stats.gone == 1 else 'ies'}"
              " for files that no longer exist left out of media.csv (no capture time to give)",
              file=warn)
    if stats.outside:
        print(f"{GENERATOR}: warning: {stats.outside} image(s) lie outside {ctx.out_dir}; "
              f"their media.filePath is relative to {ctx.base} (Camtrap DP wants paths "
              "relative to the package: write the package at or above the image folder)",
              file=warn)
    packagedir.report_kept(existing, warn)


def write_package(md: dict, out_dir: Path, opts: PackageOptions,
                  warn: Optional[TextIO] = None) -> dict:
    """write_package_stream for a results file already in memory; returns counts."""
    header = {k: v for k, v in md.items() if k != "images"}
    return write_package_stream(header, md.get("images") or [], out_dir, opts, warn)


def check_deployment(text: str) -> str:
    """--deployment: a name, never empty, '.' or '..' (which read as paths, not sites)."""
    if text.strip() in ("", ".", ".."):
        raise EdgeError(f"--deployment must name the deployment, got {text!r}")
    return text

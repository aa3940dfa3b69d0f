"""Camera-trap training sources: MegaDetector crops (``md:``) and Camtrap DP (``camtrapdp:``).

Field biologists have image-level labels and detector output, not hand-drawn boxes, and every
peer trains on detector crops. ``md:RESULTS.json[:LABELS.csv]`` turns each detection of the
chosen categories at or above the threshold into one crop labelled with its image's label;
the crop rule (padding, square, minimum size) is :func:`kerascls_edge.decode.crop_region`,
the same function ``kerascls-edge predict --detections`` applies, and it is written into the
run's config and the bundle's model.json.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from kerascls.config import TrainConfig
from kerascls.data.decode import upright_size
from kerascls.data.files import (
    FileSource,
    csv_rows,
    existing,
    read_json,
    read_text,
    require_every_class,
)
from kerascls.data.records import Record
from kerascls.errors import UserError
from kerascls_edge.decode import crop_region
from kerascls_edge.video import is_video

log = logging.getLogger("kerascls.data")
# kerascls-edge predict's default: train on the boxes the device will classify
DEFAULT_DETECTION_THRESHOLD = 0.2


@dataclass(frozen=True)
class CropRule:
    """How a detector box becomes a training crop (model.json ``crop``)."""

    padding: float = 0.0
    square: bool = False
    min_px: int = 0

    def as_json(self) -> dict:
        return {"padding": self.padding, "square": self.square, "min_px": self.min_px}


@dataclass(frozen=True)
class DetectionOptions:
    """Which detections become crops, and what an image without one becomes."""

    threshold: float = DEFAULT_DETECTION_THRESHOLD
    categories: tuple[str, ...] = ("animal",)
    crop: CropRule = CropRule()
    empty_class: str = ""


def options_from_config(cfg: TrainConfig) -> DetectionOptions:
    """The detection options of a run's config (``TrainConfig.load`` fills fields that an
    older config.json lacks with their defaults)."""
    cats = cfg.detection_categories or "animal"
    return DetectionOptions(
        float(cfg.detection_threshold),
        tuple(c.strip() for c in cats.split(",") if c.strip()),
        CropRule(float(cfg.crop_padding), bool(cfg.square_crops), int(cfg.min_crop_px)),
        cfg.empty_class)


class CropSource(FileSource):
    """A FileSource whose boxes are normalized detector boxes until :meth:`check` knows each
    file's size: then the crop rule turns them into pixel boxes and drops tiny ones."""

    crop: CropRule = CropRule()

    def check(self) -> "CropSource":
        super().check()
        out, small = [], 0
        for r in self.records:
            if r.bbox is None:
                out.append(r)
                continue
            W, H = upright_size(r)
            if min(r.bbox[2] * W, r.bbox[3] * H) < self.crop.min_px:  # the detector's box
                small += 1
                continue
            x, y, w, h = crop_region(r.bbox, (W, H), self.crop.padding, self.crop.square)
            out.append(replace(r, bbox=(x * W, y * H, w * W, h * H)))
        if small:
            log.warning("%s: %d crops under %d px dropped (--min_crop_px)", self.name, small,
                        self.crop.min_px)
        if not out:
            raise UserError(f"{self.name}: no crop left (every box is under --min_crop_px)")
        self.records = out
        require_every_class(out, self.class_names, self.name, "crop or ")
        return self


def _load_md(file: Path) -> dict:
    """A MegaDetector batch output file (1.0–1.6), checked where this reader looks."""
    md = read_json(file, "MegaDetector file")
    if not isinstance(md, dict) or not isinstance(md.get("images"), list):
        raise UserError(f"{file}: not a MegaDetector results file (no 'images' list)")
    cats = md.get("detection_categories", {"1": "animal", "2": "person", "3": "vehicle"})
    if not isinstance(cats, dict):
        raise UserError(f"{file}: 'detection_categories' is not an object")
    for i, im in enumerate(md["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("file"), str):
            raise UserError(f"{file}: images[{i}] has no 'file' string")
        dets = im.get("detections") or []
        for j, d in enumerate(dets if isinstance(dets, list) else [None]):
            box = d.get("bbox") if isinstance(d, dict) else None
            if not (isinstance(box, list) and len(box) == 4
                    and all(isinstance(v, (int, float)) for v in box)
                    and isinstance(d.get("conf"), (int, float))):
                raise UserError(f"{file}: images[{i}].detections[{j}] needs 'conf' and a "
                                 "'bbox' of 4 numbers")
    return md


def _category_ids(cats: dict, wanted: tuple[str, ...], file: Path) -> set[str]:
    """Category ids for names or ids (``animal`` or ``1``)."""
    ids = set()
    for w in wanted:
        hit = {k for k, v in cats.items() if str(v) == w or str(k) == w}
        if not hit:
            raise UserError(f"{file}: detection category {w!r} is not among "
                             f"{', '.join(f'{k}={v}' for k, v in cats.items())}")
        ids |= hit
    return {str(i) for i in ids}


def md_source(rest: str, opts: DetectionOptions) -> CropSource:
    """``md:RESULTS.json[:LABELS.csv]``: one crop per qualifying detection (labels.csv beside
    the MD file by default); MD paths are relative to the MD file's folder."""
    md_part, _, labels_part = rest.partition(":")
    file = existing(md_part, "MegaDetector file")
    labels_file = existing(labels_part or str(file.parent / "labels.csv"), "labels CSV")
    md = _load_md(file)
    cats = _category_ids(md.get("detection_categories") or {"1": "animal"},
                         opts.categories, file)
    rows = csv_rows(labels_file)
    if not rows or not {"filepath", "label"} <= set(rows[0]):
        raise UserError(f"{labels_file}: needs a header with filepath and label columns")
    labels = {(labels_file.parent / r["filepath"]).resolve(): r for r in rows}
    records, unlabeled, no_box, videos = [], 0, 0, 0
    for im in md["images"]:
        path = (file.parent / im["file"]).resolve()
        if is_video(path):  # its boxes sit on detector frames the sampling rule may not take
            videos += 1
            continue
        row = labels.get(path)
        if row is None or not (row.get("label") or "").strip():
            unlabeled += 1
            continue
        common = dict(path=str(path), location=row.get("location") or "",
                      seq_id=row.get("seq_id") or "", datetime=row.get("datetime") or "")
        label = row["label"].strip()
        boxes = [] if im.get("failure") or label == opts.empty_class else [
            tuple(float(v) for v in d["bbox"]) for d in im.get("detections") or []
            if str(d.get("category")) in cats and d["conf"] >= opts.threshold]
        if boxes:
            records += [Record(labels=(label,), bbox=b, **common) for b in boxes]
        elif opts.empty_class and not im.get("failure"):
            records.append(Record(labels=(opts.empty_class,), **common))
        else:
            no_box += 1
    if videos:
        log.warning("%s: %d video entries are left out: md: trains on photos' boxes (train on "
                    "videos with folder:, csv: or camtrapdp:)", file, videos)
    if unlabeled:
        log.warning("%s: %d images have no label in %s and are left out", file, unlabeled,
                    labels_file)
    if no_box:
        log.warning("%s: %d labelled images have no detection at or above %g and are left out "
                    "(--empty_class NAME keeps them as that class)", file, no_box, opts.threshold)
    if not records:
        raise UserError(f"{file}: no detection at or above {opts.threshold} of "
                         f"{'/'.join(opts.categories)} in an image labelled in {labels_file}")
    src = CropSource(f"md:{rest}", sorted({r.labels[0] for r in records}), records)
    src.crop = opts.crop
    return src


# -- Camtrap DP ---------------------------------------------------------------------------------

CAMTRAPDP_FIELDS = {  # Camtrap DP 1.0 table schemas: the columns each table may have
    "media": ("mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic",
              "fileName", "fileMediatype", "exifData", "favorite", "mediaComments"),
    "observations": (
        "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
        "observationLevel", "observationType", "cameraSetupType", "scientificName", "count",
        "lifeStage", "sex", "behavior", "individualID", "individualPositionRadius",
        "individualPositionAngle", "individualSpeed", "bboxX", "bboxY", "bboxWidth",
        "bboxHeight", "classificationMethod", "classifiedBy", "classificationTimestamp",
        "classificationProbability", "observationTags", "observationComments"),
    "deployments": (
        "deploymentID", "locationID", "locationName", "latitude", "longitude",
        "coordinateUncertainty", "deploymentStart", "deploymentEnd", "setupBy", "cameraID",
        "cameraModel", "cameraDelay", "cameraHeight", "cameraDepth", "cameraTilt",
        "cameraHeading", "detectionDistance", "timestampIssues", "baitUse", "featureType",
        "habitat", "deploymentGroups", "deploymentTags", "deploymentComments"),
}
CAMTRAPDP_REQUIRED = {
    "media": ("mediaID", "deploymentID", "timestamp", "filePath", "fileMediatype"),
    "observations": ("observationID", "deploymentID", "eventStart", "eventEnd",
                     "observationLevel", "observationType"),
    "deployments": ("deploymentID",),
}
BBOX = ("bboxX", "bboxY", "bboxWidth", "bboxHeight")
TRAINABLE_MEDIA = ("image/", "video/")  # fileMediatype prefixes; a video's sampled frames


@dataclass
class _Row:
    """One CSV row and where it came from (for one-line errors)."""

    file: Path
    line: int
    data: dict

    def fail(self, why: str) -> UserError:
        return UserError(f"{self.file}: line {self.line}: {why}")

    def time(self, key: str):
        from datetime import datetime
        text = (self.data.get(key) or "").strip()
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise self.fail(f"{key} {text!r} is not an ISO 8601 date-time") from None
        if value.tzinfo is None:
            raise self.fail(f"{key} {text!r} has no time zone (Camtrap DP needs one)")
        return value


def _table(pkg: Path, descriptor: dict, name: str, required: bool = True) -> list[_Row]:
    """Rows of one resource of the package, its columns checked against the standard."""
    res = next((r for r in descriptor.get("resources") or [] if isinstance(r, dict)
                and r.get("name") == name), None)
    if res is None or not isinstance(res.get("path"), str):
        if required:
            raise UserError(f"{pkg}: no {name!r} resource with a path")
        return []
    file = pkg.parent / res["path"]
    if not file.exists():
        raise UserError(f"{pkg}: resource {name!r}: {file} not found")
    reader = csv.DictReader(io.StringIO(read_text(file, "CSV"), newline=""))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in CAMTRAPDP_FIELDS[name]]
    if unknown:
        raise UserError(f"{file}: line 1: unknown column {unknown[0]!r} (not in the Camtrap DP "
                         f"{name} schema)")
    missing = [c for c in CAMTRAPDP_REQUIRED[name] if c not in header]
    if missing:
        raise UserError(f"{file}: line 1: required column {missing[0]!r} is missing")
    rows = []
    try:
        for row in reader:
            rows.append(_Row(file, reader.line_num, row))
    except csv.Error as e:
        raise UserError(f"{file}: line {reader.line_num}: {e}") from None
    return rows


def _observation_label(row: _Row) -> str:
    """scientificName for animals; the observation type for blank/human/vehicle/…"""
    kind = (row.data.get("observationType") or "").strip()
    if kind == "animal":
        return (row.data.get("scientificName") or "").strip()
    return kind


def _bbox(row: _Row) -> tuple[float, float, float, float] | None:
    values = [(row.data.get(k) or "").strip() for k in BBOX]
    if not any(values):
        return None
    try:
        box = tuple(float(v) for v in values)
    except ValueError:
        raise row.fail(f"bbox {values} is not 4 numbers") from None
    if not (all(0 <= v <= 1 for v in box) and box[2] > 0 and box[3] > 0):
        raise row.fail(f"bbox {values} is not a box of the image (fractions 0..1)")
    return box


def _media_files(pkg: Path, media: list[_Row], root: Path | None) -> dict[str, tuple]:
    """mediaID → (path, row) for image and video media; remote files need a MEDIA_ROOT."""
    out, remote = {}, []
    for row in media:
        d = row.data
        if not (d.get("fileMediatype") or "").startswith(TRAINABLE_MEDIA):
            continue
        row.time("timestamp")
        path = (d.get("filePath") or "").strip()
        if "://" in path:
            if root is None:
                remote.append(path)
                continue
            path = (d.get("fileName") or "").strip() or path.rsplit("/", 1)[-1]
        out[d["mediaID"]] = (str(((root or pkg.parent) / path).resolve()), row)
    if remote:
        raise UserError(f"{pkg}: {len(remote)} of its {len(remote) + len(out)} image media "
                         f"files are remote URLs (e.g. {remote[0]}); download them and give "
                         f"camtrapdp:{pkg}:MEDIA_ROOT (files are looked up there by fileName)")
    return out


def camtrapdp_source(rest: str, crop_boxes: bool = False) -> CropSource:
    """``camtrapdp:DATAPACKAGE.json[:MEDIA_ROOT]``: Camera Trap Data Package 1.0.

    Image and video media (a video's sampled frames are its examples, every one with the
    video's labels). Label: scientificName (observationType for blank/human/vehicle/…).
    Location for splits:
    the deployment's locationID (else deploymentID); sequence: eventID. Media-level
    observations label their media file (one crop per bbox with ``crop_boxes``); event-level
    ones label every image of the deployment taken within the event, unless the image has
    media-level observations of its own. MEDIA_ROOT (default: the package's folder) is where
    relative filePaths are found, and remote (URL) media by their fileName.
    """
    pkg_part, _, root_part = rest.partition(":")
    pkg = existing(pkg_part, "Camtrap DP datapackage.json")
    root = existing(root_part, "media root") if root_part else None
    try:
        descriptor = json.loads(read_text(pkg, "datapackage.json"))
    except json.JSONDecodeError as e:
        raise UserError(f"{pkg}: line {e.lineno} column {e.colno}: not valid JSON "
                         f"({e.msg})") from None
    if not isinstance(descriptor, dict):
        raise UserError(f"{pkg}: not a data package (the top level is not an object)")
    deployments = {r.data["deploymentID"]: (r.data.get("locationID") or "").strip()
                   for r in _table(pkg, descriptor, "deployments", required=False)}
    media = _table(pkg, descriptor, "media")
    files = _media_files(pkg, media, root)
    media_obs: dict[str, list[_Row]] = {}
    events: list[_Row] = []
    known_media = {r.data["mediaID"] for r in media}
    for row in _table(pkg, descriptor, "observations"):
        start, end = row.time("eventStart"), row.time("eventEnd")
        if end < start:
            raise row.fail("eventEnd is before eventStart")
        if not _observation_label(row):
            continue  # an animal not identified (yet): nothing to learn from
        level = (row.data.get("observationLevel") or "").strip()
        if level == "media":
            mid = (row.data.get("mediaID") or "").strip()
            if not mid:
                raise row.fail("a media-level observation without mediaID")
            if mid not in known_media:
                raise row.fail(f"mediaID {mid!r} is not in the media table")
            media_obs.setdefault(mid, []).append(row)
        elif level == "event":
            events.append(row)
        else:
            raise row.fail(f"observationLevel {level!r} is neither media nor event")
    records = []
    for mid, (path, mrow) in files.items():
        dep = mrow.data["deploymentID"]
        common = {"path": path, "location": deployments.get(dep) or dep,
                  "datetime": mrow.data["timestamp"]}
        obs = media_obs.get(mid)
        if not obs:
            when = mrow.time("timestamp")
            obs = [e for e in events if e.data["deploymentID"] == dep
                   and e.time("eventStart") <= when <= e.time("eventEnd")]
        if not obs:
            continue
        seq = next((o.data.get("eventID") for o in obs if o.data.get("eventID")), "") or ""
        # a video's box has no frame to belong to: the observation labels the whole video
        boxed = [o for o in obs if crop_boxes and _bbox(o) and not is_video(path)]
        records += [Record(labels=(_observation_label(o),), bbox=_bbox(o), seq_id=seq, **common)
                    for o in boxed]
        rest_obs = [o for o in obs if o not in boxed]
        if rest_obs:
            labels = tuple(dict.fromkeys(_observation_label(o) for o in rest_obs))
            records.append(Record(labels=labels, seq_id=seq, **common))
    if not records:
        raise UserError(f"{pkg}: no image media file with a labelled observation")
    return CropSource(f"camtrapdp:{rest}", sorted({lab for r in records for lab in r.labels}),
                      records)

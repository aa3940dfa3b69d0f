"""``kerascls evaluate``: a full report of a Keras run or an exported TFLite model.

Writes ``metrics.json``, ``per_class.csv``, ``confusion_matrix.png``, ``reliability.png``,
``report.html`` (multiclass: a static page to look at, see ``report_html``) and, when a
class is named empty/blank, ``empty_filter.csv`` to ``RUN/eval`` (or
``output_dir``), so a run directory keeps its own evaluation beside the model.

Videos: every sampled frame is an example (the frame-level numbers above count frames); a
video's label is its frames' probabilities combined by the device's rule
(``kerascls_edge.video.video_scores``), and metrics.json's ``video`` block gives the
video-level accuracy by each rule. predictions.csv then has a ``video`` row per video and a
``frame`` row per sampled frame (``row``, ``frame_number``, ``frames_used`` columns).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from kerascls.errors import UserError
from kerascls.evaluation import metrics as M
from kerascls.evaluation import plots
from kerascls.evaluation.metrics import calibration_line


def _is_tflite(path: Path) -> bool:
    return path.suffix == ".tflite" or (path.is_dir() and (path / "model.tflite").exists()
                                        and not (path / "model.keras").exists())


def evaluate(model_path: str | Path, data: str | None = None, split: str = "test",
             batch_size: int = 512, output_dir: str | Path | None = None) -> dict:
    """Evaluate a run directory, .keras file, bundle directory or .tflite file.

    The data spec defaults to the one the run trained on (config.json), or for a bundle,
    the training run beside it. Returns the metrics (also written to the output folder).
    """
    path = Path(model_path)
    pred = _predict_tflite(path, data, split) if _is_tflite(path) else \
        _predict_keras(path, data, split, batch_size)
    probs, y, names = pred["probs"], pred["y"], pred["class_names"]
    multilabel = np.ndim(y) == 2  # K-hot labels
    if not multilabel:
        probs = M.two_class(probs)  # a binary head's p(class 1) → both classes
    names = names if len(names) == probs.shape[-1] else [str(i) for i in range(probs.shape[-1])]
    metrics = (M.multilabel_report(probs, y, names) if multilabel
               else M.classification_report(probs, y, names))
    report = {"model": pred["model"], "data": pred["data"], "split": split, **metrics}
    report["skipped"] = _skipped(pred, report)
    frames = pred.get("frames")
    videos = (video_results(pred["paths"], frames, probs, y) if frames and not multilabel
              and any(f >= 0 for f in frames) else [])
    if videos:
        report["video"] = video_summary(videos, y, probs, frames)
    calibration = _run_calibration(Path(pred["run_dir"]))
    if calibration:
        report["calibration"] = calibration
    out = Path(output_dir) if output_dir else _default_report_dir(path, pred["run_dir"])
    write_report(report, out)
    if pred.get("paths"):
        write_predictions(pred["paths"], probs, y, names, out / "predictions.csv",
                          frames if videos else None, videos)
    if not multilabel:  # the page to look at: file thumbnails, or the arrays' own pixels
        from kerascls.evaluation.report_html import write_html_report
        write_html_report(report, probs, y, out, paths=pred.get("paths"),
                          images=pred.get("x") if videos or not pred.get("paths") else None,
                          frames=frames if videos else None, videos=videos)
    report["output_dir"] = str(out)
    return report


def _video_rules() -> tuple[tuple[str, ...], str]:
    """The per-video rules the device knows, and its default."""
    from kerascls_edge import video
    return tuple(video.VIDEO_RULES), video.DEFAULT_VIDEO_RULE


def video_results(paths: list[str], frames: list[int], probs: np.ndarray, y) -> list[dict]:
    """One entry per video (in first-frame order): its file, true class, the rows of its
    frames, and its probabilities by each rule of ``kerascls_edge.video.video_scores``."""
    from kerascls_edge.video import video_scores
    rows: dict[str, list[int]] = {}
    for i, (path, frame) in enumerate(zip(paths, frames)):
        if frame >= 0:
            rows.setdefault(path, []).append(i)
    rules, _ = _video_rules()
    probs = np.asarray(probs, np.float64).reshape(len(paths), -1)
    y = np.asarray(y).reshape(-1)
    return [{"file": path, "y": int(y[idx[0]]), "rows": idx,
             "frames": [int(frames[i]) for i in idx],
             "probs": {r: video_scores(probs[idx], r) for r in rules}}
            for path, idx in rows.items()]


def video_summary(videos: list[dict], y, probs: np.ndarray, frames: list[int]) -> dict:
    """metrics.json ``video``: frame-level and video-level accuracy (by every rule; ``rule``
    is the device's default, whose accuracy is ``accuracy``), over the labelled videos."""
    rules, default = _video_rules()
    known = [v for v in videos if v["y"] >= 0]
    y = np.asarray(y).reshape(-1)
    top = np.asarray(probs).reshape(len(y), -1).argmax(1)
    rows = [i for v in known for i in v["rows"]]
    by_rule = {r: float(np.mean([int(v["probs"][r].argmax()) == v["y"] for v in known]))
               if known else float("nan") for r in rules}
    return {"rule": default, "videos": len(videos), "frames": len(rows),
            "accuracy": by_rule[default], "accuracy_by_rule": by_rule,
            "frame_accuracy": float(np.mean(top[rows] == y[rows])) if rows else float("nan")}


def _skipped(pred: dict, report: dict) -> dict:
    """Images of the split that were not scored, and why; said on stderr, not only in JSON."""
    listed = pred.get("listed")
    unknown = int(report.get("skipped_unknown_labels", 0)) + int(pred.get("dropped", 0))
    unreadable = max(int(listed) - len(pred["y"]) - int(pred.get("dropped", 0)), 0) \
        if listed is not None else 0
    skipped = {"count": unknown + unreadable, "unknown_label": unknown,
               "unreadable": unreadable}
    if skipped["count"]:
        total = listed if listed is not None else len(pred["y"]) + int(pred.get("dropped", 0))
        print(f"kerascls: warning: evaluate scored {report['count']} of {total} images: "
              f"{unknown} with a label outside the model's classes, {unreadable} unreadable",
              file=sys.stderr, flush=True)
    return skipped


def _run_calibration(run_dir: Path) -> dict | None:
    """The training run's temperature scaling (its metrics.json), for a run or its bundle.

    The model evaluated already has T folded in; this says by how much it was changed and
    what that did to the test split's ECE and NLL when it was trained.
    """
    for folder in (run_dir, run_dir.parent):
        file = folder / "metrics.json"
        if (folder / "config.json").exists() and file.exists():
            try:
                entry = json.loads(file.read_text()).get("calibration")
            except (OSError, ValueError):
                return None
            return entry if isinstance(entry, dict) else None
    return None


def _default_report_dir(path: Path, run_dir: Path) -> Path:
    """RUN/eval for a Keras run; a ``_eval`` sibling for a bundle or .tflite.

    A bundle is what gets copied to a device, so its report stays beside it, not inside.
    """
    if not _is_tflite(path):
        return run_dir / "eval"
    base = path if path.is_dir() else path.with_suffix("")
    return base.with_name(f"{base.name}_eval")


def write_report(report: dict, out: Path) -> None:
    """Metrics JSON, per-class CSV, empty-filter CSV and the two figures."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    M.write_csv(report["per_class"], out / "per_class.csv")
    if "empty_filter" in report:
        M.write_csv(report["empty_filter"], out / "empty_filter.csv")
    if "confusion_matrix" in report:  # multi-label runs have per-class rows instead
        plots.confusion_png(np.asarray(report["confusion_matrix"]), report["class_names"],
                            out / "confusion_matrix.png")
    plots.reliability_png(report["reliability"], report["ece"], out / "reliability.png")


def write_predictions(paths: list[str], probs: np.ndarray, y, names: list[str],
                      out: Path, frames: list[int] | None = None,
                      videos: list[dict] | None = None) -> None:
    """``predictions.csv``: per image its file, label, top-1 and every class probability,
    so a report can be compared image by image (e.g. with ``kerascls-edge predict``).

    With videos (``frames``: each row's frame number, -1 for a photo): a ``video`` row per
    video (its probabilities by the device's rule, ``frames_used``) before its ``frame``
    rows (``frame_number``), as ``kerascls-edge predict`` writes its CSV; photos are
    ``image`` rows.
    """
    from kerascls.data.records import join_labels
    probs = np.asarray(probs, np.float64).reshape(len(paths), -1)
    y = np.asarray(y)

    def row(path: str, i: int, p: np.ndarray, **extra) -> dict:
        label = (join_labels(tuple(n for n, v in zip(names, y[i]) if v > 0.5)) if y.ndim == 2
                 else (names[int(y[i])] if 0 <= int(y[i]) < len(names) else ""))
        top = int(p.argmax())
        return {"filepath": path, "label": label, "top1": names[top],
                "top1_prob": round(float(p[top]), 6),
                **{f"p_{n}": round(float(v), 6) for n, v in zip(names, p)}, **extra}
    if frames is None:
        M.write_csv([row(path, i, probs[i]) for i, path in enumerate(paths)], out)
        return
    _, default = _video_rules()
    first = {v["rows"][0]: v for v in videos or []}
    rows = []
    for i, path in enumerate(paths):
        if frames[i] < 0:
            rows.append(row(path, i, probs[i], row="image", frame_number="", frames_used=""))
            continue
        if i in first:
            v = first[i]
            rows.append(row(path, i, v["probs"][default], row="video", frame_number="",
                            frames_used=len(v["rows"])))
        rows.append(row(path, i, probs[i], row="frame", frame_number=frames[i],
                        frames_used=""))
    M.write_csv(rows, out)


def summary_lines(report: dict) -> list[str]:
    """The short summary ``kerascls evaluate`` prints."""
    if report.get("task") == "multilabel":
        return _multilabel_summary(report)
    lines = [f"model: {report['model']}  data: {report['data']}:{report['split']}",
             f"test accuracy: {report['accuracy']:.4f}  top-5: {report['top5_accuracy']:.4f}  "
             f"loss: {report['loss']:.4f}  images: {report['count']}",
             f"NLL: {report['nll']:.4f}  log-likelihood: {report['log_likelihood']:.1f}  "
             f"ECE: {report['ece']:.4f}"]
    if calibration_line(report.get("calibration")):
        lines.append(calibration_line(report.get("calibration")))
    worst = min(report["per_class"], key=lambda r: r["f1"])
    lines.append(f"lowest F1: {worst['class']} {worst['f1']:.3f}")
    if "video" in report:
        v = report["video"]
        rules = "  ".join(f"{r}: {a:.4f}" for r, a in v["accuracy_by_rule"].items())
        lines.append(f"videos: {v['videos']} ({v['frames']} frames)  frame accuracy: "
                     f"{v['frame_accuracy']:.4f}  video accuracy ({v['rule']}): "
                     f"{v['accuracy']:.4f}  by rule: {rules}")
    if "empty_filter" in report:
        best = max((r for r in report["empty_filter"] if r["precision"] >= 0.99),
                   key=lambda r: r["recall"], default=None)
        if best:
            lines.append(f"empty filter: p(empty) >= {best['threshold']:.2f} discards "
                         f"{best['recall']:.1%} of empty frames at {best['precision']:.1%} "
                         f"precision")
    lines.append(f"report: {report.get('output_dir', '')}")
    return lines


def _multilabel_summary(report: dict) -> list[str]:
    rated = [r for r in report["per_class"] if r["ap"] == r["ap"]]  # not NaN
    lines = [f"model: {report['model']}  data: {report['data']}:{report['split']}",
             f"mAP: {report['mAP']:.4f}  micro-F1: {report['micro_f1']:.4f}  macro-F1: "
             f"{report['macro_f1']:.4f}  exact match: {report['exact_match']:.4f}  "
             f"images: {report['count']}",
             f"loss (cross-entropy per label): {report['loss']:.4f}  ECE: {report['ece']:.4f}"]
    if rated:
        worst = min(rated, key=lambda r: r["ap"])
        lines.append(f"lowest AP: {worst['class']} {worst['ap']:.3f}")
    return lines + [f"report: {report.get('output_dir', '')}"]


def _predict_keras(path: Path, data: str | None, split: str, batch_size: int) -> dict:
    from kerascls.data.runs import task_of
    from kerascls.runs import load_run, sample_images
    from kerascls.training.heads import probability_model
    run = load_run(path)
    data = data or (run.config.data if run.config else None)
    if not data:
        raise UserError("no data to evaluate on: pass --data")
    shape = tuple(int(d) for d in run.model.input_shape[1:])
    multi_hot = bool(run.config) and task_of(run.config) == "multilabel"
    x, y = sample_images(data, split, 10**9, shape, run_dir=run.path.parent,
                         multi_hot=multi_hot)
    model = probability_model(run.model, task_of(run.config) if run.config else None)
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    names = list(run.config.class_names) if run.config else _source_names(data)
    return {"probs": np.asarray(probs), "y": y, "x": x, "class_names": names,
            "model": str(path), "data": data, "run_dir": run.path.parent,
            **_listed(data, split, run.path.parent, names, multi_hot, len(y))}


def _listed(data: str, split: str, run_dir: Path, names: list[str], multi_hot: bool,
            scored: int) -> dict:
    """How many images the run's split list holds, and how many left out for their labels.

    A file source's split is ``RUN/splits/SPLIT.csv``: every row is an image the run set
    aside, so any row not scored is reported (``_skipped``).
    """
    from kerascls.data.records import read_split_csv
    from kerascls.data.sources import is_file_spec
    name = "val" if split == "validation" else split
    file = Path(run_dir) / "splits" / f"{name}.csv"
    if not is_file_spec(data) or not file.exists():
        return {}
    from kerascls.data.runs import split_records
    rows = read_split_csv(file)
    scored_records = split_records(run_dir, split) or []  # the readable ones, in order
    if multi_hot:  # records with a label outside the class list are left out there
        scored_records = [r for r in scored_records if set(r.labels) <= set(names)]
    dropped = sum(1 for r in rows if not set(r.labels) <= set(names)) if multi_hot else 0
    paths = [r.path for r in scored_records]
    frames = [r.frame for r in scored_records]
    return {"listed": len(rows), "dropped": dropped,
            **({"paths": paths, "frames": frames} if len(paths) == scored else {})}


def _source_names(data: str) -> list[str]:
    """Class names of a data spec, for a bare .keras file without a run's config.json."""
    from kerascls.data.sources import load_source
    return list(load_source(data).class_names)


def _predict_tflite(path: Path, data: str | None, split: str) -> dict:
    from kerascls.runs import sample_images
    from kerascls.tflite import audit as A
    file = path / "model.tflite" if path.is_dir() else path
    run_cfg = file.parent.parent / "config.json"
    if not data and (file.parent / "model.json").exists() and run_cfg.exists():
        data = json.loads(run_cfg.read_text())["data"]
    if not data:
        raise UserError("no data to evaluate on: pass --data")
    it = A.interpreter(str(file))
    shape = tuple(int(d) for d in it.get_input_details()[0]["shape"][1:])
    meta = file.parent / "model.json"
    task = json.loads(meta.read_text()).get("task") if meta.exists() else None
    x, y = sample_images(data, split, 10**9, shape, run_dir=file.parent.parent,
                         multi_hot=task == "multilabel")
    labels = file.parent / "labels.txt"
    names = labels.read_text().splitlines() if labels.exists() else []
    probs = np.asarray(A.run_batch(it, x), np.float64)
    output = json.loads(meta.read_text()).get("output", {}) if meta.exists() else {}
    if output.get("activation") == "none":  # a logits bundle: as kerascls-edge reads it
        probs = _activate(probs, task or "multiclass")
    return {"probs": probs, "y": y, "x": x, "class_names": names,
            "model": str(file), "data": data, "run_dir": file.parent,
            **_listed(data, split, file.parent.parent, names, task == "multilabel", len(y))}


def _activate(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax over K outputs of a multiclass head, else a sigmoid per output."""
    z = logits.reshape(len(logits), -1)
    if task == "multiclass" and z.shape[1] > 1:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))

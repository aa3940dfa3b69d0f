"""``kerascls export --tflite``: a deployable bundle, checked before it is written.

The bundle (docs/bundle.md) is ``model.tflite``, ``labels.txt``, ``model.json`` and
``report.json``. Every export audits its ops, checks parity with the Keras model on
held-out images, and measures size and latency against the float model; the bundle
directory appears only when all of that succeeded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from kerascls._version import __version__
from kerascls.config import PRUNE_EPOCHS
from kerascls.errors import UserError
from kerascls.runs import LoadedRun, heldout_split, load_run, sample_images
from kerascls.tflite import audit as A
from kerascls.tflite.convert import convert
from kerascls.training.heads import output_activation, outputs_logits, probability_model
from kerascls.utils import atomic_path

EMPTY_NAMES = {"empty", "blank", "none", "nothing"}


class ExportError(UserError, RuntimeError):
    """The converted model failed a check; nothing was written."""


def parity(model, tflite: bytes, images: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 agreement and largest probability difference between Keras and TFLite."""
    ref = np.asarray(model.predict(images, batch_size=256, verbose=0), np.float32)
    got = A.run_batch(A.interpreter(tflite), images)
    ref, got = ref.reshape(len(images), -1), got.reshape(len(images), -1)
    top_ref, top_got = _top1(ref), _top1(got)
    return {"images": int(len(images)), "top1_agreement": float(np.mean(top_ref == top_got)),
            "max_prob_diff": float(np.max(np.abs(ref - got))),
            "keras_accuracy": float(np.mean(top_ref == labels)),
            "tflite_accuracy": float(np.mean(top_got == labels))}


def _top1(probs: np.ndarray) -> np.ndarray:
    """The predicted class: argmax, or p ≥ 0.5 for a binary head's single output."""
    return (probs[:, 0] >= 0.5).astype(int) if probs.shape[1] == 1 else probs.argmax(-1)


def contract(run: LoadedRun, quantize: str) -> dict:
    """The model.json preprocessing contract of docs/bundle.md."""
    h, w, c = (int(d) for d in run.model.input_shape[1:])
    cfg = run.config
    names = list(cfg.class_names) if cfg else [str(i) for i in range(run.model.output_shape[-1])]
    args = cfg.model_args if cfg else {}
    task = args.get("task", "multiclass")
    units = int(run.model.output_shape[-1])
    # a logits head is exported with its activation applied (``with_probabilities``)
    activation = "none" if outputs_logits(run.model) else output_activation(task, units)
    return {"format": "kerascls-bundle", "format_version": 1,
            "kerascls_version": __version__,
            "architecture": cfg.arch if cfg else run.model.name, "task": task,
            "class_names": names,
            "input": {"height": h, "width": w, "channels": c, "channel_order": "RGB",
                      "dtype": "uint8" if quantize == "int8" else "float32",
                      "value_range": [0, 255],
                      "resize": cfg.resize if cfg else "stretch",
                      "interpolation": "bilinear", "video": _video_rule(cfg)},
            "output": {"activation": activation}, "quantization": quantize,
            "thresholds": {"default": 0.5},
            "empty_classes": [n for n in names if n.lower() in EMPTY_NAMES],
            **_crop_rule(cfg), **_calibration(run)}


def _video_rule(cfg) -> dict:
    """``input.video``: how a video's frames are sampled (the run's rule, else the device's
    defaults): every bundle says it, since a photo-trained model is run on videos too."""
    from kerascls.data.records import VideoRule
    from kerascls.data.runs import video_rule
    return (video_rule(cfg) if cfg else VideoRule()).as_json()


def check_class_names(names: list[str]) -> None:
    """Refuse names labels.txt cannot carry, by the rule the device applies when it loads the
    bundle (kerascls_edge.bundle.check_labels: no empty or repeated name), plus what would not
    survive one name a line: a line break, or spaces at either end (the reader strips them)."""
    from kerascls_edge.bundle import EdgeError, check_labels

    for i, name in enumerate(names):
        if name and (name != name.strip() or name.splitlines() != [name]):
            raise ExportError(f"class {i} {name!r}: a class name cannot hold a line break or "
                              "start/end with a space (labels.txt is one name a line); "
                              "rename that class folder")
    try:
        check_labels(names, "class names", "class {n}")
    except EdgeError as e:
        raise ExportError(f"{e}; rename the class folders and train again") from None


def _calibration(run: LoadedRun) -> dict:
    """The temperature train folded into the head (recorded only: nothing to apply)."""
    from kerascls.training.calibration import bundle_entry
    return bundle_entry(Path(run.path).parent) if run.path else {}


def _crop_rule(cfg) -> dict:
    """``crop`` of an md: run: the detector-box rule kerascls-edge --detections applies."""
    if not cfg or not cfg.data.startswith("md:"):
        return {}
    from kerascls.data.camtrap_sources import options_from_config
    return {"crop": options_from_config(cfg).crop.as_json()}


def owning_layer(tensor: str, layer_names: list[str]) -> str:
    """The Keras layer a TFLite tensor comes from: the longest layer name in its path.

    Converted tensor names look like ``lenet_1/conv1_conv_1/BiasAdd;…``: Keras adds a
    ``_N`` suffix to traced names and tfmot a ``quant_`` prefix, so each path part is
    tried with those removed; the longest match wins (``block1_ln`` over ``block1``).
    """
    parts = set()
    for chunk in tensor.split(";"):
        for part in chunk.split("/"):
            part = part.removeprefix("quant_")
            parts |= {part, re.sub(r"_\d+$", "", part)}
    hits = [n for n in layer_names if n in parts]
    return max(hits, key=len) if hits else ""


def _audit_or_fail(tflite: bytes, quantize: str, allow_float_ops: bool,
                   layer_names: list[str]) -> list[dict]:
    ops = A.op_audit(tflite)
    for row in ops:
        row["layer"] = owning_layer(row["where"], layer_names)
    bad = A.non_integer_ops(ops)
    if quantize == "int8" and bad and not allow_float_ops:
        layers = sorted({r["layer"] for r in bad if r["layer"]})
        listing = "; ".join(f"{r['op']} in layer {r['layer'] or '?'} (tensor {r['where']})"
                            for r in bad[:20])
        raise ExportError(f"int8 export keeps {len(bad)} float/Flex ops in layers "
                          f"{', '.join(layers) or '?'}: {listing} "
                          "(pass --allow_float_ops to export anyway)")
    return ops


def export_bundle(model_path: str | Path, output_dir: str | Path | None = None, *,
                  quantize: str = "int8", data: str | None = None,
                  calibration_samples: int = 500, parity_samples: int = 1000,
                  allow_float_ops: bool = False, seed: int = 0, qat_epochs: int = 0,
                  prune_sparsity: float = 0.0, prune_epochs: int = PRUNE_EPOCHS,
                  finetune_samples: int = 5000) -> dict:
    """Convert, check and write a bundle; returns the report (also in report.json).

    ``qat_epochs`` > 0 (quantization-aware training) or ``prune_sparsity`` > 0 (magnitude
    pruning for ``prune_epochs``) fine-tune on ``finetune_samples`` training images in the
    tfmot bridge subprocess before the int8 conversion; audit, parity and bundle apply
    to its result as to any export.
    """
    run = load_run(model_path)
    data = data or (run.config.data if run.config else None)
    shape = tuple(int(d) for d in run.model.input_shape[1:])
    if quantize == "int8" and not data:
        raise UserError("int8 export needs calibration data: pass --data")
    finetune = finetune_plan(quantize, data, qat_epochs, prune_sparsity, prune_epochs)
    if finetune and outputs_logits(run.model):
        raise UserError("QAT and pruning export a logits head as logits: train without "
                         "--model_arg logits=true, or export without --qat/--prune_sparsity")
    run = with_probabilities(run)
    meta = contract(run, quantize)
    check_class_names(meta["class_names"])  # before the conversion: refusing costs nothing
    run_dir = run.path.parent if run.config else None
    calib = (sample_images(data, "train", calibration_samples, shape, seed, run_dir)[0]
             if data else None)
    report: dict = {"quantize": quantize}
    if finetune:
        from kerascls.tflite.tfmot_bridge import finetune_tflite
        tflite, report["finetune"] = finetune_tflite(
            run.path, data=data, samples=finetune_samples,
            calibration_samples=calibration_samples, seed=seed, **finetune)
    else:
        tflite = convert(run.model, quantize, calib)
    names = [layer.name for layer in run.model.layers]
    report["op_audit"] = _audit_or_fail(tflite, quantize, allow_float_ops, names)
    report["non_integer_ops"] = len(A.non_integer_ops(report["op_audit"]))
    report.update(_size_and_latency(run.model, tflite, quantize, shape))
    report["xnnpack"] = A.undelegated_ops(tflite)
    if data:
        images, labels = sample_images(data, heldout_split(data, run_dir), parity_samples,
                                       shape, seed, run_dir)
        report["parity"] = parity(run.model, tflite, images, labels)
    out = Path(output_dir) if output_dir else run.path.parent / "bundle"
    _write_bundle(out, tflite, meta, report, run_dir)
    return report


def with_probabilities(run: LoadedRun) -> LoadedRun:
    """A logits head with its softmax/sigmoid applied: the bundle outputs probabilities
    (model.json says which), int8-quantized on the 0–1 scale, as parity compares them."""
    task = (run.config.model_args or {}).get("task") if run.config else None
    return LoadedRun(probability_model(run.model, task), run.config, run.path)


def finetune_plan(quantize: str, data: str | None, qat_epochs: int, prune_sparsity: float,
                   prune_epochs: int) -> dict | None:
    """The bridge arguments for QAT or pruning, or None for a plain conversion."""
    if not qat_epochs and not prune_sparsity:
        return None
    if qat_epochs and prune_sparsity:
        raise UserError("pass either --qat (--qat_epochs) or --prune_sparsity, not both")
    if quantize != "int8":
        raise UserError("QAT and pruning export int8 only: use --quantize int8")
    if not data:
        raise UserError("QAT and pruning fine-tune on training data: pass --data")
    if prune_sparsity and not 0.0 < prune_sparsity < 1.0:
        raise UserError(f"--prune_sparsity must be in (0, 1), got {prune_sparsity}")
    if qat_epochs:
        return {"mode": "qat", "epochs": qat_epochs}
    return {"mode": "prune", "epochs": prune_epochs, "sparsity": prune_sparsity}


def _size_and_latency(model, tflite: bytes, quantize: str, shape) -> dict:
    """Bytes and single-image latency of this export against the float32 conversion."""
    image = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    ref = tflite if quantize == "none" else convert(model, "none")
    return {"size_bytes": len(tflite), "float_size_bytes": len(ref),
            "size_ratio": len(tflite) / len(ref),
            "latency_ms": A.latency_ms(A.interpreter(tflite), image),
            "float_latency_ms": A.latency_ms(A.interpreter(ref), image)}


def _write_bundle(out: Path, tflite: bytes, meta: dict, report: dict,
                  run_dir: Path | None = None) -> None:
    taxonomy = Path(run_dir) / "taxonomy.csv" if run_dir else None  # kerascls train --taxonomy
    check_class_names(meta["class_names"])
    files = {"model.tflite": tflite,
             "labels.txt": ("\n".join(meta["class_names"]) + "\n").encode("utf-8")}
    if taxonomy is not None and taxonomy.is_file():
        files["taxonomy.csv"] = taxonomy.read_bytes()
    # each file's sha256: the device refuses a bundle whose files differ (docs/bundle.md)
    meta = {**meta, "files": {name: {"sha256": hashlib.sha256(data).hexdigest(),
                                     "bytes": len(data)} for name, data in files.items()}}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")

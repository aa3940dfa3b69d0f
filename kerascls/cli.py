"""``kerascls``: one absl app with subcommands train, evaluate, export, predict, models, summary.

Each subcommand defines its own absl flags, so ``kerascls <command> --help`` lists exactly
the flags it takes. Mistakes (unknown command, unknown flag, bad value) exit non-zero with
one line that names the problem — no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

from absl import app, flags, logging

from kerascls.errors import UserError, is_user_error

PROG = "kerascls"


_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool}


def config_flags(fv: flags.FlagValues, m: str) -> None:
    """One flag per ``TrainConfig`` field: name, type, default, choices, bounds and help
    are the field's (``kerascls.config``), so the two cannot drift."""
    import typing

    from kerascls.config import TrainConfig, flag_fields
    types = typing.get_type_hints(TrainConfig)
    for f in flag_fields():
        meta = f.metadata
        if meta["choices"]:
            flags.DEFINE_enum(f.name, f.default, meta["choices"], meta["help"],
                              flag_values=fv, module_name=m)
            continue
        bounds = {k: meta[k] for k in ("lower_bound", "upper_bound") if meta[k] is not None}
        _DEFINE[types[f.name]](f.name, f.default, meta["help"], flag_values=fv,
                               module_name=m, **bounds)


def _train_flags(fv: flags.FlagValues, m: str) -> None:
    """The config's flags, and those that steer the command rather than the run."""
    config_flags(fv, m)
    flags.DEFINE_string("config", None, "JSON file of train settings (e.g. an earlier "
                        "RUN/config.json); flags given explicitly override it.",
                        flag_values=fv, module_name=m)
    flags.DEFINE_bool("overwrite", False, "Train again over a finished run in --output_dir "
                      "(its model.keras is replaced when the new run ends).", flag_values=fv,
                      module_name=m)
    flags.DEFINE_multi_string("model_arg", [], "Architecture option KEY=VALUE, repeatable "
                              "(e.g. norm=group, attention=se).", flag_values=fv, module_name=m)
    flags.DEFINE_string("taxonomy", None, "taxonomy.csv (label, kingdom … species, "
                        "scientificName, commonName; docs/bundle.md): kept in the run and its "
                        "bundles for kerascls-edge roll-up and Camtrap DP names.",
                        flag_values=fv, module_name=m)


def _evaluate_flags(fv: flags.FlagValues, m: str) -> None:
    flags.DEFINE_string("model", None, "Run directory, .keras, bundle directory or .tflite.",
                        flag_values=fv, module_name=m)
    flags.DEFINE_string("data", None, "Data spec; default: the one the run trained on.",
                        flag_values=fv, module_name=m)
    flags.DEFINE_enum("split", "test", ["train", "test"], "Split to evaluate.",
                      flag_values=fv, module_name=m)
    flags.DEFINE_string("output_dir", None, "Report folder (metrics.json, per_class.csv, "
                        "confusion and reliability PNGs); default RUN/eval, or BUNDLE_eval "
                        "beside a bundle.", flag_values=fv,
                        module_name=m)
    flags.mark_flag_as_required("model", flag_values=fv)


def _export_flags(fv: flags.FlagValues, m: str) -> None:
    flags.DEFINE_string("model", None, "Run directory or .keras file.", flag_values=fv,
                        module_name=m)
    flags.DEFINE_bool("tflite", True, "Write a TFLite bundle (the only format for now).",
                      flag_values=fv, module_name=m)
    flags.DEFINE_enum("quantize", "int8", ["int8", "float16", "dynamic", "none"],
                      "int8 = full integer, uint8 input.", flag_values=fv, module_name=m)
    flags.DEFINE_string("output_dir", None, "Bundle directory; default RUN/bundle.",
                        flag_values=fv, module_name=m)
    flags.DEFINE_string("data", None, "Calibration/parity data; default: the run's.",
                        flag_values=fv, module_name=m)
    flags.DEFINE_integer("calibration_samples", 500, "Training images used to calibrate int8.",
                         lower_bound=1, flag_values=fv, module_name=m)
    flags.DEFINE_integer("parity_samples", 1000, "Held-out images for the parity check.",
                         lower_bound=1, flag_values=fv, module_name=m)
    flags.DEFINE_bool("allow_float_ops", False, "Write an int8 bundle even if float ops remain.",
                      flag_values=fv, module_name=m)
    flags.DEFINE_bool("qat", False, "Quantization-aware fine-tuning (tfmot) before the int8 "
                      "conversion, for --qat_epochs (default 1).", flag_values=fv, module_name=m)
    flags.DEFINE_integer("qat_epochs", 0, "Quantization-aware training epochs before the int8 "
                         "conversion (tfmot; 0 = post-training quantization only, or 1 with "
                         "--qat).", lower_bound=0, flag_values=fv, module_name=m)
    flags.DEFINE_float("prune_sparsity", 0.0, "Magnitude-prune Conv2D/Dense kernels to this "
                       "share of zeros before the int8 conversion (tfmot; 0 = off).",
                       lower_bound=0, upper_bound=0.99, flag_values=fv, module_name=m)
    from kerascls.config import PRUNE_EPOCHS
    flags.DEFINE_integer("prune_epochs", PRUNE_EPOCHS, "Fine-tuning epochs while pruning.",
                         lower_bound=1, flag_values=fv, module_name=m)
    flags.DEFINE_integer("finetune_samples", 5000, "Training images for QAT/pruning.",
                         lower_bound=1, flag_values=fv, module_name=m)
    flags.mark_flag_as_required("model", flag_values=fv)


def _predict_flags(fv: flags.FlagValues, m: str) -> None:
    from kerascls.predict import define_flags
    define_flags(fv, m)


def _models_flags(fv: flags.FlagValues, m: str) -> None:
    flags.DEFINE_string("family", None, "Only this family.", flag_values=fv, module_name=m)
    flags.DEFINE_bool("macs", True, "Build each model to count MACs (slower).",
                      flag_values=fv, module_name=m)


def _summary_flags(fv: flags.FlagValues, m: str) -> None:
    flags.DEFINE_string("arch", None, "Architecture name.", flag_values=fv, module_name=m)
    flags.DEFINE_integer("image_size", 0, "Input size; 0 = the architecture's default "
                         "(at least its minimum, see `kerascls models`).",
                         lower_bound=0, flag_values=fv, module_name=m)
    flags.DEFINE_integer("channels", 3, "Input channels.", lower_bound=1, flag_values=fv,
                         module_name=m)
    flags.DEFINE_integer("num_classes", 1000, "Classes.", lower_bound=1, flag_values=fv,
                         module_name=m)
    flags.mark_flag_as_required("arch", flag_values=fv)


def cmd_train(fl, args) -> None:
    from kerascls.config import (
        PRUNE_EPOCHS,
        TrainConfig,
        flag_fields,
        merge_config,
        parse_model_args,
    )
    from kerascls.models.registry import check_model_args
    from kerascls.training.train import train
    names = [f.name for f in flag_fields()]
    explicit = {n: fl[n].value for n in names if fl[n].present}
    if fl["model_arg"].present:
        explicit["model_args"] = parse_model_args(fl.model_arg)
    values = merge_config(fl.config, explicit,
                          {**{n: fl[n].value for n in names},
                           "model_args": parse_model_args(fl.model_arg)})
    cfg = TrainConfig(**values)
    from kerascls.tflite.export import finetune_plan
    check_model_args(cfg.arch, cfg.model_args, "--model_arg")  # before data or files
    check_image_size(cfg.arch, cfg.image_size, cfg.model_args)
    plan = finetune_plan("int8", cfg.data, int(cfg.qat), cfg.prune_sparsity,
                         PRUNE_EPOCHS)  # fail early
    taxonomy = _read_taxonomy(fl.taxonomy) if fl.taxonomy else None  # fail before training
    run = train(cfg, overwrite=fl.overwrite)
    if taxonomy is not None:
        (run / ".taxonomy.csv.tmp").write_text(taxonomy, encoding="utf-8")
        os.replace(run / ".taxonomy.csv.tmp", run / "taxonomy.csv")
    print(f"run directory: {run}")
    from kerascls.training.distribute import worker_index
    if worker_index() != 0:  # other workers of a multi-worker run write no metrics
        return
    _print_metrics(json.loads((run / "metrics.json").read_text()))
    if plan:
        from kerascls.tflite.export import export_bundle
        _print_export(export_bundle(run, quantize="int8", qat_epochs=int(cfg.qat),
                                    prune_sparsity=cfg.prune_sparsity,
                                    prune_epochs=PRUNE_EPOCHS))
        print(f"bundle: {run / 'bundle'}")


def _read_taxonomy(path: str) -> str:
    """The --taxonomy file's text, refused unless it is a CSV with a `label` column."""
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --taxonomy {path}: {e}") from None
    if "label" not in [h.strip() for h in (text.splitlines() or [""])[0].split(",")]:
        raise UserError(f"--taxonomy {path}: the first line must be a CSV header with a "
                         "'label' column (docs/bundle.md)")
    return text


def check_image_size(arch: str, size: int, model_args: dict | None = None) -> None:
    """Refuse a bad ``--arch`` or an ``--image_size`` it cannot take, naming the limit.

    0 means the data's (train) or the architecture's (summary) size, which is always valid.
    """
    from kerascls.models import model_info
    from kerascls.models.registry import MAX_INPUT_SIZE
    least = model_info(arch).min_size(**(model_args or {}))
    if size and size < least:
        raise UserError(f"--image_size {size} is below {arch}'s minimum input size {least} "
                         f"(its pooling stages need {least}×{least}); use {least} or more, or "
                         "leave it out to resize smaller images up to it")
    if size > MAX_INPUT_SIZE:
        raise UserError(f"--image_size {size} is above the maximum {MAX_INPUT_SIZE}")


def _print_metrics(metrics: dict) -> None:
    for key in ("accuracy", "loss", "count", "train_seconds"):
        if key in metrics:
            print(f"{key}: {metrics[key]:.4f}" if isinstance(metrics[key], float)
                  else f"{key}: {metrics[key]}")


def cmd_evaluate(fl, args) -> None:
    from kerascls.evaluation.evaluate import evaluate, summary_lines
    report = evaluate(fl.model, fl.data, fl.split, output_dir=fl.output_dir)
    print("\n".join(summary_lines(report)))


def cmd_export(fl, args) -> None:
    if not fl.tflite:
        raise UserError("only --tflite export exists; pass --tflite")
    from kerascls.tflite.export import export_bundle
    rep = export_bundle(fl.model, fl.output_dir, quantize=fl.quantize, data=fl.data,
                        calibration_samples=fl.calibration_samples,
                        parity_samples=fl.parity_samples, allow_float_ops=fl.allow_float_ops,
                        qat_epochs=fl.qat_epochs or int(fl.qat),
                        prune_sparsity=fl.prune_sparsity, prune_epochs=fl.prune_epochs,
                        finetune_samples=fl.finetune_samples)
    _print_export(rep)


def _print_export(rep: dict) -> None:
    """The export report in a few lines: fine-tuning, ops, size, latency, parity."""
    if "finetune" in rep:
        f = rep["finetune"]
        extra = (f"  kernel sparsity {f['kernel_sparsity']:.3f}" if f["mode"] == "prune" else "")
        print(f"{f['mode']}: {f['epochs']} epochs on {f['finetune_images']} images{extra}")
    print(f"quantize: {rep['quantize']}  non-integer ops: {rep['non_integer_ops']}  "
          f"size: {rep['size_bytes'] / 1024:.1f} KiB ({rep['size_ratio']:.2f}x float)  "
          f"latency: {rep['latency_ms']:.3f} ms (float {rep['float_latency_ms']:.3f} ms)")
    slow = {op: n for op, n in rep["xnnpack"]["ops"].items() if op not in ("QUANTIZE", "SOFTMAX")}
    if slow:
        print(f"warning: XNNPACK leaves {sum(slow.values())} ops to slower reference kernels "
              f"({', '.join(f'{n} {op}' for op, n in slow.items())}); the graph runs in "
              f"{rep['xnnpack']['partitions']} delegated pieces")
    if "parity" in rep:
        p = rep["parity"]
        print(f"parity on {p['images']} held-out images: top-1 agreement "
              f"{p['top1_agreement']:.4f}, max prob diff {p['max_prob_diff']:.4f}, "
              f"accuracy keras {p['keras_accuracy']:.4f} / tflite {p['tflite_accuracy']:.4f}")
        drop = 100 * (p["keras_accuracy"] - p["tflite_accuracy"])
        if drop > 1.0 and rep["quantize"] == "int8" and "finetune" not in rep:
            print(f"warning: int8 loses {drop:.2f} points of accuracy; outlier activations "
                  "squeeze int8's per-tensor ranges: try --qat (quantization-aware fine-tuning)")


def cmd_predict(fl, args) -> None:
    from kerascls.predict import run
    code = run(fl, args)
    if code:
        sys.exit(code)


def cmd_models(fl, args) -> None:
    from kerascls.models import list_models, model_info
    print(f"{'name':<22}{'family':<18}{'input':>6}{'min':>5}{'params':>15}{'GMACs':>10}")
    for name in list_models(fl.family):
        info = model_info(name)
        params, macs = _count(name, info) if fl.macs else (info.ref_params, None)
        params_text = "-" if params is None else f"{params:,}"
        macs_text = "" if macs is None else f"{macs / 1e9:.3f}"
        print(f"{name:<22}{info.family:<18}{info.input_size:>6}{info.min_input_size:>5}"
              f"{params_text:>15}{macs_text:>10}")


def _count(name: str, info) -> tuple[int, int | None]:
    import keras

    from kerascls.models import create_model
    from kerascls.summary import count_macs, count_params
    model = create_model(name, 1000, (info.input_size, info.input_size, 3))
    counts = count_params(model), count_macs(model)
    keras.backend.clear_session()
    return counts


def cmd_summary(fl, args) -> None:
    from kerascls.models import create_model, model_info
    from kerascls.summary import format_summary
    check_image_size(fl.arch, fl.image_size)
    size = fl.image_size or model_info(fl.arch).input_size
    model = create_model(fl.arch, fl.num_classes, (size, size, fl.channels))
    print(format_summary(model))


COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "train": (_train_flags, cmd_train, "Train a model into a run directory."),
    "evaluate": (_evaluate_flags, cmd_evaluate, "Test accuracy and loss of a run or bundle."),
    "export": (_export_flags, cmd_export, "Convert a run to a checked TFLite bundle."),
    "predict": (_predict_flags, cmd_predict, "Classify images with an exported bundle."),
    "models": (_models_flags, cmd_models, "List every architecture with params and MACs."),
    "summary": (_summary_flags, cmd_summary, "Per-layer table: shapes, memory, params, MACs."),
}


def command_help(cmd: str) -> str:
    """Usage and every flag of one subcommand, with its help text."""
    fv = flags.FlagValues()
    COMMANDS[cmd][0](fv, f"{PROG} {cmd}")
    body = fv.module_help(f"{PROG} {cmd}").strip().split("\n", 1)[-1]
    positional = " IMAGES_OR_DIRS..." if cmd == "predict" else ""
    usage = f"usage: {PROG} {cmd} [--flag=value ...]{positional}"
    return f"{usage}\n\n{COMMANDS[cmd][2]}\n\nflags:\n{body}"


def top_help() -> str:
    """Every command with its flags."""
    parts = [f"usage: {PROG} <command> [--flag=value ...]\n\ncommands:"]
    parts += [f"  {name:<10}{c[2]}" for name, c in COMMANDS.items()]
    parts += ["", *(command_help(name) + "\n" for name in COMMANDS)]
    return "\n".join(parts)


def _fail(message: str, code: int = 2) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


def _parse(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(f"{argv[0].split()[-1]}: {str(e).splitlines()[0]}")


def _runner(cmd: str) -> Callable[[list[str]], None]:
    def main(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)
        _quiet_import_tensorflow()
        try:
            COMMANDS[cmd][1](flags.FLAGS, argv[1:])
        except ImportError as e:
            _fail(f"{cmd}: missing dependency: {e}", 1)
        except Exception as e:
            if not is_user_error(e):  # an internal bug: its traceback is the report
                raise
            _fail(f"{cmd}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", 1)
    return main


def _quiet_import_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probes, oneDNN notes) muted.

    TF 2.21 logs these through absl before any level setting applies
    (tensorflow/tensorflow#100442). KERASCLS_VERBOSE=1 shows them.
    """
    from kerascls.utils import quiet_fds
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_fds(2):
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # the CUDA probe logs here, not at import
        except ImportError:
            pass  # reported where a command needs TensorFlow


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = list(sys.argv if argv is None else argv)
    cmd = argv[1] if len(argv) > 1 else "--help"
    if cmd in ("-h", "--help", "help"):
        print(top_help())
        return
    if cmd not in COMMANDS:
        _fail(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    if any(a in ("-h", "--help", "-help", "--helpshort") for a in argv[2:]):
        print(command_help(cmd))
        return
    COMMANDS[cmd][0](flags.FLAGS, f"{PROG} {cmd}")
    app.run(_runner(cmd), argv=[f"{PROG} {cmd}", *argv[2:]], flags_parser=_parse)


if __name__ == "__main__":
    run()

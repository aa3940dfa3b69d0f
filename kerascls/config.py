"""The run configuration: every training option, its type, default, bounds and help — once.

``TrainConfig`` is the only place a training option is defined: ``kerascls train``'s flags
are generated from its fields (``kerascls.cli``), ``RUN/config.json`` is its JSON, and the
data, training and export code read its typed attributes. This module is the bottom of the
package: it imports nothing but the standard library and ``kerascls.utils`` / ``errors``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerascls.errors import UserError

# Fine-tuning epochs of magnitude pruning (``--prune_sparsity``): `kerascls train` uses it,
# `kerascls export --prune_epochs` and ``export_bundle(prune_epochs=)`` default to it.
PRUNE_EPOCHS = 2


def option(default: Any = None, help: str = "", *, choices: list | None = None,
           lower_bound: float | None = None, upper_bound: float | None = None,
           default_factory: Any = None, flag: bool = True) -> Any:
    """A ``TrainConfig`` field with what its command-line flag needs in ``metadata``.

    ``flag=False`` keeps a field off the command line (derived from the data, or set
    through a hand-written flag such as ``--model_arg``).
    """
    meta = {"help": help, "choices": choices, "lower_bound": lower_bound,
            "upper_bound": upper_bound, "flag": flag}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Fully resolved settings of one run (written to ``RUN/config.json``)."""

    arch: str = option("small_cnn", "Architecture name (see `kerascls models`).")
    data: str = option("fashion_mnist", "Data spec; default Fashion-MNIST.")
    epochs: int = option(8, "Training epochs.", lower_bound=1)
    batch_size: int = option(128, "Global batch size.", lower_bound=1)
    image_size: int = option(0, "Square input size; 0 keeps the data's size, resized up to "
                             "the architecture's minimum (`kerascls models`) when smaller.",
                             lower_bound=0)
    channels: int = option(0, "Input channels (1 or 3); 0 keeps the data's.",
                           lower_bound=0, upper_bound=4)
    optimizer: str = option("adamw", "Optimizer.", choices=["adamw", "sgd"])
    learning_rate: float = option(0.0, "Peak learning rate (after warm-up); 0: the "
                                  "architecture's (3e-3; 1e-4 for VGG without BN and "
                                  "AlexNet).", lower_bound=0)
    weight_decay: float = option(5e-4, "Decoupled weight decay.", lower_bound=0)
    warmup_steps: int = option(200, "Linear learning-rate warm-up steps of the cosine "
                               "schedule (at most a fifth of the run).", lower_bound=0)
    lr_schedule: str = option("cosine", "Learning-rate schedule: warm-up + cosine, or ÷10 "
                              "at 50% and 75% of the steps.", choices=["cosine", "step"])
    mixed_precision: str = option("auto", "Compute dtype policy (float32 variables; the "
                                  "saved model computes in float32). auto: mixed_bfloat16 "
                                  "where the hardware has native bfloat16 (a GPU of compute "
                                  "capability 8.0+, a CPU with AMX-BF16 or AVX512-BF16), "
                                  "else none; config.json records the choice.",
                                  choices=["auto", "none", "mixed_float16", "mixed_bfloat16"])
    xla: bool = option(False, "XLA-compile the training step.")
    checkpoint_every_steps: int = option(0, "Also save resume state every N steps (0 = at "
                                         "epoch ends only).", lower_bound=0)
    devices: str = option("", "Devices: empty = every visible GPU (MirroredStrategy when "
                          "2+), gpu:0,1, or cpu:N logical CPUs; --batch_size is global.")
    weights: str = option("", "Initial weights: imagenet, a .keras/.weights.h5 file or a "
                          "run directory (a new head when the class count differs).")
    freeze_backbone: bool = option(False, "Train only the classifier head (BatchNorm in "
                                   "inference mode).")
    finetune_epochs: int = option(0, "After --epochs of head-only training, this many "
                                  "epochs with every layer trainable.", lower_bound=0)
    finetune_lr_factor: float = option(0.1, "Fine-tuning learning rate as a multiple of "
                                       "--learning_rate.", lower_bound=0)
    feature_cache: str = option("auto", "Frozen backbone (--freeze_backbone, the first phase "
                                "of --finetune_epochs): compute each image's backbone "
                                "features once, in RUN/feature_cache, and train the head on "
                                "them (auto), or run the backbone every step (off).",
                                choices=["auto", "off"])
    feature_views: int = option(4, "With --augment and a cached frozen phase: augmented "
                                "views stored per image (at most one per frozen epoch); "
                                "each epoch uses a random one (4: as accurate as fresh "
                                "augmentation every step, bench/feature_views.py).",
                                lower_bound=1)
    feature_cache_memory_mb: int = option(1024, "Feature cache: read into memory up to this "
                                          "size, memory-mapped from its file above it.",
                                          lower_bound=0)
    label_smoothing: float = option(0.1, "Label smoothing of the training loss (0.1: +0.18 "
                                    "points of test accuracy on the first run; the "
                                    "calibration step then fits confidence back).",
                                    lower_bound=0, upper_bound=1)
    val_fraction: float = option(0.1, "Share of training data held out for validation.",
                                 lower_bound=0, upper_bound=0.9)
    max_train_images: int = option(0, "Use a seeded subset of this many training images "
                                   "(0 = all); for smoke runs.", lower_bound=0)
    max_test_images: int = option(0, "Test on a seeded subset of this many test images "
                                  "(0 = all); for smoke runs.", lower_bound=0)
    test_fraction: float = option(0.1, "Image files without a test folder: share held out "
                                  "for test (whole camera sites when known).",
                                  lower_bound=0, upper_bound=0.9)
    allow_duplicate_files: bool = option(False, "Image files: train even when one image (one "
                                         "file through links, or identical copies) is under "
                                         "two classes or in two splits; a warning instead "
                                         "of the error.")
    resize: str = option("stretch", "Image files: resize mode (recorded in the bundle).",
                         choices=["stretch", "crop", "pad"])
    augment: str = option("", "Training augmentation (image files and in-memory "
                          "data): comma list of flip,rrc,randaugment,erasing,mixup,cutmix.")
    crop_boxes: bool = option(False, "coco: train on annotation-box crops.")
    detection_threshold: float = option(0.2, "md: detections at or above this confidence "
                                        "become crops (kerascls-edge predict's default).",
                                        lower_bound=0, upper_bound=1)
    detection_categories: str = option("animal", "md: comma list of MegaDetector category "
                                       "names or ids to crop.")
    crop_padding: float = option(0.0, "md: widen each crop side by this fraction of the box "
                                 "(recorded in the bundle).", lower_bound=0)
    square_crops: bool = option(False, "md: square crops (recorded in the bundle).")
    min_crop_px: int = option(0, "md: drop detector boxes whose shorter side is under this "
                              "many pixels.", lower_bound=0)
    empty_class: str = option("", "md: images with no detection become this class (whole "
                              "frame).")
    frame_every: float = option(1.0, "Video files: sample a frame every this many seconds of "
                                "presentation time, as kerascls-edge does (recorded in the "
                                "bundle).", lower_bound=0.001, upper_bound=1e6)
    max_frames: int = option(32, "Video files: at most this many sampled frames per video, "
                             "spread evenly (recorded in the bundle).", lower_bound=1)
    balance: str = option("none", "Imbalanced classes: class weights or oversampling.",
                          choices=["none", "weights", "sample"])
    cache: str = option("auto", "Image files: auto|memory|none|FILE_PREFIX.")
    monitor: str = option("val_loss", "History column that picks the best epoch (val_loss, "
                          "val_accuracy, val_top5 …); RUN/model.keras holds it.")
    early_stopping_patience: int = option(0, "Stop after this many epochs without a better "
                                          "--monitor (0 = off).", lower_bound=0)
    calibrate: bool = option(True, "Fit a softmax temperature on the validation split and "
                             "fold it into the head (when a validation split exists).")
    run_eagerly: bool = option(False, "Run the train step eagerly (no graph tracing): for "
                               "debugging and one-step smoke runs.")
    qat: bool = option(False, "After training, fine-tune one epoch with quantization-aware "
                       "training and write the int8 bundle to RUN/bundle (as `export --qat`).")
    prune_sparsity: float = option(0.0, "After training, magnitude-prune Conv2D/Dense "
                                   "kernels to this share of zeros and write the int8 "
                                   "bundle to RUN/bundle (as `export --prune_sparsity`).",
                                   lower_bound=0, upper_bound=0.99)
    seed: int = option(0, "Random seed.")
    output_dir: str = option("", "Run directory; default runs/ARCH-TIMESTAMP.")
    model_args: dict = option(help="Architecture options (--model_arg KEY=VALUE).",
                              default_factory=dict, flag=False)
    class_names: list = option(help="Class names, from the data.", default_factory=list,
                               flag=False)
    input_shape: list = option(help="(H, W, C) of the model input, from the data and "
                               "--image_size/--channels.", default_factory=list, flag=False)

    def save(self, run_dir: Path) -> None:
        from kerascls.utils import atomic_path
        with atomic_path(Path(run_dir) / "config.json") as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> "TrainConfig":
        """A run's config; fields its config.json lacks (older kerascls) take defaults."""
        data = json.loads((Path(run_dir) / "config.json").read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def flag_fields() -> list[dataclasses.Field]:
    """The ``TrainConfig`` fields that are ``kerascls train`` flags, in definition order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True)]


def merge_config(file: str | None, explicit: dict, defaults: dict) -> dict:
    """Settings from a JSON config file, overridden by the flags given explicitly.

    Args:
        file: a JSON object of ``TrainConfig`` fields (e.g. an earlier ``RUN/config.json``).
        explicit: the flags set on the command line (they win).
        defaults: every flag's value (used where neither the file nor the user sets one).
    """
    values = dict(defaults)
    if file:
        loaded = json.loads(Path(file).read_text())
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise UserError(f"{file}: unknown config keys {unknown}")
        values.update({k: v for k, v in loaded.items()
                       if k not in ("class_names", "input_shape")})  # re-derived from data
    values.update(explicit)
    return values


def parse_model_args(items: list[str]) -> dict:
    """``["norm=group", "drop_path=0.1"]`` → ``{"norm": "group", "drop_path": 0.1}``.

    Values are read as JSON where they parse (numbers, booleans, lists), else as strings.
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--model_arg must be KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out

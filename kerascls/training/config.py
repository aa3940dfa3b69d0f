"""The run configuration: every choice that shapes a training run, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    """Fully resolved settings of one run (written to ``RUN/config.json``)."""

    arch: str = "small_cnn"
    data: str = "fashion_mnist"
    epochs: int = 8
    batch_size: int = 128
    image_size: int = 0            # 0: the data's native size
    channels: int = 0              # 0: the data's native channel count
    optimizer: str = "adamw"       # adamw | sgd
    learning_rate: float = 0.0     # 0: the architecture's (registry; 3e-3, VGG/AlexNet 1e-4)
    weight_decay: float = 5e-4
    warmup_steps: int = 200
    lr_schedule: str = "cosine"    # cosine (warm-up then cosine) | step (÷10 at 50% and 75%)
    mixed_precision: str = "none"  # none | mixed_float16 | mixed_bfloat16
    xla: bool = False              # jit_compile the train step
    checkpoint_every_steps: int = 0  # 0: resume state saved at epoch ends only
    devices: str = ""              # "": every GPU (Mirrored when 2+) | gpu:0,1 | cpu:N
    weights: str = ""              # imagenet | .keras/.weights.h5 file | run directory
    freeze_backbone: bool = False  # train the head only (BatchNorm then in inference mode)
    finetune_epochs: int = 0       # then this many epochs with every layer trainable
    finetune_lr_factor: float = 0.1  # learning rate of the fine-tuning phase, × learning_rate
    label_smoothing: float = 0.0
    val_fraction: float = 0.1
    max_train_images: int = 0      # 0: all
    max_test_images: int = 0       # 0: all (a seeded subset of the test split for smoke runs)
    test_fraction: float = 0.1     # file sources without a test folder: share held out for test
    resize: str = "stretch"        # stretch | crop | pad (file sources; written to model.json)
    augment: str = ""              # comma list: flip,rrc,randaugment,erasing,mixup,cutmix
    crop_boxes: bool = False       # coco: train on annotation-box crops
    detection_threshold: float = 0.2  # md: detections at or above this confidence are crops
    detection_categories: str = "animal"  # md: comma list of category names or ids
    crop_padding: float = 0.0      # md: crop = box widened by this fraction per side
    square_crops: bool = False     # md: grow the crop's shorter side to the longer
    min_crop_px: int = 0           # md: drop boxes whose shorter side is under this (px)
    empty_class: str = ""          # md: images without a detection become this class
    balance: str = "none"          # none | weights (class_weight) | sample (oversampling)
    cache: str = "auto"            # auto | memory | none | file path prefix
    monitor: str = "val_loss"      # best epoch by this history column (val_accuracy, val_top5 …)
    early_stopping_patience: int = 0  # stop after N epochs without a better monitor; 0 = off
    calibrate: bool = True         # fit a temperature on validation, fold it into the head
    run_eagerly: bool = False      # debugging/smoke: no tf.function tracing of the train step
    seed: int = 0
    output_dir: str = ""
    model_args: dict = field(default_factory=dict)
    class_names: list = field(default_factory=list)
    input_shape: list = field(default_factory=list)

    def save(self, run_dir: Path) -> None:
        from kerascls.utils import atomic_path
        with atomic_path(Path(run_dir) / "config.json") as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> "TrainConfig":
        data = json.loads((Path(run_dir) / "config.json").read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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
            raise ValueError(f"{file}: unknown config keys {unknown}")
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
            raise ValueError(f"--model_arg must be KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out

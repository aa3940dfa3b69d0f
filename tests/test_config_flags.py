"""One definition of every training option: ``TrainConfig`` and ``kerascls train``'s flags agree.

The flags are generated from the dataclass; these tests read both sides through their public
faces (``dataclasses.fields`` and absl's ``FlagValues``) and fail on any mismatch, and they pin
every flag name, type, default and bound that existed before the flags were generated.
"""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
from absl import flags

from kerascls.cli import _train_flags
from kerascls.config import TrainConfig
from kerascls.errors import UserError

PARSERS = {str: flags.ArgumentParser, int: flags.IntegerParser, float: flags.FloatParser,
           bool: flags.BooleanParser}
HAND_WRITTEN = {"config", "overwrite", "model_arg", "taxonomy"}  # steer the command
NOT_FLAGS = {"model_args", "class_names", "input_shape"}  # --model_arg, or from the data

# kerascls train's flags before they were generated (name: parser, default, lower, upper,
# choices), plus --warmup_steps, the one field that had no flag.
BEFORE = {
    "allow_duplicate_files": ("BooleanParser", False, None, None, None),
    "arch": ("ArgumentParser", "small_cnn", None, None, None),
    "augment": ("ArgumentParser", "", None, None, None),
    "balance": ("EnumParser", "none", None, None, ["none", "weights", "sample"]),
    "batch_size": ("IntegerParser", 128, 1, None, None),
    "cache": ("ArgumentParser", "auto", None, None, None),
    "calibrate": ("BooleanParser", True, None, None, None),
    "channels": ("IntegerParser", 0, 0, 4, None),
    "checkpoint_every_steps": ("IntegerParser", 0, 0, None, None),
    "config": ("ArgumentParser", None, None, None, None),
    "crop_boxes": ("BooleanParser", False, None, None, None),
    "crop_padding": ("FloatParser", 0.0, 0, None, None),
    "data": ("ArgumentParser", "fashion_mnist", None, None, None),
    "detection_categories": ("ArgumentParser", "animal", None, None, None),
    "detection_threshold": ("FloatParser", 0.2, 0, 1, None),
    "devices": ("ArgumentParser", "", None, None, None),
    "early_stopping_patience": ("IntegerParser", 0, 0, None, None),
    "empty_class": ("ArgumentParser", "", None, None, None),
    "epochs": ("IntegerParser", 8, 1, None, None),
    "finetune_epochs": ("IntegerParser", 0, 0, None, None),
    "finetune_lr_factor": ("FloatParser", 0.1, 0, None, None),
    "feature_cache": ("EnumParser", "auto", None, None, ["auto", "off"]),
    "feature_views": ("IntegerParser", 4, 1, None, None),
    "feature_cache_memory_mb": ("IntegerParser", 1024, 0, None, None),
    "frame_every": ("FloatParser", 1.0, 0.001, 1e6, None),
    "freeze_backbone": ("BooleanParser", False, None, None, None),
    "image_size": ("IntegerParser", 0, 0, None, None),
    "label_smoothing": ("FloatParser", 0.1, 0, 1, None),
    "learning_rate": ("FloatParser", 0.0, 0, None, None),
    "lr_schedule": ("EnumParser", "cosine", None, None, ["cosine", "step"]),
    "max_test_images": ("IntegerParser", 0, 0, None, None),
    "max_train_images": ("IntegerParser", 0, 0, None, None),
    "max_frames": ("IntegerParser", 32, 1, None, None),
    "min_crop_px": ("IntegerParser", 0, 0, None, None),
    "mixed_precision": ("EnumParser", "auto", None, None,
                        ["auto", "none", "mixed_float16", "mixed_bfloat16"]),
    "model_arg": ("ArgumentParser", [], None, None, None),
    "monitor": ("ArgumentParser", "val_loss", None, None, None),
    "optimizer": ("EnumParser", "adamw", None, None, ["adamw", "sgd"]),
    "output_dir": ("ArgumentParser", "", None, None, None),
    "overwrite": ("BooleanParser", False, None, None, None),
    "prune_sparsity": ("FloatParser", 0.0, 0, 0.99, None),
    "qat": ("BooleanParser", False, None, None, None),
    "resize": ("EnumParser", "stretch", None, None, ["stretch", "crop", "pad"]),
    "run_eagerly": ("BooleanParser", False, None, None, None),
    "seed": ("IntegerParser", 0, None, None, None),
    "square_crops": ("BooleanParser", False, None, None, None),
    "taxonomy": ("ArgumentParser", None, None, None, None),
    "test_fraction": ("FloatParser", 0.1, 0, 0.9, None),
    "val_fraction": ("FloatParser", 0.1, 0, 0.9, None),
    "warmup_steps": ("IntegerParser", 200, 0, None, None),
    "weight_decay": ("FloatParser", 0.0005, 0, None, None),
    "weights": ("ArgumentParser", "", None, None, None),
    "xla": ("BooleanParser", False, None, None, None),
}


@pytest.fixture(scope="module")
def train_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    _train_flags(fv, "kerascls train")
    return fv


def _describe(flag: flags.Flag) -> tuple:
    parser = flag.parser
    return (type(parser).__name__, flag.default, getattr(parser, "lower_bound", None),
            getattr(parser, "upper_bound", None), getattr(parser, "enum_values", None))


def test_flags_keep_every_name_type_default_and_bound(train_flags):
    got = {name: _describe(train_flags[name]) for name in train_flags}
    assert sorted(got) == sorted(BEFORE)
    for name, want in BEFORE.items():
        assert got[name] == want, name


def test_every_field_is_its_flag(train_flags):
    types = typing.get_type_hints(TrainConfig)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(train_flags) == (set(fields) - NOT_FLAGS) | HAND_WRITTEN
    for name, f in fields.items():
        assert f.metadata.get("help"), f"{name}: no help text"
        if name in NOT_FLAGS:
            continue
        flag, meta = train_flags[name], f.metadata
        assert flag.default == f.default, name
        assert flag.help.endswith(meta["help"]), name  # enums prefix "<a|b>: "
        if meta.get("choices"):
            assert isinstance(flag.parser, flags.EnumParser), name
            assert flag.parser.enum_values == list(meta["choices"]), name
            assert f.default in meta["choices"], name
        else:
            assert type(flag.parser) is PARSERS[types[name]], name
            assert isinstance(f.default, types[name]), name
        for bound in ("lower_bound", "upper_bound"):
            assert getattr(flag.parser, bound, None) == meta.get(bound), (name, bound)


def test_config_json_round_trips_every_field(tmp_path):
    changed = {}
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        choices = f.metadata.get("choices")
        if choices:
            changed[f.name] = next(c for c in choices if c != default)
        elif isinstance(default, bool):
            changed[f.name] = not default
        elif isinstance(default, (int, float)):
            changed[f.name] = type(default)(default + 1 if f.name != "prune_sparsity" else 0.5)
        elif isinstance(default, str):
            changed[f.name] = default + "x"
        elif isinstance(default, dict):
            changed[f.name] = {"norm": "group", "drop_path": 0.1}
        else:
            changed[f.name] = ["a", "b"] if f.name == "class_names" else [32, 32, 3]
    cfg = TrainConfig(**changed)
    cfg.save(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert saved["qat"] is True and saved["prune_sparsity"] == 0.5
    loaded = TrainConfig.load(tmp_path)
    assert loaded == cfg
    for name, value in changed.items():
        assert getattr(loaded, name) == value, name


def test_old_config_json_loads_with_defaults(tmp_path):
    """A run written before the newer fields existed still loads (the fields take defaults)."""
    old = {"arch": "lenet", "data": "fashion_mnist", "epochs": 2, "class_names": ["a", "b"],
           "input_shape": [28, 28, 1], "model_args": {}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = TrainConfig.load(tmp_path)
    assert (cfg.arch, cfg.epochs, cfg.resize, cfg.cache, cfg.qat) == (
        "lenet", 2, "stretch", "auto", False)
    assert (cfg.detection_threshold, cfg.detection_categories) == (0.2, "animal")
    from kerascls.data.camtrap_sources import options_from_config
    assert options_from_config(cfg).categories == ("animal",)


def test_unknown_model_arg_lists_the_valid_ones():
    from kerascls.models.registry import check_model_args, model_arg_names
    valid = model_arg_names("resnet18")
    assert {"norm", "attention", "drop_path", "stem_kind", "task", "logits"} <= set(valid)
    assert "weights" not in valid and "x" not in valid
    check_model_args("resnet18", {"norm": "group", "task": "binary"})
    with pytest.raises(UserError, match="bogus.*valid keys: .*drop_path") as err:
        check_model_args("resnet18", {"bogus": 1, "norm": "group"})
    assert "\n" not in str(err.value)
    assert "lite" in model_arg_names("efficientnet_b0")
    assert "lite" not in model_arg_names("small_cnn")


def test_a_list_option_given_as_text_is_refused_with_the_json_form():
    """``--model_arg widths=16,32,128`` parses as the text "16,32,128": refused in one line
    that shows the JSON list, not a TypeError from inside Conv2D."""
    from kerascls.models.registry import check_model_args
    check_model_args("small_cnn", {"widths": [16, 32, 128], "pool": 0})
    with pytest.raises(UserError, match=r"widths='16,32,128': small_cnn takes a list here, "
                       r"written as JSON, e\.g\. widths=\[16,32,64\]$"):
        check_model_args("small_cnn", {"widths": "16,32,128"}, "--model_arg")


def test_cli_refuses_an_unknown_model_arg_in_one_line(cli):
    out = cli("train", "--arch", "lenet", "--model_arg", "widths=[1,2]", check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("kerascls: error: train: --model_arg widths: not an option "
                                "of lenet; valid keys: "), out.stderr
    assert "Traceback" not in out.stderr

"""The CLI's contract: help lists every flag; mistakes give one line and a non-zero exit."""

from __future__ import annotations

import pytest

from kerascls.cli import COMMANDS, command_help, top_help


def test_top_help_lists_every_command_and_flag(cli):
    out = cli("--help").stdout
    for name in COMMANDS:
        assert f"usage: kerascls {name}" in out
    for flag in ("--arch", "--epochs", "--quantize", "--calibration_samples", "--top_k",
                 "--num_classes", "--[no]allow_float_ops"):
        assert flag in out
    assert out == top_help() + "\n"


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_command_help_has_help_text_for_every_flag(cmd):
    text = command_help(cmd)
    flag_lines = [line for line in text.splitlines() if line.startswith("  --")]
    assert flag_lines, text
    for line in flag_lines:
        name, _, helptext = line.partition(":")
        assert helptext.strip(), f"{cmd} {name} has no help text"


def test_subcommand_help_exits_zero(cli):
    proc = cli("export", "--help")
    assert "--quantize" in proc.stdout and "--model" in proc.stdout
    assert "--epochs" not in proc.stdout  # only export's own flags


@pytest.mark.parametrize("args, words", [
    (["frobnicate"], ["unknown command 'frobnicate'"]),
    (["train", "--no_such_flag=1"], ["Unknown command line flag 'no_such_flag'"]),
    (["train", "--epochs=abc"], ["--epochs=abc"]),
    (["train", "--epochs=0"], ["--epochs"]),
    (["export", "--model=x", "--quantize=int4"], ["--quantize", "int4"]),
    (["evaluate"], ["--model"]),
    (["train", "--arch=resnett50"], ["unknown model 'resnett50'"]),
    (["export", "--model=/nonexistent/run"], ["no model at"]),
])
def test_mistakes_give_one_line_and_nonzero_exit(cli, args, words):
    proc = cli(*args, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kerascls: error:")
    for word in words:
        assert word in lines[0]


def test_models_lists_every_registered_name(cli):
    import kerascls
    out = cli("models", "--nomacs").stdout
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert listed == kerascls.list_models()
    assert "61,100,840" in next(line for line in out.splitlines() if line.startswith("alexnet"))


def test_summary_prints_totals(cli):
    out = cli("summary", "--arch=lenet", "--image_size=32", "--num_classes=10").stdout
    assert "total parameters: 62,006" in out
    assert "conv1" in out and "total MACs" in out

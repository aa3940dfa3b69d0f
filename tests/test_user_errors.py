"""Bad input is one line; an internal bug keeps its traceback (``kerascls.errors``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerascls.errors import UserError, is_user_error

ROOT = Path(__file__).resolve().parents[1]


def _caught(fn, *args, **kwargs) -> BaseException:
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  (the point is to look at whatever it raises)
        return e
    raise AssertionError(f"{fn.__name__} raised nothing")


def test_our_checks_are_user_errors():
    from kerascls.data.splits import split_records
    from kerascls.models import model_info
    error = _caught(split_records, [], 0.6, 0.6)
    assert isinstance(error, UserError) and isinstance(error, ValueError)
    assert is_user_error(error)
    assert is_user_error(_caught(model_info, "resnett50"))  # a check raised by our code
    assert is_user_error(FileNotFoundError("no such run"))


def test_internal_bugs_are_not():
    from kerascls.cli import command_help
    from kerascls.models import create_model
    key = _caught(command_help, "no_such_command")  # a lookup in our code: a bug
    assert isinstance(key, KeyError) and not is_user_error(key)
    deep = _caught(create_model, "small_cnn", 0, (16, 16, 3))  # Keras' own check, deep down
    assert isinstance(deep, ValueError) and not isinstance(deep, UserError)
    assert not is_user_error(deep)
    assert not is_user_error(RuntimeError("raised nowhere"))  # no traceback: not ours
    assert not is_user_error(TypeError("bad call"))
    from kerascls.models._keras_private import applications_module
    invariant = _caught(applications_module, "no_such_module")  # our own `raise ValueError(`
    assert type(invariant) is ValueError and not is_user_error(invariant)


def _numpy_bug():
    np.zeros(3).reshape(2)  # NumPy's ValueError, raised inside kerascls' call stack


def _invariant_bug():
    from kerascls.models._keras_private import applications_module
    applications_module("no_such_module")


@pytest.mark.parametrize("bug", [_numpy_bug, _invariant_bug])
def test_cli_handler_reraises_a_plain_value_error(monkeypatch, bug):
    """In-process: the runner re-raises (the traceback is the report) instead of exiting
    with a one-line message, for a ValueError that is not a ``UserError``."""
    from absl import logging

    from kerascls import cli
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # the runner's setdefault, undone after
    verbosity = logging.get_verbosity()
    monkeypatch.setitem(cli.COMMANDS, "models",
                        (cli.COMMANDS["models"][0], lambda fl, args: bug(), "x"))
    try:
        with pytest.raises(ValueError) as err:  # no SystemExit: nothing printed in one line
            cli._runner("models")(["kerascls models"])
    finally:
        logging.set_verbosity(verbosity)
    assert not isinstance(err.value, UserError)


def test_cli_handler_prints_a_user_error_in_one_line(monkeypatch, capsys):
    from absl import logging

    from kerascls import cli

    def broken(fl, args):
        raise UserError("--data: no images in /x")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    verbosity = logging.get_verbosity()
    monkeypatch.setitem(cli.COMMANDS, "models", (cli.COMMANDS["models"][0], broken, "x"))
    try:
        with pytest.raises(SystemExit) as stop:
            cli._runner("models")(["kerascls models"])
    finally:
        logging.set_verbosity(verbosity)
    assert stop.value.code == 1
    assert capsys.readouterr().err == "kerascls: error: models: --data: no images in /x\n"


# A real CLI process whose `models` command is replaced by one failing in the given way: the
# runner (not the command) decides between a one-line error and a traceback.
_FAILING = """
import sys
from kerascls import cli
from kerascls.errors import UserError
def broken(fl, args):
    {body}
cli.COMMANDS["models"] = (cli.COMMANDS["models"][0], broken, "x")
cli.run(["kerascls", "models"])
"""


@pytest.mark.parametrize("body, one_line", [
    # the one-line side is also what tests/test_cli.py checks through real commands
    pytest.param("raise UserError('--data: no images in /x')", True, marks=pytest.mark.slow),
    ("return {}['missing']", False),
])
def test_cli_prints_user_errors_in_one_line_and_bugs_with_traceback(body, one_line):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _FAILING.format(body=body)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if one_line:
        assert lines == ["kerascls: error: models: --data: no images in /x"], proc.stderr
    else:
        assert "Traceback" in proc.stderr and "KeyError: 'missing'" in proc.stderr
        assert "kerascls: error:" not in proc.stderr

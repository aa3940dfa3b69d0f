"""Bad input is one line; an internal bug keeps its traceback (``kerascls.errors``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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

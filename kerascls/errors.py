"""What counts as bad input: the CLI prints it as one line, anything else with its traceback
(an internal bug must not look like an operator's mistake)."""

from __future__ import annotations

import linecache
import re
from pathlib import Path

# OS errors that mean the operator named a wrong path (not a failing disk or a bug)
BAD_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, FileExistsError)
_OURS = (Path(__file__).resolve().parent,
         Path(__file__).resolve().parents[1] / "export" / "kerascls_edge")
_RAISE = re.compile(r"raise\s+[A-Za-z_][\w.]*\s*\(")


class UserError(ValueError):
    """Bad input an operator can fix (a flag, a file, a data spec); the message says how.

    A ``ValueError`` so that callers catching ``ValueError`` keep working.
    """


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is one to report in one line: a ``UserError``, a bad path, or a
    ``ValueError``/``RuntimeError``/``FloatingPointError`` that kerascls' own code raises
    on purpose (a ``raise Error(…)`` statement: the checks written before ``UserError``).

    A ``KeyError``, a ``TypeError``, or a ``ValueError`` raised inside Keras, TensorFlow or
    NumPy is a bug (or a check we lack) and keeps its traceback.
    """
    if isinstance(error, (UserError, *BAD_PATH_ERRORS)):
        return True
    if not isinstance(error, (ValueError, RuntimeError, FloatingPointError)):
        return False
    return _raised_by_us(error)


def _raised_by_us(error: BaseException) -> bool:
    """The innermost frame is a ``raise X(...)`` statement in kerascls or kerascls_edge."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    file = Path(tb.tb_frame.f_code.co_filename).resolve()
    if not any(file.is_relative_to(root) for root in _OURS):
        return False
    return bool(_RAISE.match(linecache.getline(str(file), tb.tb_lineno).strip()))

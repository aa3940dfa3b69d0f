"""What counts as bad input: the CLI prints it as one line, anything else with its traceback
(an internal bug must not look like an operator's mistake)."""

from __future__ import annotations

# OS errors that mean the operator named a wrong path (not a failing disk or a bug)
BAD_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, FileExistsError)


class UserError(ValueError):
    """Bad input an operator can fix (a flag, a file, a data spec); the message says how.

    A ``ValueError`` so that callers catching ``ValueError`` keep working. A check that
    used to raise another type subclasses both (``UserError, RuntimeError``) to stay
    compatible.
    """


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is one to report in one line: a ``UserError`` or a bad path.

    Everything else (a plain ``ValueError`` or ``RuntimeError``, even one kerascls raises
    for an invariant, a ``KeyError``, a ``TypeError``, what Keras, TensorFlow or NumPy
    raise) is a bug, or a check we lack, and keeps its traceback.
    """
    return isinstance(error, (UserError, *BAD_PATH_ERRORS))

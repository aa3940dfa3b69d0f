"""The one user-facing error type of the device runtime (its own module: everything imports it)."""


class EdgeError(ValueError):
    """A user-facing error: the CLI prints its message on one line, without a traceback."""

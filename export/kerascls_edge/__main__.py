"""`python -m kerascls_edge ...` = `kerascls-edge ...`."""

from .cli import run

run()

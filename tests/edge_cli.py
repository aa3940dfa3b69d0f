"""``kerascls-edge`` run in-process by the tests: a refusal must be exactly one error line."""

from __future__ import annotations

import re

from kerascls_edge.cli import main

ERROR_LINE = re.compile(r"^kerascls-edge: error: [^\n]+$")


def run_edge(capsys, *args) -> tuple[int, str, str]:
    """The CLI in-process (arguments as strings); rc, stdout, stderr. Never a traceback, and a
    refusal (rc 2) is one line."""
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    if rc == 2:
        lines = [ln for ln in cap.err.splitlines() if ln.strip()]
        assert len(lines) == 1 and ERROR_LINE.match(lines[0]), cap.err
    return rc, cap.out, cap.err

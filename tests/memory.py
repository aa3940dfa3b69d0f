"""Peak memory of a command, measured so that pytest's own pages don't count.

Linux carries a process's peak RSS across exec: a child started straight from a pytest worker
that has imported TensorFlow reports the worker's ~1-2 GB as its own peak (RUSAGE_SELF in the
child, os.wait4 or RUSAGE_CHILDREN in the worker alike). A small fresh Python in between starts
the command and reads its children's peak from the kernel, so only the command counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

_WRAP = r"""
import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as f:
    json.dump([rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss], f)
"""


def run_measured(cmd: list[str], timeout: float = 1800,
                 **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """`subprocess.run(cmd, capture_output=True, text=True)` and the command's peak RSS in MB
    (KiB on Linux / 1024); the returned process carries the command's own exit status."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "peak.json"
        proc = subprocess.run([sys.executable, "-c", _WRAP, str(report), *cmd],
                              capture_output=True, text=True, timeout=timeout, **kwargs)
        rc, kib = json.loads(report.read_text())
    proc.returncode = rc
    return proc, kib / 1024

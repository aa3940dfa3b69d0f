"""int8 TFLite op audit of one registered model, in a subprocess (the converter leaks
memory). Shared by tests/test_zoo2_int8.py and tests/test_efficientnetv2.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64

SCRIPT = """
import json, sys, numpy as np
from collections import Counter
from kerascls.models import create_model
from kerascls.tflite.audit import op_audit, non_integer_ops
from kerascls.tflite.convert import convert
name, size = sys.argv[1], int(sys.argv[2])
model = create_model(name, 10, (size, size, 3))
cal = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
audit = op_audit(convert(model, "int8", cal))
bad = non_integer_ops(audit)
print(json.dumps({"name": name, "ops": dict(Counter(r["op"] for r in audit)),
                  "float": dict(Counter(r["op"] for r in bad)),
                  "where": sorted({r["where"] for r in bad})[:20]}))
"""


def audit(name: str, size: int = SIZE) -> dict:
    """Op counts and the non-integer ops of ``name`` converted to int8 at ``size``."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, name, str(size)], env=env,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

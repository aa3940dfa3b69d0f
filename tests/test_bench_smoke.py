"""The GPU training benchmark runs end to end on a CPU, under JAX, without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the default run's time budget (issue 26): CI's slow step runs it
def test_gpu_train_smoke_runs_without_tensorflow():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           # unoptimized XLA code generation: compiling dominates a one-step smoke run
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_train.py"), "--smoke",
           "--arch", "resnet50", "--mode", "jit", "--precision", "float32"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax" and result["tensorflow_imported"] is False
    row = result["results"]["resnet50/jit"]
    assert row["ours"] > 0 and row["theirs"] > 0

"""The training benchmarks run: the GPU one end to end on a CPU, under JAX, without
TensorFlow; the CPU compute-defaults one at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_debian

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


@needs_debian
def test_train_step_bench_prints_every_setting_and_the_auto_choice():
    """bench/train_step_cpu.py runs (tiny) and reports the four settings it compares."""
    from kerascls.training.distribute import auto_precision
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step_cpu.py"),
                          "--images", "640", "--batch_size", "64", "--rounds", "1"],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert sorted(result["img_s"]) == ["float32/1", "float32/16", "mixed_bfloat16/1",
                                       "mixed_bfloat16/16"]
    assert all(v > 0 for v in result["img_s"].values())
    assert result["auto"] == auto_precision()

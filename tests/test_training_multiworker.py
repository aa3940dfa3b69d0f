"""MultiWorkerMirroredStrategy: two worker processes on localhost end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import kerascls.layers  # noqa: F401  (registers the custom layers for loading)
import kerascls.models  # noqa: F401
from tests.conftest import ROOT
from tests.test_fashion_mnist import needs_debian


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@needs_debian
@pytest.mark.slow
def test_two_workers_end_identical(tmp_path):
    import keras
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    cmd = [sys.executable, "-m", "kerascls.cli", "train", "--epochs=2",
           "--max_train_images=1024", "--batch_size=64", "--val_fraction=0",
           f"--output_dir={run}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": json.dumps(tf_config)}
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    models = []
    for index in range(2):
        model = kerascls.models.create_model("small_cnn", 10, (28, 28, 1))
        model.load_weights(run / "workers" / f"{index}.weights.h5")
        models.append([np.asarray(w) for w in model.weights])
    for a, b in zip(*models):
        np.testing.assert_array_equal(a, b)
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["accuracy"] > 0.5
    trained = keras.saving.load_model(run / "model.keras", compile=False)
    for a, b in zip(models[0], trained.weights):
        np.testing.assert_array_equal(a, np.asarray(b))

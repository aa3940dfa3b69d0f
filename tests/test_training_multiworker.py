"""MultiWorkerMirroredStrategy: two worker processes on localhost end with identical weights,
and a pair that loses a worker (kill -9) resumes when both are started again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kerascls.layers  # noqa: F401  (registers the custom layers for loading)
import kerascls.models  # noqa: F401
from kerascls.training import distribute
from tests.conftest import ROOT, needs_debian


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _launch(cmd: list[str], workers: list[str], logs: Path) -> list[subprocess.Popen]:
    """One process per worker of ``workers`` (TF_CONFIG), output into ``logs/i.txt``."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for index in range(len(workers)):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": json.dumps(tf_config)}
        with open(logs / f"{index}.txt", "w") as out:
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out,
                                          stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(procs: list[subprocess.Popen], logs: Path, timeout: float = 400) -> list[str]:
    """Wait for every worker (killing the rest on a timeout); their outputs."""
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(logs / f"{i}.txt").read_text() for i in range(len(procs))]


def _worker_weights(run: Path) -> list[list[np.ndarray]]:
    models = []
    for index in range(2):
        model = kerascls.models.create_model("small_cnn", 10, (28, 28, 1))
        model.load_weights(run / "workers" / f"{index}.weights.h5")
        models.append([np.asarray(w) for w in model.weights])
    return models


@needs_debian
@pytest.mark.slow
def test_two_workers_end_identical(tmp_path):
    import keras
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    cmd = [sys.executable, "-m", "kerascls.cli", "train", "--epochs=2",
           "--max_train_images=1024", "--batch_size=64", "--val_fraction=0",
           f"--output_dir={run}"]
    procs = _launch(cmd, workers, tmp_path / "logs")
    outs = _finish(procs, tmp_path / "logs")
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    models = _worker_weights(run)
    for a, b in zip(*models):
        np.testing.assert_array_equal(a, b)
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["accuracy"] > 0.5
    trained = keras.saving.load_model(run / "model.keras", compile=False)
    for a, b in zip(models[0], trained.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


def _wait_for_state(state_file: Path, procs, epoch: int, step: int,
                    timeout: float = 300) -> dict:
    """The chief's resume state once it reaches ``epoch``/``step`` (polled, no sleeps
    guessed from timings); fails if a worker exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert all(p.poll() is None for p in procs), "a worker exited before the kill"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):  # not written yet
            state = None
        if state and (state["epoch"], state["step"]) >= (epoch, step):
            return state
        time.sleep(0.02)
    raise AssertionError(f"no resume state at epoch {epoch} step {step} in {timeout} s")


@needs_debian
@pytest.mark.slow
def test_killed_worker_pair_resumes_from_step_checkpoint(tmp_path):
    """kill -9 of worker 1 in the middle of the second epoch: the chief stops by itself
    (TF's heartbeats notice the lost peer in ~6 s) with one line saying how to resume; the
    same command on both resumes from the chief's last step checkpoint, does not train the
    first epoch again, and both end identical."""
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    steps = 2048 // 32
    cmd = [sys.executable, "-m", "kerascls.cli", "train", "--epochs=3",
           "--max_train_images=2048", "--batch_size=32", "--val_fraction=0",
           "--checkpoint_every_steps=8", "--max_test_images=500", f"--output_dir={run}"]
    state_file = run / "backup_workers" / "state.json"
    procs = _launch(cmd, workers, tmp_path / "logs1")
    try:
        _wait_for_state(state_file, procs, epoch=1, step=8)
        os.kill(procs[1].pid, signal.SIGKILL)
    finally:
        first = _finish(procs, tmp_path / "logs1", timeout=120)
    assert procs[0].returncode == 1 and "Traceback" not in first[0], first[0][-3000:]
    assert first[0].strip().splitlines()[-1].startswith(
        "kerascls: error: train: worker 0: another worker stopped"), first[0][-3000:]
    saved = json.loads(state_file.read_text())
    assert saved["epoch"] == 1 and 8 <= saved["step"] < steps, (saved, first[0][-2000:])
    assert [row["epoch"] for row in saved["history"]] == [0]
    assert not (run / "model.keras").exists()

    procs = _launch(cmd, workers, tmp_path / "logs2")
    outs = _finish(procs, tmp_path / "logs2")
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        assert f"resumes at epoch 2 step {saved['step']}/{steps}" in out, out[-3000:]
        assert "epoch 1/3" not in out and "epoch 2/3" in out and "epoch 3/3" in out
    models = _worker_weights(run)
    for a, b in zip(*models):
        np.testing.assert_array_equal(a, b)
    history = (run / "history.csv").read_text().strip().splitlines()
    assert [line.split(",")[0] for line in history] == ["epoch", "0", "1", "2"]
    assert float(history[1].split(",")[1]) == saved["history"][0]["loss"]  # not retrained
    assert not (run / "backup_workers").exists()
    assert json.loads((run / "metrics.json").read_text())["accuracy"] > 0.5


@pytest.mark.parametrize("config, words", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     "not one of the cluster"),
])
def test_bad_tf_config_is_one_line(monkeypatch, config, words):
    monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(ValueError, match=words):
        distribute.worker_count()


def test_chief_task_is_rank_zero(monkeypatch):
    cluster = {"chief": ["h:0"], "worker": ["h:1", "h:2"]}
    for task, rank in [({"type": "chief", "index": 0}, 0), ({"type": "worker", "index": 0}, 1),
                       ({"type": "worker", "index": 1}, 2)]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert (distribute.worker_count(), distribute.worker_index()) == (3, rank)


@pytest.mark.slow  # 6 s alone, 18 s on a busy 2-core machine: importing TensorFlow
def test_malformed_tf_config_stops_train_with_one_line(cli, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}')
    proc = cli("train", "--epochs=1", check=False, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("kerascls: error: train: TF_CONFIG is not valid JSON")


def _tiny_run(seed: int, width: int = 4):
    """A dense model (no dropout: every step is deterministic) and a decaying AdamW, so a
    resume that lost the optimizer moments, its step count or the schedule shows."""
    import keras
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(width, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=12)
    return model, keras.optimizers.AdamW(schedule)


def _batches(fail_at: int | None = None):
    """The same batch at every step (so data order cannot matter); step ``fail_at`` raises."""
    import tensorflow as tf
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 6)), tf.float32)
    y = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])

    def element(i):
        if fail_at is not None:
            tf.debugging.assert_less(i, tf.constant(fail_at, tf.int64), "simulated crash")
        return x, y
    return tf.data.Dataset.range(10**6).map(element)


def _fit(run: Path, seed: int, data, every: int = 0, width: int = 4):
    import keras
    import tensorflow as tf

    from kerascls.training.multiworker import fit_multiworker
    model, optimizer = _tiny_run(seed, width)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    history = fit_multiworker(model, optimizer, loss, data, steps=4, epochs=3, global_batch=8,
                              strategy=tf.distribute.get_strategy(), run=run,
                              checkpoint_every_steps=every)
    return history, [np.asarray(v) for v in model.variables]


def test_resume_continues_exactly(tmp_path):
    """In one process (default strategy, no TF_CONFIG: this process is the chief): a run
    that crashes at step 6 of 12 and is started again ends with the history and the weights
    of an uninterrupted run, from a fresh model with other initial weights; resume state of
    another model is refused."""
    import tensorflow as tf
    reference, ref_weights = _fit(tmp_path / "ref", 0, _batches())
    for every, resumed_at in [(0, (1, 0)), (1, (1, 2))]:
        run = tmp_path / f"every{every}"
        with pytest.raises(tf.errors.InvalidArgumentError, match="simulated crash"):
            _fit(run, 0, _batches(fail_at=6), every)
        state = json.loads((run / "backup_workers" / "state.json").read_text())
        assert (state["epoch"], state["step"]) == resumed_at
        with pytest.raises(ValueError, match="resume state of a different model"):
            _fit(run, 0, _batches(), width=5)
        history, weights = _fit(run, 7, _batches(), every)
        assert history == reference
        for a, b in zip(weights, ref_weights):
            np.testing.assert_array_equal(a, b)
        assert not (run / "backup_workers").exists()
        assert [line.split(",")[0] for line in (run / "history.csv").read_text().split()] == \
            ["epoch", "0", "1", "2"]

"""``kerascls predict --engine ray``: Ray Data actors write exactly kerascls-edge's file.

A Ray head is started for the module (``ray start --head --block``, 2 CPUs, 200 MB object
store); the driver joins it with ``--ray_address`` (one test uses the default local Ray
instead). Compared with ``kerascls-edge predict`` on the same files: the same JSON (but the
completion time) and the same CSV bytes, bad files as failures; an actor killed with
``kill -9`` mid-run loses and doubles nothing; a killed driver resumes from the part files;
an unreachable address and a worker without the model give one line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.scenes import render_folder

ray = pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")
pytestmark = pytest.mark.slow  # a Ray cluster and several CLI runs: ~2-3 min in all

# The test cluster is reachable on 127.0.0.1 only; no token auth between its processes.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
       "RAY_AUTH_MODE": "disabled"}
KERASCLS = [sys.executable, "-m", "kerascls.cli", "predict"]
EDGE = [sys.executable, "-m", "kerascls_edge", "predict"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray head (its own temp dir and ports); yields its address.

    The temp dir is a short one under /tmp, not pytest's: Ray puts Unix sockets there and
    refuses a path over 107 bytes, which pytest-xdist's ``…/pytest-NNNN/popen-gwN/ray0``
    reaches (``validate_socket_filename failed``)."""
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="kc-ray-", dir="/tmp")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         f"--object-store-memory={200 * 1024 * 1024}", "--include-dashboard=false",
         "--node-ip-address=127.0.0.1", f"--temp-dir={tmp}", "--disable-usage-stats"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None and time.monotonic() < deadline, "no Ray head"
            time.sleep(0.5)
    time.sleep(3)  # the raylet registers after the GCS port opens
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """test_edge's tiny uint8 bundle (class from mean colour): made in a few seconds."""
    from tests.bundle_scripts import MAKE_BUNDLES
    out = tmp_path_factory.mktemp("bundles")
    proc = subprocess.run([sys.executable, "-c", MAKE_BUNDLES, str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "u8"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Textured JPEGs at awkward sizes in class folders, a corrupt and an empty file."""
    root = render_folder(tmp_path_factory.mktemp("ray_images") / "images", per_class=7,
                         seed=4, sizes=((97, 61), (61, 97), (640, 480), (123, 89), (301, 7)))
    (root / "rings" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage" * 20)
    (root / "rings" / "empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """300 copies of one noisy PNG (~10 ms to decode each): a run long enough to kill.
    (Copies, not hard links: links to one file are listed once.)"""
    d = tmp_path_factory.mktemp("many")
    src = d / "000.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (720, 960, 3), dtype=np.uint8)).save(
        src, compress_level=1)
    for i in range(1, 300):
        shutil.copyfile(src, d / f"{i:03d}.png")
    return d


def _edge(bundle: Path, images: Path, out: Path, *extra: str) -> dict:
    proc = subprocess.run([*EDGE, str(bundle), str(images), "-o", str(out), "--recursive",
                           "--progress_every=-1", *extra], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _load(out)


def _ray_cmd(bundle: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [*KERASCLS, f"--model={bundle}", f"--output={out}", "--recursive", "--engine=ray",
            *extra, str(images)]


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def _load(path: Path) -> dict:
    if path.suffix == ".csv":
        return {"csv": path.read_bytes()}
    md = json.loads(path.read_text())
    md["info"].pop("classification_completion_time")
    return md


def test_local_ray_writes_the_edge_file(bundle, images, tmp_path):
    """The default: a local Ray started for the run; JSON and CSV as kerascls-edge writes."""
    want = _edge(bundle, images, tmp_path / "edge.json")
    assert {i["file"] for i in want["images"] if "failure" in i} == {"rings/broken.jpg",
                                                                     "rings/empty.jpg"}
    proc = _run(_ray_cmd(bundle, images, tmp_path / "ray.json", "--batch_size=4",
                         "--ray_workers=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _load(tmp_path / "ray.json") == want


def test_cluster_csv_and_detections(cluster, bundle, images, tmp_path):
    want = _edge(bundle, images, tmp_path / "edge.csv")
    proc = _run(_ray_cmd(bundle, images, tmp_path / "ray.csv", f"--ray_address={cluster}",
                         "--batch_size=5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _load(tmp_path / "ray.csv") == want
    md = {"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
          "images": [{"file": "rings/img000.jpg", "detections": [
                         {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.5, 0.6]},
                         {"category": "1", "conf": 0.5, "bbox": [0.5, 0.2, 0.4, 0.7]}]},
                     {"file": "rings/broken.jpg", "detections": [
                         {"category": "1", "conf": 0.7, "bbox": [0.3, 0.2, 0.4, 0.4]}]}]}
    (tmp_path / "md.json").write_text(json.dumps(md))
    det = f"--detections={tmp_path / 'md.json'}"
    want = _edge(bundle, images, tmp_path / "edge_det.json", "--detections",
                 str(tmp_path / "md.json"))
    proc = _run(_ray_cmd(bundle, images, tmp_path / "ray_det.json", f"--ray_address={cluster}",
                         det))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _load(tmp_path / "ray_det.json") == want


def _wait_parts(proc: subprocess.Popen, partial: Path, n: int) -> None:
    deadline = time.monotonic() + 180
    while len(list(partial.glob("part-*.jsonl"))) < n:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint part appeared"
        time.sleep(0.01)


ACTOR_PIDS = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
wait = sys.argv[2] == "wait"
while True:
    pids = [a["Pid"] for a in ray._private.state.actors().values()
            if a["State"] == "ALIVE" and "MapWorker" in a["ActorClassName"] and a["Pid"]]
    if pids or not wait:
        break
    time.sleep(0.05)
print(json.dumps(pids))
"""


def _actor_pids(address: str, wait: bool = False) -> subprocess.Popen | list[int]:
    """PIDs of the live Ray Data actors, from the cluster's GCS (no dashboard needed);
    `wait`: a process that prints them once there are some (started beside the run)."""
    cmd = [sys.executable, "-c", ACTOR_PIDS, address, "wait" if wait else "now"]
    if wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    proc = _run(cmd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def last_json(stdout: str) -> dict:
    """The run's JSON summary: the last stdout line that is one. Ray's driver prints its workers'
    log lines to stdout too, and a raylet's retry notice can come after the summary."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON summary in the run's output: {stdout[-2000:]}")


def test_killed_actor_loses_and_doubles_nothing(cluster, bundle, many, tmp_path):
    want = _edge(bundle, many, tmp_path / "edge.json")
    out = tmp_path / "ray.json"
    finder = _actor_pids(cluster, wait=True)
    proc = subprocess.Popen(_ray_cmd(bundle, many, out, f"--ray_address={cluster}",
                                     "--batch_size=8", "--checkpoint_every=8"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found, err = finder.communicate(timeout=180)
    assert finder.returncode == 0, err[-2000:]
    pids = json.loads(found.strip().splitlines()[-1])
    _wait_parts(proc, tmp_path / "ray.json.partial", 1)
    assert proc.poll() is None, "the run finished before its actor could be killed"
    os.kill(pids[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    summary = last_json(stdout)
    assert summary["images"] == 300 and summary["processed"] == 300
    got = _load(out)
    assert [i["file"] for i in got["images"]] == [i["file"] for i in want["images"]]
    assert got == want
    assert pids[0] not in _actor_pids(cluster)  # it really died (and was replaced)


def test_killed_driver_resumes_from_parts(cluster, bundle, many, tmp_path):
    want = _edge(bundle, many, tmp_path / "edge.json")
    out = tmp_path / "ray.json"
    cmd = _ray_cmd(bundle, many, out, f"--ray_address={cluster}", "--batch_size=8",
                   "--checkpoint_every=8")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_parts(proc, tmp_path / "ray.json.partial", 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not out.exists()
    done = sum(1 for p in (tmp_path / "ray.json.partial").glob("part-*.jsonl")
               for _ in p.open())
    resumed = _run([*cmd[:-1], "--resume", cmd[-1]])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = last_json(resumed.stdout)
    assert summary["resumed"] >= done >= 24 and summary["processed"] == 300 - summary["resumed"]
    assert _load(out) == want


def test_bad_address_and_missing_worker_model_are_one_line(cluster, bundle, images, tmp_path):
    port = _free_port()  # nobody listens there
    proc = _run(_ray_cmd(bundle, images, tmp_path / "a.json", f"--ray_address=127.0.0.1:{port}"),
                timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert err == [f"kerascls: error: cannot reach the Ray cluster at 127.0.0.1:{port}: "
                   "Connection refused"], proc.stderr[-2000:]
    proc = _run(_ray_cmd(bundle, images, tmp_path / "b.json", f"--ray_address={cluster}",
                         f"--ray_model={tmp_path / 'not_there'}"), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kerascls: error: a Ray worker failed: the model ") and \
        "does not exist on Ray worker" in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

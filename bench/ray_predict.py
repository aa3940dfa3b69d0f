"""Ray Data engine vs single-process kerascls-edge: images/s on the same machine and files.

    python bench/ray_predict.py [--files 1200] [--threads 2]

Both classify the same `--files` paths (copies cycling over lila_mixed's 31 full-size
camera-trap JPEGs) with the Coral int8 MobileNet v2 (224x224), write MegaDetector JSON through
the same journal and writer, and are timed from the first listing to the written file:

- edge: `kerascls_edge.runner.predict` in this process (`--threads` interpreter threads,
  decode threads by the runtime's default);
- ray, 1 and 2 workers: `kerascls predict --engine ray`'s backend on a local Ray started once
  beforehand (Ray's start-up, ~10 s, is paid once per run and left out; actor start-up
  within each run is counted). 1 worker gets `--threads` interpreter threads, 2 workers one
  each, so every configuration has the machine's cores.

Prints one JSON line: images/s for each, ratio ray(1)/edge (goal >= 0.8) and ray(2)/ray(1),
the load average before and after (the cores may be shared with other jobs), and checks the
Ray files equal the edge file (but the completion time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))
sys.path.insert(0, str(ROOT))

from kerascls_edge import Classifier  # noqa: E402
from kerascls_edge.runner import Options, predict  # noqa: E402
from tests.shared_paths import coral_labels  # noqa: E402

DATA = ROOT / ".." / "shared" / "data"
CORAL = DATA / "models" / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
# The shared labels name "crane" twice (bird, machine), which kerascls-edge refuses: a renamed copy.
LABELS = Path(tempfile.mkdtemp(prefix="kerascls-bench-")) / "labels.txt"
FRAMES = DATA / "camtrap" / "lila_mixed"


def link_files(n: int, into: Path) -> None:
    """n distinct files cycling over the frames: copies, since kerascls-edge lists each real
    file once (links to one file would be one image)."""
    srcs = sorted(p for p in FRAMES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not srcs:
        sys.exit(f"no frames under {FRAMES}")
    into.mkdir(parents=True)
    for i in range(n):
        shutil.copyfile(srcs[i % len(srcs)], into / f"{i:06d}.jpg")


def _load(path: Path) -> dict:
    md = json.loads(path.read_text())
    md["info"].pop("classification_completion_time", None)
    return md


def run_edge(images: Path, out: Path, threads: int) -> float:
    clf = Classifier(CORAL, labels=str(LABELS), threads=threads)
    opts = Options(output=out, labels_path=str(LABELS), progress_every=-1)
    t = time.perf_counter()
    predict(clf, [str(images)], opts)
    return time.perf_counter() - t


def run_ray(images: Path, out: Path, workers: int, threads: int, batch: int) -> float:
    from kerascls.ray_predict import RayBackend
    backend = RayBackend(keras_model=False, batch_size=batch, workers=workers)
    args = SimpleNamespace(bundle=str(CORAL), labels=str(LABELS),
                           threads=threads if workers == 1 else 1)
    clf = backend.classifier(args)
    opts = Options(output=out, labels_path=str(LABELS), progress_every=-1)
    t = time.perf_counter()
    backend.predict(clf, [str(images)], opts)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch_size", type=int, default=32)
    a = ap.parse_args()
    if not CORAL.exists():
        sys.exit(f"missing {CORAL} (shared data)")
    coral_labels(LABELS)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    from kerascls.ray_predict import init_ray
    load_before = os.getloadavg()
    init_ray(None, 2, 0.0)
    res: dict = {"files": a.files, "threads": a.threads, "batch_size": a.batch_size,
                 "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        link_files(a.files, images)
        edge_s = run_edge(images, Path(tmp) / "edge.json", a.threads)
        ray1_s = run_ray(images, Path(tmp) / "ray1.json", 1, a.threads, a.batch_size)
        ray2_s = run_ray(images, Path(tmp) / "ray2.json", 2, a.threads, a.batch_size)
        want = _load(Path(tmp) / "edge.json")
        res["identical"] = all(_load(Path(tmp) / f) == want for f in ("ray1.json", "ray2.json"))
    res.update({"edge_img_s": round(a.files / edge_s, 1), "ray1_img_s": round(a.files / ray1_s, 1),
                "ray2_img_s": round(a.files / ray2_s, 1)})
    res["ratio_ray1_edge"] = round(res["ray1_img_s"] / res["edge_img_s"], 3)
    res["scaling_ray2_ray1"] = round(res["ray2_img_s"] / res["ray1_img_s"], 3)
    res["load_before"] = [round(x, 2) for x in load_before]
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""kerascls-edge on 64-bit ARM (Raspberry Pi 4/5 class, Debian Bookworm) under qemu user emulation.

scripts/aarch64/build-sysroot.sh builds (once; cached in ~/.cache/kerascls-aarch64) an arm64
Bookworm sysroot from Debian's arm64 .debs and PyPI's aarch64 wheels, pinned to the versions of
numpy/Pillow/LiteRT installed here, plus this tree's ./export. Every check runs the same command
on x86 (this interpreter) and on the emulated Cortex-A76 and compares the two outputs.

Agreement asked for: same files, failures, warnings and top-1; decoded pixels bit-identical;
probabilities within FLOAT_BOUND for float models. Int8 models agree only within INT8_LSB output
steps, because the optimized int8 kernels differ by platform: the same uint8 input tensor gives
different int8 results from XNNPACK's ARM (NEON) and x86 (AVX) paths, and TFLite's built-in
optimized kernels differ across the two even more (up to 23 steps on the Coral model; XNNPACK
vs built-in on one x86 machine: 56). LiteRT's reference kernels (plain C++) give bit-identical
outputs on both (test_reference_kernels_are_bit_identical), so the emulation itself is exact.
Measured on the shared data: Coral MobileNet v2 whole frames at most 6 steps (0.0235), its ENA24
MegaDetector-box crops at most 10 (0.039, one crop of 21; 18 identical); a kerascls
MobileNetV3-Small int8 bundle 1 step; float bundles identical to 1e-7.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bundle_scripts import MAKE_BUNDLES

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "export"
SCRIPTS = ROOT / "scripts" / "aarch64"
DATA = ROOT.parent / "shared" / "data"
CAMTRAP = DATA / "camtrap"
ENA24 = CAMTRAP / "ena24_small"
from tests.shared_paths import CORAL_MODEL, coral_labels, coral_tflite  # noqa: E402

FLOAT_BOUND = 1e-5
INT8_LSB = 12  # measured worst 10 output steps (Coral, an ENA24 crop) + 2 steps of margin
ROUNDING = 1e-4  # the JSON's probabilities are rounded to 4 decimals, each side on its own

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None,
                       reason="qemu-aarch64-static absent (apt-get install qemu-user-static)"),
]
needs_shared = pytest.mark.skipif(not (CORAL_MODEL.is_file() and CAMTRAP.is_dir()),
                                  reason=f"Coral model / camera-trap frames absent under {DATA}")

# Runs on both sides: per file, a hash of the decoded pixels, the warnings and full-precision
# probabilities (or the error's type), plus the output tensor's quantization step.
PROBE = r'''
import hashlib, json, sys
from kerascls_edge import Classifier
clf = Classifier(sys.argv[1], labels=sys.argv[2] or None, threads=2)
out = {"step": float(clf._out["quantization"][0]), "files": {}}
for f in sys.argv[3:]:
    try:
        d = clf.decode(f)
        p = clf.predict_array(d.arrays[0])[0]
        out["files"][f] = {"sha": hashlib.sha256(d.arrays[0].tobytes()).hexdigest(),
                           "warnings": d.warnings, "probs": [float(v) for v in p]}
    except Exception as e:
        out["files"][f] = {"error": type(e).__name__}
print(json.dumps(out))
'''

# LiteRT's reference kernels on both sides: a hash of the raw output tensor per file.
REF_PROBE = r'''
import hashlib, json, sys
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from kerascls_edge.decode import Preprocess, decode
it = Interpreter(sys.argv[1], num_threads=1,
                 experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
it.allocate_tensors()
inp, out = it.get_input_details()[0], it.get_output_details()[0]
_, h, w, c = (int(v) for v in inp["shape"])
res = {}
for f in sys.argv[2:]:
    x = decode(f, Preprocess(h, w, c)).arrays[0][None].astype(inp["dtype"])
    it.set_tensor(inp["index"], x)
    it.invoke()
    res[f] = hashlib.sha256(it.get_tensor(out["index"]).tobytes()).hexdigest()
print(json.dumps(res))
'''


@pytest.fixture(scope="module")
def arm_env() -> dict:
    """Environment whose scripts/aarch64/* run the sysroot, built (or found cached) here."""
    env = {k: v for k, v in os.environ.items() if k != "KERASCLS_AARCH64_PINS"}  # the edge lock
    proc = subprocess.run([str(SCRIPTS / "build-sysroot.sh")], check=False, capture_output=True,
                          text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


def run_edge(side: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    """`kerascls-edge ARGS` on x86 (this interpreter, ./export) or on the emulated arm64."""
    if side == "x86":
        cmd = [sys.executable, "-m", "kerascls_edge", *args]
        env = {**env, "PYTHONPATH": str(EXPORT)}
    else:
        cmd = [str(SCRIPTS / "kerascls-edge"), *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env,
                          timeout=1200, cwd=ROOT)
    assert proc.returncode == 0, f"{side}: {proc.stderr[-3000:]}"
    return proc


def predict_both(args: list[str], env: dict, out_dir: Path) -> tuple[dict, dict, Path]:
    """Run `predict ARGS -o OUT` on both sides; the two result files and the arm64 one's path."""
    outs = {}
    for side in ("x86", "arm64"):
        path = out_dir / f"{side}.json"
        run_edge(side, ["predict", *args, "-o", str(path), "--progress_every", "-1"], env)
        outs[side] = path
    return json.loads(outs["x86"].read_text()), json.loads(outs["arm64"].read_text()), outs["arm64"]


def probe_both(model: Path, labels: str, files: list[Path], env: dict,
               code: str = PROBE) -> tuple[dict, dict]:
    """Run a probe program (argv: model, labels, files) on both sides; its two JSON outputs."""
    args = ["-c", code, str(model), *([labels] if code is PROBE else []), *map(str, files)]
    x86 = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True,
                         timeout=1200, env={**env, "PYTHONPATH": str(EXPORT)})
    arm = subprocess.run([str(SCRIPTS / "python3"), *args], check=False, capture_output=True,
                         text=True, timeout=1200, env=env)
    assert x86.returncode == 0 and arm.returncode == 0, x86.stderr[-2000:] + arm.stderr[-2000:]
    return json.loads(x86.stdout), json.loads(arm.stdout)


def bound(step: float) -> float:
    """Allowed probability difference: float models tight, int8 outputs a few steps."""
    return INT8_LSB * step if step > 0 else FLOAT_BOUND


def validate_md(path: Path) -> list[str]:
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    return v.validate_batch_results(str(path))["validation_results"]["errors"]


def compare_results(x86: dict, arm: dict, tol: float) -> float:
    """Assert the two MegaDetector files agree; return the largest probability difference."""
    drop = {"classification_completion_time"}
    assert {k: v for k, v in x86["info"].items() if k not in drop} == \
        {k: v for k, v in arm["info"].items() if k not in drop}
    assert x86.get("classification_categories") == arm.get("classification_categories")
    assert [im["file"] for im in x86["images"]] == [im["file"] for im in arm["images"]]
    worst = 0.0
    for a, b in zip(x86["images"], arm["images"]):
        where = a["file"]
        for key in ("failure", "warnings", "datetime"):
            assert a.get(key) == b.get(key), f"{where}: {key} {a.get(key)!r} != {b.get(key)!r}"
        assert len(a["detections"] or []) == len(b["detections"] or []), where
        for da, db in zip(a["detections"] or [], b["detections"] or []):
            assert (da["category"], da["bbox"]) == (db["category"], db["bbox"]), where
            ca, cb = da.get("classifications"), db.get("classifications")
            assert (ca is None) == (cb is None), where
            if ca is None:
                continue
            assert ca[0][0] == cb[0][0], f"{where}: top-1 {ca[:2]} (x86) vs {cb[:2]} (arm64)"
            pa, pb = dict(ca), dict(cb)
            for k in pa.keys() & pb.keys():
                worst = max(worst, abs(pa[k] - pb[k]))
    assert worst <= tol + ROUNDING, f"probabilities differ by {worst} > {tol} (+ rounding)"
    return worst


def compare_probes(x86: dict, arm: dict) -> float:
    """Same decoded pixels, warnings and errors per file; probabilities within the bound."""
    assert x86["step"] == arm["step"] and x86["files"].keys() == arm["files"].keys()
    worst = 0.0
    for f, a in x86["files"].items():
        b = arm["files"][f]
        assert a.keys() == b.keys() and a.get("error") == b.get("error"), f
        if "error" in a:
            continue
        assert a["sha"] == b["sha"], f"{f}: decoded pixels differ between x86 and arm64"
        assert a["warnings"] == b["warnings"], f
        pa, pb = np.array(a["probs"]), np.array(b["probs"])
        assert pa.argmax() == pb.argmax(), f"{f}: top-1 differs"
        worst = max(worst, float(np.abs(pa - pb).max()))
    assert worst <= bound(x86["step"]), f"max probability difference {worst}"
    return worst


def _awkward(d: Path) -> None:
    """Files a camera-trap card can hold that the shared folders lack (they have the truncated,
    CMYK, greyscale and EXIF-rotated JPEGs): unreadable ones and other formats/modes."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:120, 0:160]
    photo = np.stack([(xx + yy) % 256, (2 * xx) % 256, (3 * yy) % 256], -1)
    photo = np.clip(photo + rng.normal(0, 25, photo.shape), 0, 255).astype(np.uint8)
    Image.fromarray(photo).convert("RGBA").save(d / "alpha.png")
    Image.fromarray(photo).convert("P").save(d / "palette.gif")
    Image.fromarray(photo[..., 0].astype(np.uint16) * 257).save(d / "grey16.png")
    Image.fromarray(photo).save(d / "x.webp")
    Image.fromarray(photo).save(d / "x.tiff")
    Image.fromarray(photo).save(d / "full.jpg", quality=90)
    raw = (d / "full.jpg").read_bytes()
    (d / "cut_in_headers.jpg").write_bytes(raw[:300])
    (d / "zero.jpg").write_bytes(b"")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(500))
    (d / "text.png").write_text("this is not an image\n")


def shared_frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """The shared camera-trap frames (symlinked, by folder) plus the awkward files."""
    if not CAMTRAP.is_dir():
        pytest.skip(f"{CAMTRAP} absent (../shared/data)")
    root = tmp_path_factory.mktemp("frames")
    for sub in sorted(p for p in CAMTRAP.iterdir() if p.is_dir()):
        (root / sub.name).mkdir()
        for f in shared_frames(sub):
            (root / sub.name / f.name).symlink_to(f)
    _awkward(root / "awkward")
    return root


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    """tests/test_edge.py's tiny bundles, made on x86 by TensorFlow (uint8 int8 and float)."""
    pytest.importorskip("tensorflow", reason="TensorFlow makes the x86 bundles")
    out = tmp_path_factory.mktemp("bundles")
    proc = subprocess.run([sys.executable, "-c", MAKE_BUNDLES, str(out)], check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_sysroot_is_arm64_bookworm_with_the_edge_locks_wheels(arm_env: dict) -> None:
    """The emulated Pi has exactly the device lock's versions, and so has this host (the x86
    side of every comparison), so the parity below is between what CI tests and a Pi gets."""
    lock = (EXPORT.parent / "locks" / "edge-cp311-linux.txt").read_text(encoding="utf-8")
    want = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock, re.M))
    code = ("import json, platform, sys; from importlib.metadata import version as v; "
            "print(json.dumps([platform.machine(), sys.version_info[:2], "
            f"{{p: v(p) for p in {sorted(want)!r} + ['kerascls-edge']}}]))")
    proc = subprocess.run([str(SCRIPTS / "python3"), "-c", code], check=False, capture_output=True,
                          text=True, env=arm_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    machine, pyver, versions = json.loads(proc.stdout)
    assert machine == "aarch64" and pyver == [3, 11]  # Bookworm's python3
    assert versions.pop("kerascls-edge") == version("kerascls-edge")
    assert versions == want
    assert {p: version(p) for p in want} == want, "install this host through locks/ (README)"


@needs_shared
def test_coral_model_on_shared_frames_matches_x86(arm_env: dict, frames: Path,
                                                  tmp_path: Path) -> None:
    x86, arm, arm_path = predict_both(
        [str(CORAL_MODEL), str(frames), "--recursive", "--labels",
         str(coral_labels(tmp_path / "labels.txt")), "--threads", "2", "--top_k", "5"],
        arm_env, tmp_path)
    assert validate_md(arm_path) == []
    images = {im["file"]: im for im in arm["images"]}
    assert sum(1 for f in images if not f.startswith("awkward")) == len(shared_frames(CAMTRAP))
    assert sorted(f for f, im in images.items() if im.get("failure")) == [
        "awkward/corrupt.jpg", "awkward/cut_in_headers.jpg", "awkward/text.png",
        "awkward/zero.jpg"]
    truncated = images["speciesnet_test_data/african_elephants_truncated_file.jpg"]
    assert truncated.get("warnings")
    compare_results(x86, arm, INT8_LSB / 256)


@needs_shared
def test_coral_pixels_and_full_precision_probabilities(arm_env: dict, frames: Path,
                                                       tmp_path: Path) -> None:
    files = all_files(frames / "speciesnet_test_data") + all_files(frames / "awkward")
    x86, arm = probe_both(CORAL_MODEL, str(coral_labels(tmp_path / "labels.txt")), files,
                          arm_env)
    assert x86["step"] == 1 / 256
    assert compare_probes(x86, arm) <= INT8_LSB / 256


@needs_shared
def test_reference_kernels_are_bit_identical(arm_env: dict) -> None:
    """Same kernels, same bits: the int8 differences above come from the optimized kernels."""
    files = shared_frames(CAMTRAP / "speciesnet_test_data")[:4]
    x86, arm = probe_both(CORAL_MODEL, "", files, arm_env, code=REF_PROBE)
    assert x86 == arm and len(x86) == 4


@needs_shared
def test_megadetector_boxes_classified_on_arm64_match_x86(arm_env: dict, tmp_path: Path) -> None:
    x86, arm, arm_path = predict_both(
        [str(coral_tflite(tmp_path)), str(ENA24), "--detections",
         str(ENA24 / "md_annotations.json"), "--detection_threshold", "0.3", "--threads", "2",
         "--top_k", "3"], arm_env, tmp_path)
    assert validate_md(arm_path) == []
    assert sum("classifications" in d for im in arm["images"] for d in im["detections"]) >= 15
    compare_results(x86, arm, INT8_LSB / 256)


@pytest.mark.parametrize("name", ["u8", "f32logits"])
def test_x86_made_bundles_match_on_arm64(arm_env: dict, bundles: Path, frames: Path,
                                         tmp_path: Path, name: str) -> None:
    x86, arm, arm_path = predict_both([str(bundles / name), str(frames), "--recursive",
                                       "--threads", "2", "--top_k", "3"], arm_env, tmp_path)
    assert validate_md(arm_path) == []
    px86, parm = probe_both(bundles / name, "", all_files(frames), arm_env)
    worst = compare_probes(px86, parm)
    if name == "f32logits":
        assert px86["step"] == 0 and worst <= FLOAT_BOUND
    compare_results(x86, arm, bound(px86["step"]))


# Runs on both sides: per video, each sampled frame's number and a hash of its upright RGB
# pixels (the decoder's output) and of its model-ready pixels (after the photo contract).
VIDEO_PROBE = r'''
import hashlib, json, sys
from kerascls_edge import Classifier
from kerascls_edge.video import decode_frames, read_video
clf = Classifier(sys.argv[1], labels=sys.argv[2], threads=2)
sha = lambda a: hashlib.sha256(a.tobytes()).hexdigest()
out = {}
for f in sys.argv[3:]:
    raw = read_video(f, convert=lambda img: (img.size, sha(img)))
    ready = decode_frames(f, clf.preprocess)
    out[f] = {"frame_rate": raw.frame_rate, "warnings": raw.warnings,
              "raw": [[s.frame_number, s.pixels[0], s.pixels[1]] for s in raw.frames],
              "ready": [[s.frame_number, sha(s.pixels)] for s in ready.frames]}
print(json.dumps(out))
'''
ZAMBA_CLIP = CAMTRAP / "zamba_videos" / "chimp.mp4"  # H.264, 320x180, 30 fps, 15 s


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two rendered clips of different codecs and containers (MPEG-4 Part 2 in AVI at an odd
    size, H.264 in MP4 with a display rotation) and a real zamba clip."""
    from tests.video_clips import render
    if not ZAMBA_CLIP.is_file():
        pytest.skip(f"{ZAMBA_CLIP} absent (../shared/data)")
    root = tmp_path_factory.mktemp("videos")
    render(root / "CAM1_0001.AVI", "mpeg4", 63, rate=15, size=(178, 102), gop=20)
    render(root / "cam2 clip.mp4", "libx264", 41, size=(142, 94), gop=25, rotation=90)
    (root / "zamba").mkdir()
    (root / "zamba" / ZAMBA_CLIP.name).symlink_to(ZAMBA_CLIP)
    return root


@needs_shared
def test_videos_sampled_frames_and_labels_match_x86(arm_env: dict, videos: Path,
                                                     bundles: Path, tmp_path: Path) -> None:
    """The same sampled frames, bit for bit (decoder output, and the Coral model's input), and
    the same per-frame and per-video labels on the emulated Pi as on x86.

    Labels come from the float bundle, whose outputs agree to 1e-7: the int8 Coral model's
    optimized kernels differ by platform (module docstring), enough to swap a near-tie of two
    ImageNet classes on these textures (measured: 0.0703 vs 0.0664 on a rendered clip).
    Before the decoder options and the bit-exact RGB conversion (video.DECODER_OPTIONS,
    video._upright) every clip's frames differed: MPEG-4 Part 2 already in the decoded YUV
    (FFmpeg's x86 and NEON IDCTs), every codec in swscale's default YUV to RGB."""
    labels = str(coral_labels(tmp_path / "labels.txt"))
    clips = sorted(p for p in videos.rglob("*") if p.suffix.lower() in (".avi", ".mp4"))
    args = ["-c", VIDEO_PROBE, str(CORAL_MODEL), labels, *map(str, clips)]
    x86 = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True,
                         timeout=1200, env={**arm_env, "PYTHONPATH": str(EXPORT)})
    arm = subprocess.run([str(SCRIPTS / "python3"), *args], check=False, capture_output=True,
                         text=True, timeout=1200, env=arm_env)
    assert x86.returncode == 0 and arm.returncode == 0, x86.stderr[-2000:] + arm.stderr[-2000:]
    px86, parm = json.loads(x86.stdout), json.loads(arm.stdout)
    assert px86 == parm  # frame numbers, sizes and every frame's pixel hashes
    # 63 frames at 15 fps (4.13 s): 0..4 s; 41 at 10 fps: 0..4 s; rotated 90: 94x142 upright
    avi, mp4 = (px86[str(videos / n)] for n in ("CAM1_0001.AVI", "cam2 clip.mp4"))
    assert [r[0] for r in avi["raw"]] == [0, 15, 30, 45, 60]
    assert [r[0] for r in mp4["raw"]] == [0, 10, 20, 30, 40] and mp4["raw"][0][1] == [94, 142]
    assert len(px86[str(videos / "zamba" / ZAMBA_CLIP.name)]["raw"]) == 15

    x86, arm, arm_path = predict_both([str(bundles / "f32logits"), str(videos), "--recursive",
                                       "--threads", "2", "--top_k", "3"], arm_env, tmp_path)
    assert validate_md(arm_path) == []
    assert all("failure" not in e for e in x86["images"]) and len(x86["images"]) == 3
    compare_results(x86, arm, FLOAT_BOUND)
    for a, b in zip(x86["images"], arm["images"]):
        assert a["frames_processed"] == b["frames_processed"] == \
            [r[0] for r in px86[str(videos / a["file"])]["raw"]]
        va, vb = a["video"], b["video"]
        assert va["classifications"][0][0] == vb["classifications"][0][0], a["file"]
        assert [f["classifications"][0][0] for f in va["frames"]] == \
            [f["classifications"][0][0] for f in vb["frames"]], a["file"]

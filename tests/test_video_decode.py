"""Video sampling (kerascls_edge.video): which frames, which pixels, and broken files.

Every expectation comes from outside the module: hand-worked frame numbers, a naive float
re-implementation of the documented rule over a plain sequential PyAV decode of every frame,
and numpy's rot90 for the display matrix. Clips are rendered here with PyAV (moving textured
shapes, several codecs and containers) or are the shared zamba camera-trap clips.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kerascls_edge import video
from tests.memory import run_measured
from tests.shared_paths import DATA
from tests.video_clips import render

av = pytest.importorskip("av")
ZAMBA = DATA / "camtrap" / "zamba_videos"


# -- an independent reading of the rule ----------------------------------------------------------


def all_frames(path: Path) -> tuple[list[float], list[np.ndarray]]:
    """Every frame's time (s, from the first) and RGB pixels, by a plain sequential decode
    with the documented platform-exact settings (simple IDCT, bit-exact RGB conversion)."""
    from av.video.reformatter import Interpolation as I  # noqa: E741

    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.options = {"flags": "+bitexact", "idct": "simple"}
        rgb = I.BILINEAR | I.BITEXACT | I.ACCURATE_RND
        frames = [(f.time, f.to_ndarray(format="rgb24", interpolation=rgb))
                  for f in c.decode(video=0)]
    t0 = frames[0][0]
    return [t - t0 for t, _ in frames], [a for _, a in frames]


def naive_rule(times: list[float], every: float, most: int) -> list[int]:
    """The docs' rule in floats: candidates k·every up to the last frame, spread when too
    many, each taking the first frame at or after it."""
    k_count = math.floor(times[-1] / every + 1e-9) + 1
    ks = range(k_count) if k_count <= most else \
        [math.floor(j * (k_count - 1) / (most - 1) + 0.5) if most > 1 else 0
         for j in range(most)]
    out = []
    for k in ks:
        i = next(i for i, t in enumerate(times) if t >= k * every - 1e-9)
        if i not in out:
            out.append(i)
    return out


def check_against_full_decode(path: Path, every: float = 1.0, most: int = 32) -> video.Video:
    """read_video equals the naive rule on a full decode: frame numbers, times and pixels."""
    v = video.read_video(path, every, most)
    times, pixels = all_frames(path)
    want = naive_rule(times, every, most)
    assert v.frames_processed == want
    assert [f.time for f in v.frames] == pytest.approx([times[i] for i in want], abs=1e-6)
    for f in v.frames:
        np.testing.assert_array_equal(np.asarray(f.pixels), pixels[f.frame_number])
    assert not v.warnings
    return v


# -- the rule, hand-worked -------------------------------------------------------------------------


@pytest.mark.parametrize("ticks, tick, every, most, want", [
    (range(25), Fraction(1, 10), 1.0, 32, [0, 10, 20]),            # 10 fps, 2.4 s
    (range(35), Fraction(1, 10), 0.5, 2, [0, 30]),                 # 7 candidates, 2 kept
    (range(6), Fraction(1), 0.25, 32, [0, 1, 2, 3, 4, 5]),          # frames rarer than samples
    (range(3000), Fraction(1, 30), 1.0, 1, [0]),                    # first frame only
    ([0, 1, 2, 50, 51, 120], Fraction(1, 100), 0.5, 32, [0, 3, 5]),  # irregular times
    ([0], Fraction(1, 30), 1.0, 32, [0]),                           # a one-frame video
    (range(10), Fraction(1, 10), 0.1, 32, list(range(10))),         # 0.1 s is 1/10 s
    (range(10), Fraction(1, 10), 0.3, 32, [0, 3, 6, 9]),
    (range(40), Fraction(1, 10), 0.05, 100, list(range(40))),       # 79 candidates > 40
])
def test_rule_hand_worked(ticks, tick, every, most, want):
    assert video.sample_frames(np.array(list(ticks)), tick, every, most) == want


def test_rule_spreads_evenly_first_and_last_in():
    # 100 s at 30 fps: 100 candidates (0..99 s), 32 kept: round(j·99/31) s, halves up
    got = video.sample_frames(np.arange(3000), Fraction(1, 30), 1.0, 32)
    assert got[:5] == [0, 90, 180, 300, 390] and got[-1] == 99 * 30 and len(got) == 32
    assert got == [30 * math.floor(j * 99 / 31 + 0.5) for j in range(32)]


# -- rendered clips --------------------------------------------------------------------------------

CODECS = [("mpeg4", "avi"), ("libx264", "mp4"), ("mjpeg", "mkv"), ("msmpeg4v2", "asf")]


@pytest.mark.parametrize("codec, ext", CODECS)
@pytest.mark.parametrize("every, most", [(1.0, 32), (2.0, 32), (0.5, 3)])
def test_rendered_clip_frames_and_pixels(tmp_path, codec, ext, every, most):
    """Key-frame-run decoding gives the frames and pixels a full sequential decode gives."""
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg build")
    path = render(tmp_path / f"clip.{ext.upper()}", codec, 47)  # upper-case suffix too
    assert video.is_video(path)
    v = check_against_full_decode(path, every, most)
    assert v.frame_count == 47 and v.frame_rate == 10.0
    assert v.frames_processed[0] == 0


@pytest.mark.parametrize("params", ["bframes=3:keyint=12", "bframes=3:keyint=12:open-gop=1"])
def test_b_frames_and_open_gop(tmp_path, params):
    """Reordered frames (B-frames), also across an open GOP: decoding from the key frame
    before each sample still gives the sequential decode's pixels."""
    path = render(tmp_path / "b.mp4", "libx264", 61, options={"x264-params": params})
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.has_b_frames
    for every, most in [(1.0, 32), (1.3, 32), (0.7, 4)]:
        check_against_full_decode(path, every, most)


def test_variable_frame_rate(tmp_path):
    pts = [0, 40, 80, 500, 1000, 1001, 1700, 2600, 2610, 4100]  # ms
    path = render(tmp_path / "vfr.mkv", "libx264", len(pts), rate=25, pts=pts)
    v = check_against_full_decode(path)
    # candidates 0, 1, 2, 3, 4 s: first frames at or after them
    assert v.frames_processed == [0, 4, 7, 9]
    assert [f.time for f in v.frames] == pytest.approx([0.0, 1.0, 2.6, 4.1])


@pytest.mark.parametrize("rotation, k", [(90, 1), (-90, 3), (180, 2)])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation, k):
    path = render(tmp_path / "rot.mp4", "libx264", 15, size=(96, 64), rotation=rotation)
    v = video.read_video(path)
    _, pixels = all_frames(path)  # as stored, not turned
    for f in v.frames:
        np.testing.assert_array_equal(np.asarray(f.pixels), np.rot90(pixels[f.frame_number], k))
    assert v.frames[0].pixels.size == ((64, 96) if k % 2 else (96, 64))


def test_declared_size_over_the_pixel_cap_is_refused_before_decoding(tmp_path):
    path = render(tmp_path / "clip.avi", "mpeg4", 5, size=(96, 64))
    with pytest.raises(video.VideoError, match=r"96×64 is over the 0.006 MP pixel cap"):
        video.read_video(path, max_pixels=6000)
    assert video.read_video(path, max_pixels=6144).frames_processed == [0]


def test_odd_size_frames_go_through_the_photo_resize(tmp_path):
    from kerascls_edge.decode import Preprocess, decode

    path = render(tmp_path / "odd.avi", "mpeg4", 23, size=(99, 67))
    check_against_full_decode(path)
    pre = Preprocess(40, 56, resize="crop")
    d = video.decode_video(path, pre)
    _, pixels = all_frames(path)
    from PIL import Image
    for arr, f in zip(d.arrays, d.video.frames):
        want = decode(Image.fromarray(pixels[f.frame_number]), pre).arrays[0]
        np.testing.assert_array_equal(arr, want)
        assert arr.shape == (40, 56, 3)


def test_shared_zamba_clips(request):
    if not ZAMBA.is_dir():
        pytest.skip(f"shared data missing: {ZAMBA}")
    clips = sorted(p for p in ZAMBA.rglob("*") if video.is_video(p))
    assert len(clips) == 17
    for p in clips:
        check_against_full_decode(p)


# -- broken files: a recorded failure or a partial result, never a traceback or a hang -----------

_PROBE = textwrap.dedent("""
    import json, sys
    from kerascls_edge import video
    for path, limit in json.loads(sys.argv[1]):
        try:
            v = video.read_video(path, time_limit=limit)
            out = {"frames": v.frames_processed, "warnings": v.warnings}
        except video.VideoError as e:
            out = {"error": str(e)}
        print(json.dumps(out), flush=True)
""")


def probe(cases: list[tuple[str, float]]) -> list[dict]:
    """read_video on each file in a child process with a timeout (a hang fails the test)."""
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(cases)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_broken_videos(tmp_path):
    good = render(tmp_path / "good.avi", "mpeg4", 60, gop=10)
    good_mp4 = render(tmp_path / "good.mp4", "libx264", 60)
    data = good.read_bytes()
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(20000))
    (tmp_path / "trunc.mp4").write_bytes(good_mp4.read_bytes()[:len(good_mp4.read_bytes()) // 2])
    (tmp_path / "trunc.avi").write_bytes(data[:len(data) // 2])
    mid = bytearray(data)
    mid[len(data) // 3:len(data) // 3 + 3000] = np.random.default_rng(2).bytes(3000)
    (tmp_path / "corrupt.avi").write_bytes(bytes(mid))
    c = av.open(str(tmp_path / "audio.mp4"), "w")
    s = c.add_stream("aac", rate=44100)
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                    layout="mono")
    fr.sample_rate = 44100
    for i in range(10):
        fr.pts = i * 1024
        for p in s.encode(fr):
            c.mux(p)
    c.close()
    (tmp_path / "unknown.avi").write_bytes(data.replace(b"FMP4", b"QQQQ"))  # codec tag
    names = ["unknown.avi", "zero.mp4", "garbage.mp4", "trunc.mp4", "trunc.avi", "corrupt.avi",
             "audio.mp4", "good.avi"]
    res = dict(zip(names + ["limit"], probe([(str(tmp_path / n), 60.0) for n in names]
                                            + [(str(good), 0.0)])))
    assert res["unknown.avi"]["error"].startswith("no decoder for this video's codec")
    assert res["zero.mp4"]["error"] == "empty file (0 bytes)"
    assert res["garbage.mp4"]["error"].startswith("not a video the device reads")
    assert "error" in res["trunc.mp4"]  # the moov index is at the end: nothing to read
    assert res["trunc.avi"]["frames"][0] == 0 and len(res["trunc.avi"]["frames"]) < 6
    assert res["corrupt.avi"]["frames"][0] == 0  # partial or whole, with or without warnings
    assert res["audio.mp4"]["error"] == "no video stream in the file"
    assert res["good.avi"] == {"frames": [0, 10, 20, 30, 40, 50], "warnings": []}
    assert "time limit" in res["limit"]["error"]


# -- bounded memory ----------------------------------------------------------------------------

_RSS = textwrap.dedent("""
    import sys
    from kerascls_edge.decode import Preprocess
    from kerascls_edge.video import decode_video
    d = decode_video(sys.argv[1], Preprocess(224, 224))
    print(len(d.arrays), d.video.packets_decoded, d.video.frame_count)
""")


def peak_rss_mb(path: Path) -> tuple[float, int, int, int]:
    """Peak RSS (MB) of a fresh process that samples and decodes the clip (tests/memory.py:
    pytest's own pages don't count), with its sampled, decoded and total frame counts."""
    proc, peak = run_measured([sys.executable, "-c", _RSS, str(path)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-300:]
    n, decoded, total = (int(v) for v in proc.stdout.split()[:3])
    return peak, n, decoded, total


@pytest.mark.slow
def test_peak_rss_long_and_4k(tmp_path):
    long = render(tmp_path / "long.mp4", "libx264", 6000, rate=30, size=(1280, 720), gop=30,
                  variants=16)
    k4 = render(tmp_path / "k4.mp4", "libx264", 12, rate=30, size=(3840, 2160), variants=4)
    rss, n, _, _ = peak_rss_mb(k4)
    assert n == 1 and rss <= 300, rss
    rss_long, n, decoded, total = peak_rss_mb(long)
    assert n == 32 and rss_long <= 300, rss_long
    # 32 samples in 200 s, a key frame a second: only the runs from a key frame to a
    # sample are decoded (at most 30 packets each, plus the decoder's frame-thread delay)
    assert decoded <= 32 * (30 + video.CODEC_THREADS), (decoded, total)
    print(f"peak RSS: 4K {rss:.0f} MB, 200 s 720p {rss_long:.0f} MB ({decoded} of {total} "
          "packets decoded)")

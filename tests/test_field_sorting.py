"""Issue 25, sorting (`--sort_into`): nothing a user already has is ever replaced, one bad file
never stops the sort, and the sort runs in bounded memory.

Cases: 1 (two cards that both hold IMG_0001.JPG), 19 (a 255-byte name, a FIFO, a full disk),
16 (bounded memory on a large results file), and hypothesis properties (inputs hashed before
and after; no traceback; every source's content is in the sorted tree; nothing replaced).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.cli import main  # noqa: E402
from kerascls_edge.sortinto import sort_into  # noqa: E402
from tests.memory import run_measured  # noqa: E402
from tests.pictures import photo  # noqa: E402
from tests.shared_paths import CORAL_MODEL, coral_labels  # noqa: E402

needs_coral = pytest.mark.skipif(not CORAL_MODEL.is_file(),
                                 reason="the Coral model is in ../shared/data (absent here)")
NAME_MAX = 255


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """sha256 of every regular file (links followed) under folder, by relative path."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = Path(dirpath) / name
            if p != folder / "manifest.csv" and p.exists():
                out[str(p.relative_to(folder))] = sha(p)
    return out


def state(folder: Path) -> dict[str, tuple]:
    """Bytes, inode, size and mtime of every file under folder: what 'untouched' means."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p)] = (sha(p), st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def manifest(target: Path) -> list[dict]:
    """manifest.csv's rows, with the spreadsheet quote (OWASP: a leading ' before = + - @ tab
    CR or ') taken off again."""
    def unquote(cell: str) -> str:
        return cell[1:] if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@", "\t", "\r",
                                                             "'") else cell

    with open(target / "manifest.csv", newline="", encoding="utf-8") as f:
        return [{k: unquote(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    if not CORAL_MODEL.is_file():
        pytest.skip("Coral model absent")
    d = tmp_path_factory.mktemp("bundle")
    (d / "m.tflite").symlink_to(CORAL_MODEL)
    coral_labels(d / "labels.txt")
    return d / "m.tflite"


def predict_sort(model: Path, card: Path, out: Path, target: Path, *extra: str,
                 capsys=None) -> tuple[int, dict, str]:
    rc = main(["predict", str(model), str(card), "--recursive", "-o", str(out), "--threads",
               "1", "--decode_threads", "0", "--progress_every", "-1", "--overwrite",
               "--sort_into", str(target), *extra])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    summary = json.loads(cap.out)["sort_into"] if cap.out.strip() else {}
    return rc, summary, cap.err


# -- case 1: two cards, one name ------------------------------------------------------------------


@needs_coral
@pytest.mark.parametrize("copy", [False, True])
def test_case1_second_card_with_same_names_is_sorted_beside_never_over(
        model, tmp_path, capsys, copy):
    """Two reformatted cards both hold DCIM/IMG_0001.JPG (different photos). Sorting both into
    one tree keeps both; a rerun sorts nothing twice; a refilled card's new photo under an old
    name is sorted beside the old one (a copy keeps the old photo after the card is wiped)."""
    cards = [tmp_path / "card1", tmp_path / "card2"]
    for k, card in enumerate(cards):
        for i in range(3):
            photo(card / "DCIM" / f"IMG_{i + 1:04d}.JPG", seed=10 * k + i)
    target, mode = tmp_path / "SORTED", ["--copy"] if copy else []
    # threshold 1.0: every photo goes to _uncertain, so the two cards' names surely collide
    sort = ["--sort_threshold", "1.0", *mode]
    before = state(tmp_path / "card1") | state(tmp_path / "card2")
    rc, s1, _ = predict_sort(model, cards[0], tmp_path / "r1.json", target, *sort, capsys=capsys)
    assert rc == 0 and s1.get("errors", 0) == 0 and s1["already"] == 0
    first = tree(target)
    rc, s2, _ = predict_sort(model, cards[1], tmp_path / "r2.json", target, *sort, capsys=capsys)
    assert rc == 0 and s2["already"] == 0
    assert {k: tree(target).get(k) for k in first} == first  # nothing of card 1 replaced
    assert s2["renamed"] == 3
    after = tree(target)
    assert {k: after.get(k) for k in first} == first  # nothing of card 1 replaced
    sources = {sha(p) for c in cards for p in c.rglob("*.JPG")}
    assert set(after.values()) == sources and len(after) == 6  # every photo there, once
    for name in after:
        assert len(os.fsencode(Path(name).name)) <= NAME_MAX
    rows = manifest(target)
    assert {r["source"] for r in rows} == {str(p) for c in cards for p in c.rglob("*.JPG")}
    for r in rows:
        assert r["error"] == "" and sha(target / r["sorted"]) == r["sha256"] == sha(r["source"])
    assert (state(tmp_path / "card1") | state(tmp_path / "card2")) == before
    # a rerun over card 2 recognises every photo by content
    rc, s3, _ = predict_sort(model, cards[1], tmp_path / "r2.json", target, *sort, capsys=capsys)
    assert rc == 0 and s3["already"] == 3 and tree(target) == after
    # card 1 reformatted and refilled: new photos under the old names
    shutil.rmtree(cards[0])
    for i in range(3):
        photo(cards[0] / "DCIM" / f"IMG_{i + 1:04d}.JPG", seed=100 + i)
    rc, s4, _ = predict_sort(model, cards[0], tmp_path / "r1.json", target, *sort, capsys=capsys)
    assert rc == 0 and s4["already"] == 0 and s4.get("errors", 0) == 0
    final = tree(target)
    new = {sha(p) for p in cards[0].rglob("*.JPG")}
    assert new <= set(final.values())
    if copy:  # the copies of the wiped card's photos are still there, unchanged
        assert {k: final.get(k) for k in first} == first
        assert sources | new == set(final.values())


def test_case1_same_name_through_the_api_link_and_copy(tmp_path):
    """The same collision through sort_into itself (no model): the second file never replaces
    the first, in link and copy mode, and the manifest maps both."""
    a = photo(tmp_path / "cardA" / "IMG_0001.JPG", 1)
    b = photo(tmp_path / "cardB" / "IMG_0001.JPG", 2)
    for copy in (False, True):
        target = tmp_path / f"sorted-{copy}"
        sort_into({"IMG_0001.JPG": ("deer", 0.9)}, a.parent, target, 0.5, copy)
        s = sort_into({"IMG_0001.JPG": ("deer", 0.9)}, b.parent, target, 0.5, copy)
        got = tree(target)
        assert sorted(got.values()) == sorted([sha(a), sha(b)]), got
        assert got["deer/IMG_0001.JPG"] == sha(a)
        assert s.get("renamed") == 1
        assert sorted(r["sha256"] for r in manifest(target)) == sorted([sha(a), sha(b)])


# -- case 19: a long name, a FIFO, a full disk --------------------------------------------------


@pytest.mark.parametrize("copy", [False, True])
def test_case19_255_byte_names_sort_and_collide_within_name_max(tmp_path, copy):
    """A legal 255-byte file name (multi-byte UTF-8 included) is sorted under its own name,
    and a second photo with that name gets a unique name that still fits NAME_MAX."""
    stem = "é" * 100 + "x" * (NAME_MAX - 200 - 4)  # 251 bytes + ".JPG"
    name = stem + ".JPG"
    assert len(os.fsencode(name)) == NAME_MAX
    a = photo(tmp_path / "c1" / name, 3)
    b = photo(tmp_path / "c2" / name, 4)
    target = tmp_path / "sorted"
    s1 = sort_into({name: ("fox", 0.8)}, a.parent, target, 0.5, copy)
    s2 = sort_into({name: ("fox", 0.8)}, b.parent, target, 0.5, copy)
    assert s1.get("errors", 0) == s2.get("errors", 0) == 0
    got = tree(target)
    assert got[f"fox/{name}"] == sha(a)
    assert sorted(got.values()) == sorted([sha(a), sha(b)])
    for rel in got:
        raw = os.fsencode(Path(rel).name)
        assert len(raw) <= NAME_MAX and raw.decode("utf-8")  # cut between whole characters
    assert not [p for p in target.rglob(".*") if p.name != ".manifest.csv.lock"]


def test_case19_fifo_is_recorded_and_the_rest_sorted(tmp_path, capsys):
    """A FIFO named like an image is one recorded failure (naming it), never read (no hang),
    and the images after it are still sorted, in copy mode too."""
    card = tmp_path / "card"
    photo(card / "a.jpg", 5)
    os.mkfifo(card / "b.jpg")
    photo(card / "c.jpg", 6)
    target = tmp_path / "sorted"
    s = sort_into({"a.jpg": ("deer", 0.9), "b.jpg": (None, 0.0), "c.jpg": ("deer", 0.9)},
                  card, target, 0.5, copy=True)
    assert set(tree(target)) == {"deer/a.jpg", "deer/c.jpg"}
    assert s["errors"] == 1 and s["sorted"] == 2
    assert f"not sorted: {card / 'b.jpg'}" in capsys.readouterr().err
    bad = [r for r in manifest(target) if r["error"]]
    assert len(bad) == 1 and bad[0]["source"] == str(card / "b.jpg")
    assert "regular file" in bad[0]["error"]


@needs_coral
def test_case19_fifo_on_the_card_exits_1_after_sorting_the_rest(model, tmp_path, capsys):
    card = tmp_path / "card"
    for i in range(3):
        photo(card / f"IMG_{i}.JPG", 20 + i)
    os.mkfifo(card / "IMG_9.JPG")
    target = tmp_path / "sorted"
    rc, s, err = predict_sort(model, card, tmp_path / "r.json", target, "--copy",
                              "--sort_threshold", "0", capsys=capsys)
    assert rc == 1
    assert s["errors"] == 1 and s["sorted"] == 3, s
    assert f"not sorted: {card / 'IMG_9.JPG'}" in err
    assert sorted(Path(p).name for p in tree(target)) == ["IMG_0.JPG", "IMG_1.JPG", "IMG_2.JPG"]


FULL_DISK_SCRIPT = r"""
import resource, signal, sys
sys.path.insert(0, sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # writes past the limit fail with EFBIG
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from kerascls_edge.cli import main
sys.exit(main(sys.argv[3:]))
"""


@needs_coral
def test_case19_file_too_large_names_the_destination_and_leaves_no_temporary(
        model, tmp_path):
    """RLIMIT_FSIZE (the kernel refuses writes past it, EFBIG): the big photo's copy fails,
    is reported against the destination (not the card), no temporary is left, the small
    photos are sorted and the run exits 1."""
    card = tmp_path / "card"
    small = [photo(card / f"s{i}.jpg", 30 + i) for i in range(2)]
    big = photo(card / "big.jpg", 40, size=(1500, 1100), quality=97)
    limit = 96 * 1024
    assert max(p.stat().st_size for p in small) < limit < big.stat().st_size
    target, out = tmp_path / "sorted", tmp_path / "r.json"
    before = state(card)
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(ROOT / "export"), str(limit), "predict",
         str(model), str(card), "-o", str(out), "--threads", "1", "--progress_every", "-1",
         "--sort_into", str(target), "--copy", "--sort_threshold", "0"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if "warning: not sorted:" in ln]
    assert len(line) == 1 and "File too large" in line[0]
    assert str(target) in line[0].split("File too large")[1]  # the destination is named
    assert json.loads(proc.stdout)["sort_into"]["errors"] == 1
    assert sorted(Path(p).name for p in tree(target)) == ["s0.jpg", "s1.jpg"]
    assert [p.name for p in target.rglob(".*")] == []  # no temporary left behind
    assert state(card) == before


def test_case19_disk_full_stops_the_sort_and_says_so(tmp_path, monkeypatch):
    """ENOSPC from the OS while writing a copy: that file is recorded against its
    destination, its temporary removed, and the sort stops (every later copy would fail)
    with the rest counted as not sorted."""
    card = tmp_path / "card"
    names = [f"IMG_{i}.JPG" for i in range(4)]
    for i, n in enumerate(names):
        photo(card / n, 50 + i)
    real_write = os.write
    writes = {"n": 0}

    def write(fd, data):
        if ".sorting-" in os.readlink(f"/proc/self/fd/{fd}"):
            writes["n"] += 1
            if writes["n"] >= 2:  # the second file's copy hits a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    target = tmp_path / "sorted"
    s = sort_into({n: ("deer", 0.9) for n in names}, card, target, 0.5, copy=True)
    monkeypatch.undo()
    assert s["errors"] == 1 and s["sorted"] == 1 and s["not_sorted"] == 2
    assert "No space left on device" in s["stopped"] and str(target / "deer") in s["stopped"]
    assert list(tree(target)) == ["deer/IMG_0.JPG"]
    assert [p.name for p in target.rglob(".*") if p.name != ".manifest.csv.lock"] == []


def test_case19_manifest_lost_at_close_stops_the_sort_and_says_so(tmp_path, monkeypatch):
    """The manifest's last rows fail to reach the disk when the sort closes it (ENOSPC from
    fsync): the summary says the sort stopped and why, no traceback; the files are placed,
    and a rerun on a disk with room recognises them instead of sorting them again."""
    card = tmp_path / "card"
    names = [f"IMG_{i}.JPG" for i in range(3)]
    for i, n in enumerate(names):
        photo(card / n, 60 + i)
    target = tmp_path / "sorted"
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("manifest.csv"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    s = sort_into({n: ("deer", 0.9) for n in names}, card, target, 0.5)
    monkeypatch.undo()
    assert s["sorted"] == 3 and s["errors"] == 0
    assert "No space left on device" in s["stopped"] and "manifest.csv" in s["stopped"]
    assert sorted(tree(target)) == [f"deer/{n}" for n in names]
    again = sort_into({n: ("deer", 0.9) for n in names}, card, target, 0.5)
    assert again["already"] == 3 and again["errors"] == 0 and "stopped" not in again
    assert sorted(tree(target)) == [f"deer/{n}" for n in names]


# -- case 16: bounded memory --------------------------------------------------------------------

SORT_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from kerascls_edge.sortinto import labels_from_json, sort_into
from pathlib import Path
s = sort_into(labels_from_json(Path(sys.argv[2]), "blank"), Path(sys.argv[3]),
              Path(sys.argv[4]), 0.5)
print(json.dumps(s))
"""


def write_results(path: Path, files: list[str], repeat: int, top_k: int = 20) -> int:
    """A MegaDetector-format file of len(files) * repeat entries (streamed out), each with a
    `top_k`-class ranking; a file's top label alternates between two classes per repeat."""
    n = 0
    with open(path, "w") as f:
        f.write('{"info": {"format_version": "1.6", "detector": "none (kerascls-edge)"},\n'
                '"detection_categories": {"1": "animal"},\n'
                '"classification_categories": %s,\n"images": [\n'
                % json.dumps({str(i): f"species_{i}" for i in range(20)}))
        for r in range(repeat):
            rows = [json.dumps({"file": name, "detections": [{
                "category": "1", "conf": 0.9, "bbox": [0, 0, 1, 1],
                "classifications": [[str((i + r % 2 + k) % 20), round(0.9 / (k + 1), 4)]
                                    for k in range(top_k)]}]}) for i, name in enumerate(files)]
            f.write((",\n" if r else "") + ",\n".join(rows))
            n += len(rows)
        f.write("\n]}\n")
    return n


def sort_peak(tmp_path: Path, n_files: int, repeat: int, top_k: int = 20) -> dict:
    card = tmp_path / f"card{n_files}x{repeat}"
    card.mkdir()
    files = []
    for i in range(n_files):
        (card / f"{i:07d}.jpg").write_bytes(i.to_bytes(4, "big") * 8)
        files.append(f"{i:07d}.jpg")
    results = tmp_path / f"r{n_files}x{repeat}.json"
    write_results(results, files, repeat, top_k)
    proc, peak = run_measured([sys.executable, "-c", SORT_SCRIPT, str(ROOT / "export"),
                               str(results), str(card), str(tmp_path / f"S{n_files}x{repeat}")],
                              timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return {**json.loads(proc.stdout), "peak_mb": peak}


def test_case16_sort_memory_does_not_grow_with_the_results(tmp_path):
    """Sorting streams the results and keeps its index on disk: 60x more entries (and 15x
    more distinct files) raise the peak by far less than loading the results would (json.load
    of this 4.6 MB file alone takes ~20 MB more)."""
    small = sort_peak(tmp_path, 200, 1)
    large = sort_peak(tmp_path, 3000, 4)  # 12,000 entries, every file sorted twice (2 labels)
    size_mb = (tmp_path / "r3000x4.json").stat().st_size / 2**20
    assert size_mb > 4
    assert large["peak_mb"] - small["peak_mb"] < 8.0, (small, large)
    assert small["sorted"] == 200 and large["sorted"] == 12000
    assert large["already"] == 6000  # reruns of a file in a folder it is in: by content


@pytest.mark.slow
def test_case16_sort_of_a_million_entries_within_300_mb(tmp_path):
    """1,000,000 results entries (10,000 distinct files, each met 100 times under two
    labels): peak RSS of the whole sort <= 300 MB."""
    got = sort_peak(tmp_path, 10_000, 100, top_k=3)
    assert got["sorted"] == 1_000_000 and got["errors"] == 0
    assert got["peak_mb"] <= 300, got
    print(f"sort of 1,000,000 entries: peak {got['peak_mb']:.0f} MB")


# -- properties --------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

name_bytes = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
labels = st.one_of(st.none(), st.text(max_size=12),
                   st.sampled_from(["=1+1", "@SUM(A1)", "-x", "manifest.csv", "..", "_failed",
                                    "a/b", "é" * 200]))
cards = st.lists(st.tuples(st.integers(0, 2), name_bytes, st.integers(0, 3), labels,
                           st.floats(0, 1)), min_size=1, max_size=8)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(entries=cards, copy=st.booleans())
def test_property_sorting_never_replaces_and_keeps_every_photo(entries, copy):
    """Any names (any bytes, up to 40), any labels, photos repeated across up to 3 cards
    sorted one after the other into one tree, then all again: sources unchanged, every
    source's content in the tree, nothing already there replaced, a rerun adds nothing."""
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        runs = []
        for card_no in range(3):
            card = t / f"card{card_no}"
            card.mkdir()
            mine = {}
            for c, name, content, label, conf in entries:
                if c == card_no:
                    path = os.fsencode(card) + b"/" + name
                    Path(os.fsdecode(path)).write_bytes(bytes([content]) * (content + 1) * 50)
                    mine[os.fsdecode(name)] = (label, conf)
            runs.append((card, mine))
        before = {str(p): sha(p) for c, _ in runs for p in c.iterdir()}
        target = t / "SORTED"
        seen: dict[str, str] = {}
        rounds = []
        for _ in range(2):
            for card, mine in runs:
                s = sort_into(mine, card, target, 0.5, copy)
                assert s.get("errors", 0) == 0, s
                now = tree(target)
                assert {k: now.get(k) for k in seen} == seen  # nothing replaced
                seen = now
            rounds.append(seen)
        assert rounds[0] == rounds[1]  # the rerun recognised everything
        assert {str(p): sha(p) for c, _ in runs for p in c.iterdir()} == before
        assert set(before.values()) <= set(seen.values())
        rows = manifest(target)
        assert not [r for r in rows if r["error"]]
        # names that are not UTF-8 are in the manifest as `ls -b` shows them (\xff escapes)
        shown = {os.fsencode(rel).decode("utf-8", "backslashreplace"): rel for rel in seen}
        for r in rows:
            assert seen[shown[r["sorted"]]] == r["sha256"]

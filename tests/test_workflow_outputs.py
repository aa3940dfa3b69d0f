"""Sorting, the checkpoint journal and the output checks, at the values where a bug shows
(issue 26: mutation score of sortinto.py, journal.py and outputs.py).

What a user relies on: `--sort_into` puts each photo in the folder of its most confident
label (thresholds at values a uint8 model really produces, k/256), never replaces a file,
names colliding photos uniquely, records every file in manifest.csv (its sha256, size, mtime,
device, inode) and on a rerun recognises photos by content; `--resume` keeps a result only for
a file whose identity (size, mtime_ns, head/tail sha256) is unchanged and refuses a checkpoint
of other settings naming the setting; one run per output; a result file is only replaced when
it is ours. Every expected value is worked out here (hashlib, os.stat, literal names) or read
by an independent tool (csv, MegaDetector's validator), never by the code under test.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from itertools import islice
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.bundle import EdgeError  # noqa: E402
from kerascls_edge.journal import (  # noqa: E402
    CorruptPart,
    Journal,
    OutputLock,
    atomic_write_text,
    bundle_identity,
    file_identity,
    meta_differences,
    read_part,
)
from kerascls_edge.mdformat import info_block, write_csv, write_json  # noqa: E402
from kerascls_edge.outputs import bundle_files, check_output, is_our_result  # noqa: E402
from kerascls_edge.sortinto import (  # noqa: E402
    check_target,
    labels_from_csv,
    labels_from_json,
    sort_into,
    unique_names,
)
from tests.pictures import photo  # noqa: E402

Q = 1 / 256  # a uint8 model's confidences are multiples of this (exact binary fractions)
MANIFEST_HEADER = "source,sha256,size,mtime_ns,device,inode,folder,sorted,mode,error"
UMASK = os.umask(0)
os.umask(UMASK)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def rows(target: Path) -> list[dict]:
    with open(target / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def manifest_text(target: Path) -> str:
    """manifest.csv as written (line ends kept)."""
    return (target / "manifest.csv").read_bytes().decode("utf-8")


def placed(target: Path) -> dict[str, str]:
    """{path under its folder: folder} of everything sorted (links included)."""
    out = {}
    for p in sorted(target.rglob("*")):
        parts = p.relative_to(target).parts
        if (p.is_file() or p.is_symlink()) and len(parts) > 1:
            out["/".join(parts[1:])] = parts[0]
    return out


def dotfiles(target: Path) -> list[str]:
    """Temporary files left anywhere under target (the run's lock is removed at its end)."""
    return sorted(str(p.relative_to(target)) for p in target.rglob(".*"))


def expected_row(src: Path, folder: str, rel: str, mode: str) -> dict:
    st = os.stat(src)
    return {"source": os.path.abspath(src), "sha256": sha(src), "size": str(st.st_size),
            "mtime_ns": str(st.st_mtime_ns), "device": str(st.st_dev),
            "inode": str(st.st_ino), "folder": folder, "sorted": rel, "mode": mode, "error": ""}


# == sorting =====================================================================================


@pytest.mark.parametrize("copy", [False, True])
def test_sorted_by_threshold_at_k_over_256_with_a_manifest_of_each_files_identity(
        tmp_path: Path, monkeypatch, copy: bool) -> None:
    """Confidences equal to, just under and above a k/256 threshold; a failed image; nested
    folders; a relative image folder (links still absolute). The manifest's rows are the
    files' own sha256 and stat, worked out here."""
    card = tmp_path / "card"
    files = {"site_a/cam1/IMG_0001.JPG": ("badger", 128 * Q),   # equal: certain enough
             "site_a/cam1/IMG_0002.JPG": ("badger", 127 * Q),   # one step under
             "site_a/cam2/IMG_0001.JPG": ("red fox", 129 * Q),
             "site_b/IMG_0003.JPG": (None, 0.0)}                  # a failed image
    for i, rel in enumerate(files):
        photo(card / rel, 200 + i)
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "sorted"
    warn = io.StringIO()
    got = sort_into(files, Path("card"), target, 128 * Q, copy=copy, warn=warn)
    mode = "copy" if copy else "link"
    assert got == {"sorted": 2, "uncertain": 1, "failed": 1, "already": 0, "renamed": 0,
                   "errors": 0, "folder": str(target), "mode": mode,
                   "manifest": str(target / "manifest.csv")}
    want = {"site_a/cam1/IMG_0001.JPG": "badger", "site_a/cam1/IMG_0002.JPG": "_uncertain",
            "site_a/cam2/IMG_0001.JPG": "red fox", "site_b/IMG_0003.JPG": "_failed"}
    assert placed(target) == want
    assert warn.getvalue() == "" and dotfiles(target) == []
    for rel, folder in want.items():
        dest, src = target / folder / rel, card / rel
        assert dest.is_symlink() != copy
        assert sha(dest) == sha(src)
        if copy:
            st, sst = os.stat(dest), os.stat(src)
            assert st.st_ino != sst.st_ino and st.st_mtime_ns == sst.st_mtime_ns
            assert stat.S_IMODE(st.st_mode) == 0o644 & ~UMASK
        else:
            assert os.readlink(dest) == str(tmp_path / "card" / rel)  # absolute
    text = manifest_text(target)
    assert text.startswith(MANIFEST_HEADER + "\r\n") and text.endswith("\r\n")
    assert text.count("\n") == 5  # the header and one row a file, nothing else
    assert rows(target) == [expected_row(tmp_path / "card" / rel, folder, f"{folder}/{rel}",
                                         mode) for rel, folder in want.items()]
    # a rerun finds every file in place by content: nothing new, not one row more
    again = sort_into(files, tmp_path / "card", target, 128 * Q, copy=copy)
    assert (again["already"], again["sorted"], again["renamed"]) == (4, 2, 0)
    assert manifest_text(target) == text
    assert placed(target) == want
    # a sorted file the user deleted is sorted again; a new photo is added: two rows more
    (target / "badger" / "site_a/cam1/IMG_0001.JPG").unlink()
    photo(card / "site_b/IMG_0004.JPG", 210)
    files["site_b/IMG_0004.JPG"] = ("badger", 1.0)
    again = sort_into(files, tmp_path / "card", target, 128 * Q, copy=copy)
    assert (again["already"], again["sorted"]) == (3, 3)
    assert placed(target) == {**want, "site_b/IMG_0004.JPG": "badger"}
    grown = manifest_text(target)
    assert grown.startswith(text) and grown[len(text):].split("\r\n") == [
        ",".join(expected_row(tmp_path / "card" / rel, "badger", f"badger/{rel}", mode).values())
        for rel in ("site_a/cam1/IMG_0001.JPG", "site_b/IMG_0004.JPG")] + [""]


def test_a_stream_of_labels_and_the_manifest_on_disk_every_100_rows(tmp_path: Path) -> None:
    """Labels may come as a stream; a kill mid-sort loses at most the last 100 rows: when the
    101st (201st) label is asked for, exactly 100 (200) complete rows are on disk."""
    card = tmp_path / "card"
    names = [f"IMG_{i:04d}.JPG" for i in range(201)]
    data = photo(tmp_path / "p.jpg", 7).read_bytes()
    card.mkdir()
    for i, name in enumerate(names):  # 201 photos (two bytes after the JPEG's end differ)
        (card / name).write_bytes(data + i.to_bytes(2, "big"))
    target = tmp_path / "sorted"
    seen = {}

    def stream():
        for i, name in enumerate(names):
            if i in (100, 200):
                seen[i] = (target / "manifest.csv").read_bytes().decode()
            yield name, ("deer", 0.9)

    got = sort_into(stream(), card, target, 0.5)
    assert got["sorted"] == 201
    for i, on_disk in seen.items():
        assert on_disk.endswith("\r\n") and on_disk.count("\r\n") == i + 1, on_disk[-200:]
    assert len(rows(target)) == 201


@pytest.mark.parametrize("copy", [False, True])
def test_colliding_names_get_the_contents_hash_and_nothing_is_replaced(
        tmp_path: Path, copy: bool) -> None:
    """Three cards, one name, three photos: the second is `stem~HASH12.suffix`, the third as
    well (its own hash); the same photo from a fourth card (a copy of card 1) is recognised."""
    srcs = [photo(tmp_path / f"card{k}" / "DCIM" / "IMG_0001.JPG", 300 + k) for k in range(3)]
    dup = tmp_path / "card3" / "DCIM" / "IMG_0001.JPG"
    dup.parent.mkdir(parents=True)
    dup.write_bytes(srcs[0].read_bytes())
    target = tmp_path / "sorted"
    counts = [sort_into({"DCIM/IMG_0001.JPG": ("deer", 0.75)}, tmp_path / f"card{k}", target,
                        0.5, copy=copy) for k in range(4)]
    assert [(c["sorted"], c["renamed"], c["already"]) for c in counts] == \
        [(1, 0, 0), (1, 1, 0), (1, 1, 0), (1, 0, 1)]
    assert not any("stale_links" in c for c in counts)
    want = {"deer/DCIM/IMG_0001.JPG": sha(srcs[0])}
    for s in srcs[1:]:
        want[f"deer/DCIM/IMG_0001~{sha(s)[:12]}.JPG"] = sha(s)
    got = {str(p.relative_to(target)): sha(p) for p in target.rglob("*.JPG")}
    assert got == want
    assert [(r["source"], r["sorted"]) for r in rows(target)] == [
        (str(srcs[0]), "deer/DCIM/IMG_0001.JPG"),
        *[(str(s), f"deer/DCIM/IMG_0001~{sha(s)[:12]}.JPG") for s in srcs[1:]],
        (str(dup), "deer/DCIM/IMG_0001.JPG")]  # the copy maps to the photo already there


def test_a_file_put_there_by_hand_is_read_and_kept(tmp_path: Path) -> None:
    """A destination name taken by a file the manifest does not know is read: another photo
    goes beside it (the user's file untouched), the same photo is not sorted twice."""
    a = photo(tmp_path / "c1" / "a.jpg", 1)
    b = photo(tmp_path / "c2" / "a.jpg", 2)
    target = tmp_path / "sorted"
    (target / "deer").mkdir(parents=True)
    (target / "deer" / "a.jpg").write_bytes(a.read_bytes())
    got = sort_into({"a.jpg": ("deer", 0.9)}, b.parent, target, 0.5, copy=True)
    assert (got["already"], got["renamed"], got["sorted"]) == (0, 1, 1)
    got = sort_into({"a.jpg": ("deer", 0.9)}, a.parent, target, 0.5, copy=True)
    assert (got["already"], got["renamed"], got["sorted"]) == (1, 0, 1)
    assert sha(target / "deer" / "a.jpg") == sha(a)
    assert sha(target / "deer" / f"a~{sha(b)[:12]}.jpg") == sha(b)
    assert len(list((target / "deer").iterdir())) == 2


def test_a_dangling_link_at_the_destination_is_kept_and_sorted_beside(tmp_path: Path) -> None:
    """A link left from a card no longer mounted (manifest lost) cannot be read: it is not
    this photo, so the photo goes beside it and the link stays."""
    a = photo(tmp_path / "card" / "a.jpg", 3)
    target = tmp_path / "sorted"
    (target / "deer").mkdir(parents=True)
    (target / "deer" / "a.jpg").symlink_to(tmp_path / "old_card" / "a.jpg")
    got = sort_into({"a.jpg": ("deer", 0.9)}, a.parent, target, 0.5, copy=True)
    assert (got["already"], got["renamed"], got["sorted"]) == (0, 1, 1)
    assert os.readlink(target / "deer" / "a.jpg") == str(tmp_path / "old_card" / "a.jpg")
    assert sha(target / "deer" / f"a~{sha(a)[:12]}.jpg") == sha(a)


def test_a_refilled_card_in_link_mode_counts_the_stale_link(tmp_path: Path) -> None:
    """Link mode, a card reformatted: the old link now shows the new photo under the old name;
    the new photo is sorted beside it by its hash and the summary says one link went stale."""
    srcs = [photo(tmp_path / "card" / f"IMG_000{i}.JPG", 10 + i) for i in (1, 2)]
    labels = {s.name: ("fox", 0.9) for s in srcs}
    target = tmp_path / "sorted"
    first = sort_into(labels, srcs[0].parent, target, 0.5)
    assert "stale_links" not in first
    for i, src in enumerate(srcs):
        photo(src, 20 + i)
    second = sort_into(labels, srcs[0].parent, target, 0.5)
    assert (second["stale_links"], second["renamed"], second["already"]) == (2, 2, 0)
    for src in srcs:
        assert os.readlink(target / "fox" / f"{src.stem}~{sha(src)[:12]}.JPG") == str(src)


def test_unchanged_stat_is_trusted_and_a_changed_mtime_reads_again(tmp_path: Path) -> None:
    """A source with the recorded device, inode, size and mtime_ns is not read again (large
    cards rerun fast); touch it and it is read, and new content is copied beside the old."""
    src = photo(tmp_path / "card" / "IMG_0001.JPG", 21)
    target = tmp_path / "sorted"
    sort_into({"gone.jpg": ("fox", 0.9), "IMG_0001.JPG": ("fox", 0.9)}, src.parent, target,
              0.5, copy=True, warn=io.StringIO())  # an error row first: later rows still read
    old = sha(src)
    st = os.stat(src)
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF  # another photo, same size
    with open(src, "r+b") as f:  # in place: same inode
        f.write(data)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    got = sort_into({"IMG_0001.JPG": ("fox", 0.9)}, src.parent, target, 0.5, copy=True)
    assert (got["already"], got["renamed"]) == (1, 0)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    got = sort_into({"IMG_0001.JPG": ("fox", 0.9)}, src.parent, target, 0.5, copy=True)
    assert (got["already"], got["renamed"]) == (0, 1)
    assert sha(target / "fox" / "IMG_0001.JPG") == old
    assert sha(target / "fox" / f"IMG_0001~{sha(src)[:12]}.JPG") == sha(src)


def test_unique_names_in_order_and_within_name_max() -> None:
    d = hashlib.sha256(b"a photo").hexdigest()
    assert list(islice(unique_names("IMG_0001.JPG", d, 255), 5)) == [
        "IMG_0001.JPG", f"IMG_0001~{d[:12]}.JPG", f"IMG_0001~{d}.JPG",
        f"IMG_0001~{d[:12]}-2.JPG", f"IMG_0001~{d[:12]}-3.JPG"]
    # suffixes of up to 10 characters are kept at the end; longer, a dot file, no dot: none
    assert next(islice(unique_names("a.abcdefghij", d, 255), 1, None)) == \
        f"a~{d[:12]}.abcdefghij"
    assert next(islice(unique_names("a.abcdefghijk", d, 255), 1, None)) == \
        f"a.abcdefghijk~{d[:12]}"
    assert next(islice(unique_names(".hidden", d, 255), 1, None)) == f".hidden~{d[:12]}"
    assert next(islice(unique_names("README", d, 255), 1, None)) == f"README~{d[:12]}"
    # too long for the folder: never its own name; cut between whole UTF-8 characters
    long = "x" + "é" * 20 + ".jpg"  # 45 bytes
    assert list(islice(unique_names(long, d, 40), 3)) == [
        "x" + "é" * 11 + f"~{d[:12]}.jpg",  # 1 + 22 + 13 + 4 = 40 bytes
        f"~{d}.jpg",  # the full hash alone (69 bytes: fits any real folder's 255)
        "x" + "é" * 10 + f"~{d[:12]}-2.jpg"]  # 1 + 20 + 15 + 4 = 40
    # 41 bytes: the cut at 24 would split an é, so 23 bytes of the stem are kept
    assert next(iter(unique_names(long, d, 41))) == "x" + "é" * 11 + f"~{d[:12]}.jpg"
    assert next(iter(unique_names("y" * 40 + ".jpg", d, 44))) == "y" * 40 + ".jpg"
    # however little room there is, never half a character
    assert list(islice(unique_names("é" * 10 + ".jpg", d, 18), 1)) == [f"~{d[:12]}.jpg"]
    assert list(islice(unique_names("é" * 10 + ".jpg", d, 19), 1)) == [f"é~{d[:12]}.jpg"]
    # a Latin-1 name (bytes that are not UTF-8, "°" = 0xB0) of the longest legal length
    latin = os.fsdecode(b"\xb0" * 251 + b".jpg")
    assert all(len(os.fsencode(n)) <= 255 for n in islice(unique_names(latin, d, 255), 4))


def test_labels_become_safe_folder_names(tmp_path: Path) -> None:
    """Separators and NUL become _, leading dots go, empty is _unnamed, our own names get a _,
    and a label longer than NAME_MAX is cut (whole UTF-8 characters) + ~sha256(label)[:12]."""
    long = "x" + "é" * 200  # 401 bytes
    tag = "~" + hashlib.sha256(long.encode()).hexdigest()[:12]
    cases = {"a/b": "a_b", "back\\slash": "back_slash", "nul\0x": "nul_x", "..hidden": "hidden",
             "": "_unnamed", "  ": "_unnamed", "...": "_unnamed", "_uncertain": "_uncertain_",
             "_failed": "_failed_", "manifest.csv": "manifest.csv_", " spaced ": "spaced",
             "z" * 255: "z" * 255, long: "x" + "é" * 120 + tag}  # 1 + 240 + 13 = 254 bytes
    card = tmp_path / "card"
    labels = {}
    for i, label in enumerate(cases):
        photo(card / f"p{i}.jpg", 400 + i)
        labels[f"p{i}.jpg"] = (label, 0.9)
    target = tmp_path / "new" / "sorted"  # made, parents too
    got = sort_into(labels, card, target, 0.5)
    assert got["sorted"] == len(cases) and got["errors"] == 0
    assert placed(target) == {f"p{i}.jpg": want for i, want in enumerate(cases.values())}


def test_paths_in_results_never_leave_the_target(tmp_path: Path) -> None:
    """`..` parts and absolute paths in a results file are sorted inside DIR/LABEL/."""
    card = tmp_path / "deep" / "card"
    outside = photo(tmp_path / "escape.jpg", 31)
    absolute = photo(tmp_path / "elsewhere" / "abs.jpg", 32)
    photo(card / "sub" / "ok.jpg", 33)
    target = tmp_path / "sorted"
    got = sort_into({"../../escape.jpg": ("deer", 0.9), str(absolute): ("deer", 0.9),
                     "./sub/ok.jpg": ("deer", 0.9)}, card, target, 0.5)
    assert got["sorted"] == 3
    abs_parts = "/".join(absolute.parts[1:])
    assert placed(target) == {"escape.jpg": "deer", abs_parts: "deer", "sub/ok.jpg": "deer"}
    assert os.readlink(target / "deer" / "escape.jpg") == str(outside)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "elsewhere", "escape.jpg",
                                                          "sorted"]


def test_a_file_that_cannot_be_sorted_is_a_row_and_the_rest_are_sorted(tmp_path: Path) -> None:
    """A photo gone from the card and a label folder blocked by a file: each is a manifest
    row with its error (no sha256, no stat where there is none) and a warning naming it."""
    card = tmp_path / "card"
    ok = photo(card / "ok.jpg", 41)
    blocked = photo(card / "blocked.jpg", 42)
    target = tmp_path / "sorted"
    target.mkdir()
    (target / "owl").write_text("not a folder\n")
    warn = io.StringIO()
    got = sort_into({"gone.jpg": ("fox", 0.9), "blocked.jpg": ("owl", 0.9),
                     "ok.jpg": ("fox", 0.9)}, card, target, 0.5, copy=True, warn=warn)
    assert (got["errors"], got["sorted"]) == (2, 1) and "stopped" not in got
    lines = warn.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"kerascls-edge: warning: not sorted: {card / 'gone.jpg'}: ")
    assert "No such file" in lines[0]
    assert lines[1].startswith(f"kerascls-edge: warning: not sorted: {blocked}: ")
    assert str(target / "owl") in lines[1]
    r = rows(target)
    assert r[0] == {"source": str(card / "gone.jpg"), "sha256": "", "size": "", "mtime_ns": "",
                    "device": "", "inode": "", "folder": "fox", "sorted": "", "mode": "copy",
                    "error": r[0]["error"]}
    assert r[0]["error"] == f"cannot read image {card / 'gone.jpg'}: No such file or directory"
    st = os.stat(blocked)
    assert {k: r[1][k] for k in ("source", "size", "mtime_ns", "device", "inode", "folder",
                                 "sorted")} == {
        "source": str(blocked), "size": str(st.st_size), "mtime_ns": str(st.st_mtime_ns),
        "device": str(st.st_dev), "inode": str(st.st_ino), "folder": "owl", "sorted": ""}
    assert str(target / "owl") in r[1]["error"]
    assert r[2] == expected_row(ok, "fox", "fox/ok.jpg", "copy")
    assert dotfiles(target) == []
    # the failed rows are not "already sorted": a rerun (folder unblocked) sorts them
    (target / "owl").unlink()
    photo(card / "gone.jpg", 43)
    again = sort_into({"gone.jpg": ("fox", 0.9), "blocked.jpg": ("owl", 0.9),
                       "ok.jpg": ("fox", 0.9)}, card, target, 0.5, copy=True)
    assert (again["errors"], again["already"], again["sorted"]) == (0, 1, 3)


def test_a_manifest_cut_by_a_crash_is_continued_on_a_new_line(tmp_path: Path) -> None:
    card = tmp_path / "card"
    for i in range(3):
        photo(card / f"{i}.jpg", 50 + i)
    target = tmp_path / "sorted"
    sort_into({"0.jpg": ("deer", 0.9), "1.jpg": ("deer", 0.9)}, card, target, 0.5)
    text = manifest_text(target)
    cut = text[:text.rindex(",deer,") + 6]  # the last row cut after its folder cell
    (target / "manifest.csv").write_text(cut, encoding="utf-8", newline="")
    got = sort_into({"0.jpg": ("deer", 0.9), "1.jpg": ("deer", 0.9), "2.jpg": ("deer", 0.9)},
                    card, target, 0.5)
    assert (got["already"], got["sorted"], got["renamed"]) == (2, 3, 0)
    lines = manifest_text(target).split("\r\n")
    assert lines[:3] == cut.split("\r\n") and lines[-1] == ""
    # header, row 0, the cut row, 1.jpg again (its row was lost: found by content), 2.jpg
    assert len(lines) == 6
    for line, n in ((lines[3], 1), (lines[4], 2)):
        assert next(csv.reader([line])) == list(expected_row(card / f"{n}.jpg", "deer",
                                                             f"deer/{n}.jpg", "link").values())


def test_a_manifest_of_something_else_is_refused(tmp_path: Path) -> None:
    card = tmp_path / "card"
    photo(card / "a.jpg", 60)
    target = tmp_path / "sorted"
    target.mkdir()
    (target / "manifest.csv").write_text("name,size\r\nx,1\r\n")
    with pytest.raises(EdgeError) as e:
        sort_into({"a.jpg": ("deer", 0.9)}, card, target, 0.5)
    assert str(e.value) == (f"refusing to add to {target / 'manifest.csv'}: it is not a "
                            "kerascls-edge sort manifest (move it away or sort into another "
                            "folder)")
    assert sorted(p.name for p in target.iterdir()) == ["manifest.csv"]
    (target / "manifest.csv").write_bytes(MANIFEST_HEADER.encode() + b"\r\n\xff\r\n")
    with pytest.raises(EdgeError, match=f"^cannot read {target / 'manifest.csv'}: 'utf-8'"):
        sort_into({"a.jpg": ("deer", 0.9)}, card, target, 0.5)
    (target / "manifest.csv").unlink()
    (target / "manifest.csv").mkdir()
    with pytest.raises(EdgeError, match=f"^cannot read csv {target / 'manifest.csv'}: "):
        sort_into({"a.jpg": ("deer", 0.9)}, card, target, 0.5)
    (target / "manifest.csv").rmdir()
    damaged = MANIFEST_HEADER + "\r\n" + f"{card / 'a.jpg'},abc,12x,1,2,3,deer,deer/a.jpg,link,\r\n"
    (target / "manifest.csv").write_text(damaged, newline="")
    got = sort_into({"a.jpg": ("deer", 0.9)}, card, target, 0.5)  # a damaged row is ignored
    assert (got["sorted"], got["already"]) == (1, 0)


def test_sort_target_inside_an_input_or_uncreatable_is_refused(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    photo(card / "a.jpg", 61)
    for bad in (card, card / "sorted", card / "x" / "y"):
        with pytest.raises(EdgeError) as e:
            check_target(bad, [str(card / "a.jpg"), str(card)])
        assert str(e.value) == (f"--sort_into {bad} lies inside the input folder {card}; "
                                "choose a folder outside it")
    check_target(tmp_path / "card2", [str(card)])  # a sibling sharing the prefix is fine
    check_target(card / "sorted", [str(card / "a.jpg")])  # an input file is not a folder
    with pytest.raises(EdgeError) as e:
        sort_into({}, card, card / "a.jpg" / "sorted", 0.5)
    assert str(e.value) == f"cannot create --sort_into folder {card / 'a.jpg' / 'sorted'}: " \
        "Not a directory"


def test_without_hard_links_copies_are_placed_by_a_checked_rename(tmp_path: Path, monkeypatch):
    """exFAT/FAT cards have no hard links: the copy is renamed into place, never over a file."""
    def no_link(src, dst, **kw):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    a = photo(tmp_path / "c1" / "a.jpg", 70)
    b = photo(tmp_path / "c2" / "a.jpg", 71)
    monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "sorted"
    sort_into({"a.jpg": ("deer", 0.9)}, a.parent, target, 0.5, copy=True)
    got = sort_into({"a.jpg": ("deer", 0.9)}, b.parent, target, 0.5, copy=True)
    assert (got["sorted"], got["renamed"], got["errors"]) == (1, 1, 0)
    assert sha(target / "deer" / "a.jpg") == sha(a)
    assert sha(target / "deer" / f"a~{sha(b)[:12]}.jpg") == sha(b)
    assert dotfiles(target) == []


@pytest.mark.parametrize("copy", [False, True])
def test_an_io_error_placing_a_file_is_recorded_against_the_destination(
        tmp_path, monkeypatch, copy):
    """EIO (not a full disk, not a folder without links): each file fails alone, its row
    names the destination and keeps the photo's sha256."""
    def broken(src, dst, **kw):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))

    card = tmp_path / "card"
    srcs = [photo(card / "a.jpg", 72), photo(card / "b.jpg", 73)]
    monkeypatch.setattr(os, "link" if copy else "symlink", broken)
    target = tmp_path / "sorted"
    got = sort_into({"a.jpg": ("deer", 0.9), "b.jpg": ("deer", 0.9)}, card, target, 0.5,
                    copy=copy, warn=io.StringIO())
    assert (got["errors"], got["sorted"]) == (2, 0) and "stopped" not in got
    assert [(r["error"], r["sha256"]) for r in rows(target)] == [
        (f"Input/output error: {target / 'deer' / s.name}", sha(s)) for s in srcs]
    assert dotfiles(target) == []


def test_a_folder_without_symbolic_links_stops_the_sort_with_a_hint(tmp_path, monkeypatch):
    def no_symlink(src, dst, **kw):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    card = tmp_path / "card"
    for i in range(3):
        photo(card / f"{i}.jpg", 80 + i)
    monkeypatch.setattr(os, "symlink", no_symlink)
    target = tmp_path / "sorted"
    got = sort_into({f"{i}.jpg": ("deer", 0.9) for i in range(3)}, card, target, 0.5,
                    warn=io.StringIO())
    assert (got["errors"], got["sorted"], got["not_sorted"]) == (1, 0, 2)
    assert got["stopped"] == ("this folder cannot hold symbolic links (use --copy): "
                              f"{target / 'deer' / '0.jpg'}")


def _full_on_fsync(monkeypatch, name: str) -> None:
    """The disk turns out full when a file whose name contains `name` is synced (delayed
    allocation reports it at fsync, not at write), once."""
    real, fired = os.fsync, []

    def fsync(fd: int) -> None:
        if not fired and name in os.readlink(f"/proc/self/fd/{fd}"):
            fired.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_disk_full_at_sync_names_the_copy_not_the_card(tmp_path, monkeypatch) -> None:
    card = tmp_path / "card"
    for i in range(3):
        photo(card / f"{i}.jpg", 95 + i)
    _full_on_fsync(monkeypatch, ".sorting-")
    target = tmp_path / "sorted"
    warn = io.StringIO()
    got = sort_into({f"{i}.jpg": ("deer", 0.9) for i in range(3)}, card, target, 0.5,
                    copy=True, warn=warn)
    assert (got["errors"], got["sorted"], got["not_sorted"]) == (1, 0, 2)
    assert got["stopped"] == f"No space left on device: {target / 'deer' / '0.jpg'}"
    assert dotfiles(target) == [] and placed(target) == {}


def test_a_manifest_that_cannot_be_written_stops_the_sort(tmp_path, monkeypatch) -> None:
    """manifest.csv is synced every 100 rows; when that fails the sort stops, naming it."""
    card = tmp_path / "card"
    card.mkdir()
    data = photo(tmp_path / "p.jpg", 8).read_bytes()
    for i in range(101):
        (card / f"{i:03d}.jpg").write_bytes(data + i.to_bytes(2, "big"))
    _full_on_fsync(monkeypatch, "manifest.csv")
    target = tmp_path / "sorted"
    warn = io.StringIO()
    got = sort_into({f"{i:03d}.jpg": ("deer", 0.9) for i in range(101)}, card, target, 0.5,
                    warn=warn)
    full = f"No space left on device: {target / 'manifest.csv'}"
    assert (got["errors"], got["sorted"], got["not_sorted"], got["stopped"]) == (1, 99, 1, full)
    assert warn.getvalue() == f"kerascls-edge: warning: not sorted: {card / '099.jpg'}: {full}\n"


class _FullIndex:
    """A sqlite connection whose second INSERT finds the temporary disk full."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real, self.inserts = real, 0

    def execute(self, sql: str, params=()):
        if sql.startswith("INSERT"):
            self.inserts += 1
            if self.inserts == 2:
                raise sqlite3.OperationalError("database or disk is full")
        return self.real.execute(sql, params)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_an_index_that_cannot_grow_stops_the_sort(tmp_path, monkeypatch) -> None:
    """The manifest's on-disk index (a temporary SQLite file) on a full /tmp: the sort stops,
    naming manifest.csv and its index, instead of failing every later file."""
    card = tmp_path / "card"
    for i in range(3):
        photo(card / f"{i}.jpg", 98 + i)
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _FullIndex(real(*a, **k)))
    target = tmp_path / "sorted"
    got = sort_into({f"{i}.jpg": ("deer", 0.9) for i in range(3)}, card, target, 0.5,
                    warn=io.StringIO())
    assert (got["errors"], got["sorted"], got["not_sorted"]) == (1, 1, 1)
    assert got["stopped"] == f"its index: database or disk is full: {target / 'manifest.csv'}"


def _hold(path: Path, pid_text: str) -> subprocess.Popen:
    """Another process holding an flock on `path` (as another run would), written `pid_text`."""
    script = textwrap.dedent("""
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, sys.argv[2].encode())
        print("held", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), pid_text],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_sort_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    card = tmp_path / "card"
    photo(card / "a.jpg", 90)
    target = tmp_path / "sorted"
    target.mkdir()
    other = _hold(target / ".manifest.csv.lock", "4242\n")
    try:
        with pytest.raises(EdgeError, match=r"another run \(pid 4242\) is writing .*manifest"):
            sort_into({"a.jpg": ("deer", 0.9)}, card, target, 0.5)
    finally:
        other.communicate("")
    assert sort_into({"a.jpg": ("deer", 0.9)}, card, target, 0.5)["sorted"] == 1


# -- the labels sorting reads ---------------------------------------------------------------------


def test_labels_from_a_megadetector_file(tmp_path: Path) -> None:
    """The most confident classified box (ties: the first), else the most confident box's
    category, else blank; a failure; a video's own label. Checked by MegaDetector's validator."""
    md = {"info": {"format_version": "1.5", "detector": "hand-made"},
          "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
          "classification_categories": {"0": "badger", "1": "red_fox", "2": "wolf"},
          "images": [
              {"file": "tie.jpg", "detections": [
                  {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4],
                   "classifications": [["1", 0.625], ["0", 0.375]]},
                  {"category": "1", "conf": 0.95, "bbox": [0.5, 0.1, 0.2, 0.6],
                   "classifications": [["2", 0.625], ["1", 0.375]]}]},
              {"file": "best_last.jpg", "detections": [
                  {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4],
                   "classifications": [["1", 0.5], ["0", 0.25]]},
                  {"category": "1", "conf": 0.2, "bbox": [0.5, 0.1, 0.2, 0.6],
                   "classifications": [["2", 0.75], ["1", 0.25]]}]},
              {"file": "boxes.jpg", "detections": [
                  {"category": "3", "conf": 0.25, "bbox": [0.0, 0.0, 0.5, 0.5]},
                  {"category": "2", "conf": 0.5, "bbox": [0.5, 0.5, 0.5, 0.5]}]},
              {"file": "blank.jpg", "detections": []},
              {"file": "broken.jpg", "failure": "Failure image access", "detections": None},
              {"file": "clip.mp4", "frame_rate": 30.0, "frames_processed": [0, 30],
               "detections": [{"category": "1", "conf": 0.9, "bbox": [0.0, 0.0, 1.0, 1.0],
                               "frame_number": 30, "classifications": [["0", 0.75]]}],
               "video": {"classifications": [["2", 0.625], ["0", 0.375]]}}]}
    path = tmp_path / "md.json"
    path.write_text(json.dumps(md))
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    assert v.validate_batch_results(str(path))["validation_results"]["errors"] == []
    assert list(labels_from_json(path, "empty")) == [
        ("tie.jpg", ("red_fox", 0.625)), ("best_last.jpg", ("wolf", 0.75)),
        ("boxes.jpg", ("person", 0.5)), ("blank.jpg", ("empty", 1.0)),
        ("broken.jpg", (None, 0.0)), ("clip.mp4", ("wolf", 0.625))]
    # from another tool: a failure with an empty list of boxes; a video's class id that the
    # file does not name (the id stands in)
    path.write_text(json.dumps({"info": {"format_version": "1.5"},
                                "detection_categories": {"1": "animal"},
                                "classification_categories": {"0": "badger"}, "images": [
        {"file": "failed.jpg", "failure": "unreadable", "detections": []},
        {"file": "ids.jpg", "detections": [{"category": "1", "conf": 0.5, "bbox": [0, 0, 1, 1],
                                            "classifications": [["0", 0.5]]}],
         "video": {"classifications": [["8", 0.75]]}}]}))
    assert list(labels_from_json(path, "empty")) == [
        ("failed.jpg", (None, 0.0)), ("ids.jpg", ("8", 0.75))]


def test_labels_from_our_csv(tmp_path: Path) -> None:
    """Rows of one file are consecutive: its most confident row (ties: the first); a failure
    row wins; frame rows are not the video's label; empty label is blank, empty conf is 1."""
    path = tmp_path / "r.csv"
    path.write_text(
        "file,label,confidence,failure,row\r\n"
        "a.jpg,red_fox,0.5000,,\r\n"
        "a.jpg,badger,0.7500,,\r\n"
        "a.jpg,wolf,0.7500,,\r\n"
        "b.jpg,badger,0.9000,,\r\n"
        "b.jpg,,,Failure image access,\r\n"
        "b.jpg,wolf,0.9500,,\r\n"
        "clip.mp4,badger,0.6250,,video\r\n"
        "clip.mp4,wolf,0.9900,,frame\r\n"
        "clip.mp4,wolf,0.9900,,frame\r\n"
        "c.jpg,,,,\r\n"
        "d.jpg,,,Failure image access,\r\n")
    assert list(labels_from_csv(path, "empty")) == [
        ("a.jpg", ("badger", 0.75)), ("b.jpg", (None, 0.0)), ("clip.mp4", ("badger", 0.625)),
        ("c.jpg", ("empty", 1.0)), ("d.jpg", (None, 0.0))]
    with pytest.raises(EdgeError, match=f"^cannot read csv {tmp_path / 'gone.csv'}: No such"):
        list(labels_from_csv(tmp_path / "gone.csv", "empty"))
    path.write_text("file,label,confidence\r\na.jpg,x,0.5\r\n,y,0.5\r\n")
    with pytest.raises(EdgeError, match=r"r\.csv: line 3: no file name$"):
        list(labels_from_csv(path, "empty"))
    path.write_text("file,label,confidence\r\na.jpg,x,0.5\r\nb.jpg,y,high\r\n")
    with pytest.raises(EdgeError, match=r"line 3 \(b\.jpg\): confidence 'high' is not a number"):
        list(labels_from_csv(path, "empty"))


# == the checkpoint journal ======================================================================

META = {"bundle": "ab" * 32, "inputs": ["/card"], "top_k": 3, "recursive": True,
        "decode": {"strict": False, "max_pixels": 1000}, "preprocess": {"size": [224, 224]},
        "post": {}}


def rec(file: str, ident: str | None, label: str = "1", conf: float = 0.5) -> dict:
    return {"file": file, "_id": ident, "detections": [
        {"category": "1", "conf": 0.9, "bbox": [0.0, 0.0, 1.0, 1.0],
         "classifications": [[label, conf]]}], "_k": [[label, conf]], "_p": {label: conf}}


def parts(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_file_identity_is_size_mtime_and_a_head_tail_sha256(tmp_path: Path) -> None:
    """Hashed here with hashlib: files up to 128 KiB whole, larger ones their first and last
    64 KiB; mtime and every byte of either end change it; a FIFO or missing file has none."""
    def ident(p: Path, hashed: bytes) -> str:
        st = os.stat(p)
        return f"{st.st_size}:{st.st_mtime_ns}:{hashlib.sha256(hashed).hexdigest()[:32]}"

    big = photo(tmp_path / "big.jpg", 1, size=(900, 700), quality=97)
    data = big.read_bytes()
    assert len(data) > 2 * 65536 + 10
    assert file_identity(big) == ident(big, data[:65536] + data[-65536:])
    for n in (100, 65536, 65537, 100_000, 131072, 131073):
        p = tmp_path / f"f{n}.jpg"
        p.write_bytes(data[:n])
        want = data[:n] if n <= 131072 else data[:65536] + data[n - 65536:n]
        assert file_identity(p) == ident(p, want), n
    before = file_identity(big)
    st = os.stat(big)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert file_identity(big) != before
    for at in (0, len(data) - 1):  # one byte at either end, size and mtime kept
        changed = bytearray(data)
        changed[at] ^= 1
        big.write_bytes(changed)
        os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert file_identity(big) != before
    os.mkfifo(tmp_path / "fifo.jpg")
    assert file_identity(tmp_path / "fifo.jpg") is None
    assert file_identity(tmp_path / "gone.jpg") is None


def test_bundle_identity_is_the_model_bytes_and_the_labels(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(bytes(range(256)) * 5000)
    want = hashlib.sha256(model.read_bytes() + json.dumps(["a", "b"]).encode()).hexdigest()
    assert bundle_identity(model, ["a", "b"]) == want
    assert bundle_identity(model, ["b", "a"]) != want


def test_checkpoint_round_trip_in_parts_of_every(tmp_path: Path) -> None:
    d = tmp_path / "out.json.partial"
    j = Journal(d, every=2)
    assert j.open(META, resume=False, overwrite=False) == 0
    assert json.loads((d / "meta.json").read_text()) == META
    for i in range(5):
        j.add(rec(f"{i}.jpg", f"id{i}"))
    j.add(rec("0.jpg", "other"))  # stored already: ignored
    assert parts(d) == ["meta.json", "part-000000.jsonl", "part-000001.jsonl"]
    j.flush()
    j.flush()  # nothing queued: no empty part
    assert parts(d)[-1] == "part-000002.jsonl" and len(parts(d)) == 4
    lines = (d / "part-000000.jsonl").read_text()
    assert lines == "\n".join(json.dumps(rec(f"{i}.jpg", f"id{i}"), separators=(",", ":"))
                              for i in range(2)) + "\n"
    # resumed (a new process): every file held, each unchanged, records in order
    j = Journal(d, every=3)
    assert j.open(META, resume=True, overwrite=False) == 5
    assert all(j.unchanged(f"{i}.jpg", f"id{i}") for i in range(5))
    assert [r["file"] for r in j.records()] == [f"{i}.jpg" for i in range(5)]
    assert j.changed == 0
    j.add(rec("5.jpg", "id5"))
    j.flush()
    assert parts(d)[-1] == "part-000003.jsonl"
    j.remove()
    assert not d.exists()
    j.remove()  # already gone (removed by hand): the finished run does not fail


@pytest.mark.parametrize("every,n_parts", [(0, 3), (1, 3), (3, 1), (4, 0)])
def test_journal_a_part_every_n_results(tmp_path: Path, every: int, n_parts: int) -> None:
    d = tmp_path / "new" / "p"  # made, parents too
    j = Journal(d, every=every)
    j.open(META, False, False)
    for i in range(3):
        j.add(rec(f"{i}.jpg", None))
    assert len(parts(d)) - 1 == n_parts


def test_journal_a_changed_file_is_redone_and_its_newer_record_counts(tmp_path: Path) -> None:
    """A refilled card: IMG_0001 with another identity is redone; its old record is dropped
    from the output (this run and a later resume); a file no longer listed is left out."""
    d = tmp_path / "p"
    j = Journal(d, every=1)
    j.open(META, False, False)
    for name in ("IMG_0001.JPG", "IMG_0002.JPG", "IMG_0003.JPG"):
        j.add(rec(name, f"{name}:old", "0"))
    j = Journal(d, every=1)
    assert j.open(META, True, False) == 3
    assert not j.unchanged("IMG_0001.JPG", "IMG_0001.JPG:new")
    assert j.unchanged("IMG_0002.JPG", "IMG_0002.JPG:old")
    assert not j.unchanged("IMG_0009.JPG", "x")  # never seen
    assert j.changed == 1
    j.add(rec("IMG_0001.JPG", "IMG_0001.JPG:new", "2"))
    out = [(r["file"], r["_id"]) for r in j.records()]  # IMG_0003 is gone from the card
    assert out == [("IMG_0002.JPG", "IMG_0002.JPG:old"), ("IMG_0001.JPG", "IMG_0001.JPG:new")]
    j = Journal(d, every=1)
    assert j.open(META, True, False) == 3
    assert j.unchanged("IMG_0001.JPG", "IMG_0001.JPG:new")
    assert not j.unchanged("IMG_0002.JPG", "IMG_0002.JPG:other")
    j.add(rec("IMG_0002.JPG", "IMG_0002.JPG:other"))
    assert j.unchanged("IMG_0003.JPG", "IMG_0003.JPG:old")
    assert [(r["file"], r["_id"]) for r in j.records()] == [
        ("IMG_0003.JPG", "IMG_0003.JPG:old"), ("IMG_0001.JPG", "IMG_0001.JPG:new"),
        ("IMG_0002.JPG", "IMG_0002.JPG:other")]
    # a record without an identity (a run before identities) is never "unchanged"
    j = Journal(tmp_path / "q")
    j.open(META, False, False)
    j.add(rec("a.jpg", None))
    j.add(rec("b.jpg", None))
    j.flush()
    j = Journal(tmp_path / "q")
    j.open(META, True, False)
    assert not j.unchanged("a.jpg", "5:6:abc") and not j.unchanged("b.jpg", "5:6:abd")
    assert j.changed == 2


def test_journal_results_lost_under_a_run_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "p"
    j = Journal(d, every=2)
    j.open(META, False, False)
    for i in range(4):
        j.add(rec(f"{i}.jpg", None))
    (d / "part-000001.jsonl").unlink()
    with pytest.raises(EdgeError, match=r"only 2 of the 4 results .* rerun with --resume"):
        list(j.records())
    (d / "part-000000.jsonl").write_text('{"file": "0.jpg"}\n{"fi')
    with pytest.raises(EdgeError, match="part-000000.jsonl became unreadable: "):
        list(j.records())


def test_a_killed_run_resumes_with_what_it_had_published(tmp_path: Path) -> None:
    """kill -9 mid-run (a part half-written to its temp file): the resumed run holds exactly
    the records of the published parts, the temp file is removed, numbering continues."""
    d = tmp_path / "out.json.partial"
    script = textwrap.dedent("""
        import json, sys, time
        sys.path.insert(0, sys.argv[1])
        from kerascls_edge.journal import Journal
        j = Journal(sys.argv[2], every=3)
        j.open(json.loads(sys.argv[3]), False, False)
        for i in range(7):
            j.add({"file": f"{i}.jpg", "_id": f"id{i}"})
        open(sys.argv[2] + "/.part-000002.jsonl.tmp", "w").write('{"file": "6.jpg"')
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(ROOT / "export"), str(d),
                             json.dumps(META)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
    finally:
        proc.kill()
        proc.wait()
    j = Journal(d, every=3)
    assert j.open(META, True, False) == 6
    assert parts(d) == ["meta.json", "part-000000.jsonl", "part-000001.jsonl"]
    assert [j.unchanged(f"{i}.jpg", f"id{i}") for i in range(7)] == [True] * 6 + [False]
    j.add({"file": "6.jpg", "_id": "id6"})
    j.flush()
    assert parts(d)[-1] == "part-000002.jsonl"
    assert [r["file"] for r in j.records()] == [f"{i}.jpg" for i in range(7)]


def test_journal_a_corrupt_part_is_set_aside_and_its_images_redone(tmp_path: Path) -> None:
    d = tmp_path / "p"
    j = Journal(d, every=2)
    j.open(META, False, False)
    for i in range(6):
        j.add(rec(f"{i}.jpg", f"id{i}"))
    (d / "part-000001.jsonl").write_text(json.dumps(rec("2.jpg", "id2")) + "\n" +
                                         json.dumps(rec("2.jpg", "id2")) + "\n")
    (d / "part-x.jsonl").write_text("junk")  # not a name the journal writes: ignored
    err = io.StringIO()
    j = Journal(d, every=2, stderr=err)
    assert j.open(META, True, False) == 4
    assert err.getvalue() == (f"kerascls-edge: warning: checkpoint part {d / 'part-000001.jsonl'}"
                              " is corrupt (it repeats an image); its images will be classified "
                              "again\n")
    assert "part-000001.jsonl.corrupt" in parts(d) and "part-000001.jsonl" not in parts(d)
    assert [j.unchanged(f"{i}.jpg", f"id{i}") for i in range(6)] == [True, True, False, False,
                                                                     True, True]
    j.add(rec("2.jpg", "id2"))
    j.add(rec("3.jpg", "id3"))
    assert "part-000003.jsonl" in parts(d)
    assert sorted(r["file"] for r in j.records()) == [f"{i}.jpg" for i in range(6)]


def test_a_checkpoint_of_other_settings_is_refused_naming_each_setting(tmp_path: Path) -> None:
    d = tmp_path / "p"
    Journal(d).open(META, False, False)
    new = json.loads(json.dumps(META))
    new.update(bundle="cd" * 32, top_k=5, inputs=["/card", "/card2"])
    new["decode"]["max_pixels"] = 2000
    new["preprocess"]["size"] = [260, 260]
    new["post"] = {"allow_list": "x" * 64}
    new["extra"] = "a" * 38  # 40 characters as JSON: shown whole
    new["recursive"] = "b" * 39  # 41: cut to 37 + "..."
    with pytest.raises(EdgeError) as e:
        Journal(d).open(new, True, False)
    assert str(e.value) == (
        f"cannot resume: the checkpoint at {d} was made with other settings ("
        "bundle (model file or labels): content differs; "
        "--max_pixels: 1000 -> 2000; "
        f'extra: null -> "{"a" * 38}"; '
        'image inputs: ["/card"] -> ["/card", "/card2"]; '
        "post: {} -> null; "
        "--allow: content differs; "
        "model.json preprocess.size: [224, 224] -> [260, 260]; "
        f'--recursive: true -> "{"b" * 36}...; '
        "--top_k: 3 -> 5); its results would mix with these: use --overwrite to start over")
    assert meta_differences({"crop": {"mode": "a"}}, {"crop": {"mode": "b"}}) == \
        ['model.json crop.mode: "a" -> "b"']
    assert meta_differences({"detection_threshold": 0.5}, {"detection_threshold": 0.5}) == []
    assert meta_differences(None, {"detections": "0" * 63}) == \
        [f'--detections file: null -> "{"0" * 36}...']
    assert meta_differences({}, {"top_k": 3}) == ["--top_k: null -> 3"]
    # the same settings (as meta.json reads them back: tuples are lists) resume
    same = {**META, "inputs": ("/card",)}
    assert Journal(d).open(same, True, False) == 0


def test_an_existing_checkpoint_needs_resume_or_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "p"
    j = Journal(d, every=1)
    j.open(META, False, False)
    j.add(rec("a.jpg", None))
    with pytest.raises(EdgeError, match=r"a checkpoint from an earlier run exists at .*p: "
                                        "pass --resume to continue it or --overwrite"):
        Journal(d).open(META, False, False)
    assert Journal(d).open({**META, "top_k": 9}, False, True) == 0  # start over
    assert parts(d) == ["meta.json"]
    assert json.loads((d / "meta.json").read_text())["top_k"] == 9
    f = tmp_path / "f.partial"
    f.write_text("mine")
    with pytest.raises(EdgeError, match="exists and is not a folder; move it away"):
        Journal(f).open(META, True, True)
    assert f.read_text() == "mine"


def test_a_checkpoint_without_a_readable_meta_json(tmp_path: Path) -> None:
    """Killed before meta.json was written: resumed (nothing to mix); with results but no
    meta.json, or an unreadable one: refused."""
    d = tmp_path / "p"
    d.mkdir()
    assert Journal(d).open(META, True, False) == 0
    assert json.loads((d / "meta.json").read_text()) == META
    j = Journal(d, every=1)
    j.open(META, True, False)
    j.add(rec("a.jpg", None))
    (d / "meta.json").unlink()
    with pytest.raises(EdgeError) as e:
        Journal(d).open(META, True, False)
    assert str(e.value) == (f"cannot resume: {d / 'meta.json'} is missing, so nothing says "
                            "which model made these results; use --overwrite to start over")
    (d / "meta.json").write_text("{not json")
    with pytest.raises(EdgeError) as e:
        Journal(d).open(META, True, False)
    assert str(e.value) == (f"cannot resume: {d / 'meta.json'} is unreadable (JSONDecodeError);"
                            " use --overwrite to start over")


GOOD = {"file": "a.jpg", "_id": "1:2:ab", "datetime": "2024:01:01 10:00:00", "_t": 1.5,
        "warnings": ["odd"], "failure": None, "_k": [["2", 0.5], ["0", 0.25]],
        "_p": {"2": 0.5, "0": 0.25},
        "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0.5, 1, 0.25],
                        "classifications": [["2", 0.5]]}]}
VIDEO = {"file": "v.mp4", "frames_processed": [0, 30], "frame_rate": 29.97, "detections": [],
         "video": {"classifications": [["1", 0.75]], "frames": [
             {"frame_number": 0, "time": 0.0, "classifications": [["1", 0.75]]}]}}
BAD = [  # (record, the field named); class ids must be < 3
    ([GOOD], None), ({"file": 5}, None), ({"_k": []}, None),
    ({**GOOD, "_k": [["3", 0.5]]}, "_k"), ({**GOOD, "_k": [["-1", 0.5]]}, "_k"),
    ({**GOOD, "_k": [["\u0661", 0.5]]}, "_k"), ({**GOOD, "_k": [["1", "0.5"]]}, "_k"),
    ({**GOOD, "_k": [["1", True]]}, "_k"), ({**GOOD, "_k": [["1"]]}, "_k"),
    ({**GOOD, "_k": [["1", 0.5, 0]]}, "_k"), ({**GOOD, "_k": [[1, 0.5]]}, "_k"),
    ({**GOOD, "_k": "1"}, "_k"), ({**GOOD, "_k": ["1", 0.5]}, "_k"),
    ({**GOOD, "_p": {"3": 0.5}}, "_p"), ({**GOOD, "_p": {"x": 0.5}}, "_p"),
    ({**GOOD, "_p": {"\u0661": 0.5}}, "_p"), ({**GOOD, "_p": {"1": "a"}}, "_p"),
    ({**GOOD, "_p": [0.5]}, "_p"),
    ({**GOOD, "_t": "noon"}, "_t"), ({**GOOD, "_t": False}, "_t"),
    ({**GOOD, "failure": 3}, "failure"), ({**GOOD, "_id": 3}, "_id"),
    ({**GOOD, "datetime": 3}, "datetime"), ({**GOOD, "warnings": "odd"}, "warnings"),
    ({**GOOD, "warnings": [3]}, "warnings"),
    ({**GOOD, "detections": "none"}, "detections"), ({**GOOD, "detections": [3]}, "detections"),
    ({**GOOD, "detections": [{"bbox": "0 0 1 1"}]}, "detections"),
    ({**GOOD, "detections": [{"bbox": [0, "a", 1, 1]}]}, "detections"),
    ({**GOOD, "detections": [{"classifications": [["3", 0.5]]}]}, "detections"),
    ({**VIDEO, "frames_processed": [True]}, "frames_processed"),
    ({**VIDEO, "frames_processed": ["1"]}, "frames_processed"),
    ({**VIDEO, "frames_processed": 2}, "frames_processed"),
    ({**VIDEO, "frame_rate": "30"}, "frame_rate"), ({**VIDEO, "frame_rate": True}, "frame_rate"),
    ({**VIDEO, "video": []}, "video"), ({**VIDEO, "video": {"classifications": []}}, "video"),
    ({**VIDEO, "video": {"classifications": [["3", 0.5]], "frames": []}}, "video"),
    ({**VIDEO, "video": {"classifications": [], "frames": [3]}}, "video"),
    ({**VIDEO, "video": {"classifications": [], "frames": [
        {"frame_number": 0, "time": 0.0, "classifications": [["3", 0.5]]}]}}, "video"),
    ({**VIDEO, "video": {"classifications": [], "frames": [
        {"frame_number": "0", "time": 0.0, "classifications": []}]}}, "video"),
    ({**VIDEO, "video": {"classifications": [], "frames": [
        {"frame_number": 0, "time": "0", "classifications": []}]}}, "video"),
]


@pytest.mark.parametrize("bad,field", BAD)
def test_journal_a_part_with_a_malformed_record_is_corrupt(tmp_path: Path, bad, field) -> None:
    part = tmp_path / "part-000000.jsonl"
    part.write_text(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(CorruptPart) as e:
        read_part(part, n_classes=3)
    why = ('not a result record with a "file"' if field is None else
           f"field {field!r} of {bad['file']!r} is malformed")
    assert str(e.value) == f"line 2: {why}"


def test_journal_parts_read_back_whole_or_not_at_all(tmp_path: Path) -> None:
    part = tmp_path / "part-000000.jsonl"
    edge = {**GOOD, "_t": None, "datetime": None, "_id": None, "failure": "x", "detections": None,
            "_k": [["2", 1]], "_p": {"2": 1}}
    part.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(VIDEO) + "\n" + json.dumps(edge) + "\n")
    assert read_part(part, 3) == [GOOD, VIDEO, edge]
    part.write_text("")
    assert read_part(part, 3) == []
    for text, why in (('{"file": "a.jpg"}', "truncated (no end of line after the last record)"),
                      ('{"file": "a.jpg"}\nnot json\n',
                       "Expecting value: line 1 column 1 (char 0)"),
                      ("[" * 100_000 + "\n", None)):
        part.write_text(text)
        with pytest.raises(CorruptPart) as e:
            read_part(part, 3)
        assert why is None or str(e.value) == why
    part.write_bytes(b'{"file": "\xff"}\n')
    with pytest.raises(CorruptPart, match="can't decode byte 0xff"):
        read_part(part, 3)


@pytest.mark.parametrize("key,name", [
    ("bundle", "bundle (model file or labels)"), ("allow_list", "--allow file"),
    ("taxonomy", "taxonomy.csv"), ("detections", "--detections file"),
    ("detection_threshold", "--detection_threshold"), ("inputs", "image inputs"),
    ("recursive", "--recursive"), ("top_k", "--top_k"), ("decode.strict", "--strict"),
    ("decode.max_pixels", "--max_pixels"), ("post.taxonomy_rollup.threshold",
                                            "--rollup_threshold"),
    ("post.allow_list", "--allow"), ("video.frame_every", "--frame_every"),
    ("video.max_frames", "--max_frames"), ("video.rule", "model.json input.video.rule"),
    ("preprocess.mean", "model.json preprocess.mean"),
    ("crop.margin", "model.json crop.margin"), ("labels_file", "labels_file")])
def test_journal_names_each_setting_as_the_user_sets_it(key: str, name: str) -> None:
    def nest(value: int) -> dict:
        out: dict = {"top": "same"}
        node = out
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
        return out

    assert meta_differences(nest(1), nest(2)) == [f"{name}: 1 -> 2"]


def test_journal_atomic_writes_never_follow_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / ".meta.json.tmp").symlink_to(victim)
    atomic_write_text(tmp_path / "meta.json", "{}")
    assert victim.read_text() == "mine" and (tmp_path / "meta.json").read_text() == "{}"
    assert not os.path.lexists(tmp_path / ".meta.json.tmp")
    assert stat.S_IMODE(os.stat(tmp_path / "meta.json").st_mode) == 0o666 & ~UMASK


def open_files() -> list[str]:
    """What this process's descriptors lead to (Linux /proc)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used
            pass
    return out


def test_one_run_per_output_and_no_stale_lock(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    lock = tmp_path / ".r.json.lock"
    lock.write_text("1234567890123\n")  # left by a run that was killed: nobody holds it
    with OutputLock(out):
        assert lock.read_text() == f"{os.getpid()}\n"
        with OutputLock(str(out)):  # re-entrant in one process (sort_into inside a run)
            pass
        assert lock.exists()
        probe = subprocess.run(
            [sys.executable, "-c", "import fcntl, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    print('busy')\n", str(lock)],
            capture_output=True, text=True, timeout=60)
        assert probe.stdout == "busy\n"  # still held after the inner exit
    assert not lock.exists()
    assert not [f for f in open_files() if f.startswith(str(lock))]  # its descriptor closed
    fresh = subprocess.run(  # a new process: its first lock closes only its own descriptor
        [sys.executable, "-c", "import os, sys\nsys.path.insert(0, sys.argv[1])\n"
         "from kerascls_edge.journal import OutputLock\n"
         "with OutputLock(sys.argv[2]):\n    pass\n"
         "os.fstat(0)\n"  # stdin still open
         "fds = [os.path.realpath(f'/proc/self/fd/{n}') for n in os.listdir('/proc/self/fd')]\n"
         "print(not [f for f in fds if '.other.json.lock' in f])",
         str(ROOT / "export"), str(tmp_path / "other.json")],
        input="", capture_output=True, text=True, timeout=60)
    assert fresh.stdout == "True\n", fresh.stderr
    with OutputLock(out):
        lock.unlink()  # removed by hand during the run: its end is still clean
    for held_as, shown in (("777\n", "777"), ("", "unknown")):
        other = _hold(lock, held_as)
        try:
            with pytest.raises(EdgeError) as e:
                with OutputLock(out):
                    pass
        finally:
            other.communicate("")
        assert str(e.value) == (f"another run (pid {shown}) is writing {out}; wait for it to "
                                "finish or stop it (its lock is .r.json.lock)")
    with OutputLock(tmp_path / "missing" / "r.json"):  # no folder: the run refuses later
        pass
    with OutputLock(tmp_path / "fresh.json"):  # others may read the pid, not write it
        mode = os.stat(tmp_path / ".fresh.json.lock").st_mode
        assert stat.S_IMODE(mode) == 0o644 & ~UMASK
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / ".r.json.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(EdgeError) as e:
        with OutputLock(tmp_path / "ro" / "r.json"):
            pass
    assert str(e.value) == (f"cannot lock {tmp_path / 'ro' / 'r.json'}: Too many levels of "
                            f"symbolic links: {tmp_path / 'ro' / '.r.json.lock'}")
    assert not (tmp_path / "elsewhere").exists()


# == outputs: what may be replaced ================================================================


def _our_results(d: Path) -> dict[str, Path]:
    """Files our writers made (JSON checked by MegaDetector's validator) and an older CSV."""
    recs = [{"file": "a.jpg", "detections": [{"category": "1", "conf": 0.75,
                                              "bbox": [0.0, 0.0, 1.0, 1.0],
                                              "classifications": [["0", 0.75]]}],
             "_k": [["0", 0.75]]}]
    header = {"info": info_block("m", {"default": 0.5}, "m.tflite"),
              "detection_categories": {"1": "animal"},
              "classification_categories": {"0": "deer"}}
    js, cs, old = d / "ours.json", d / "ours.csv", d / "old.csv"
    write_json(js, header, recs)
    write_csv(cs, recs, ["deer"])
    old.write_bytes(b"file,label,confidence,top_k,detection,bbox,datetime,sequence_id,"
                    b"sequence_label,sequence_confidence,failure,warnings\r\na.jpg,deer,0.75\r\n")
    return {"json": js, "csv": cs, "image csv": old}


def late_marker(past: int) -> str:
    """A JSON of ours whose runtime marker ends `past` bytes after the first 64 KiB: only the
    head of a result is read to recognise it (a 100,000-image file is not parsed)."""
    start, mid = '{\n"info": {"pad": "', '", "runtime": "kerascls-edge '
    pad = 65536 + past - len(start) - len(mid)
    return start + "x" * pad + mid + '1"}}\n'


def test_our_results_are_recognised_by_their_head(tmp_path: Path) -> None:
    ours = _our_results(tmp_path)
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    assert v.validate_batch_results(str(ours["json"]))["validation_results"]["errors"] == []
    for p in ours.values():
        assert is_our_result(p), p
        assert check_output(p, [], overwrite=False) == p
    text = ours["json"].read_text()
    others = {"megadetector.json": text.replace('"runtime": "kerascls-edge ', '"runtime": "md '),
              "notes.csv": "file,label\r\na.jpg,deer\r\n",
              "unix.csv": ours["csv"].read_text().replace("\r\n", "\n"),
              "late.json": late_marker(1),  # the marker ends 1 byte past the first 64 KiB
              "compact.json": text.replace("{\n", "{", 1)}
    for name, body in others.items():
        p = tmp_path / name
        p.write_text(body, newline="")
        assert not is_our_result(p), name
        with pytest.raises(EdgeError) as e:
            check_output(p, [], overwrite=False)
        assert str(e.value) == (f"refusing to replace {p}: it is not a kerascls-edge result "
                                "(pass --overwrite to replace it)")
        assert check_output(p, [], overwrite=True) == p
    edge = tmp_path / "edge.json"
    edge.write_text(late_marker(0))  # the marker's last byte is byte 65536
    assert is_our_result(edge)
    assert not is_our_result(tmp_path / "missing.json")


def test_outputs_that_would_destroy_something_are_refused(tmp_path: Path) -> None:
    img = photo(tmp_path / "a.jpg", 5)
    ours = _our_results(tmp_path)
    for name in ("out.JPG", "out.jpeg", "out.png", "out.tif", "out.webp"):
        with pytest.raises(EdgeError, match=f"to {tmp_path / name}: it has an image suffix "
                                            r"\(results are \.json or \.csv\)"):
            check_output(tmp_path / name, [], overwrite=True)
    with pytest.raises(EdgeError, match="it has a video suffix"):
        check_output(tmp_path / "out.MP4", [], overwrite=True)
    alias = tmp_path / "alias.json"
    os.link(ours["json"], alias)
    with pytest.raises(EdgeError, match=f"it is one of the inputs \\({alias}\\)"):
        check_output(ours["json"], [str(tmp_path / "gone.jpg"), str(img), str(alias)], True)
    assert check_output(ours["json"], [str(img), str(tmp_path / "gone")], False) == ours["json"]
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(EdgeError, match="dir.json: it is a directory"):
        check_output(tmp_path / "dir.json", [], True)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(EdgeError, match=r"not a regular file \(a device, FIFO or socket\)"):
        check_output(tmp_path / "fifo.json", [], True)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nothing.json")
    with pytest.raises(EdgeError, match="dangling.json: a symlink to nothing"):
        check_output(dangling, [], True)
    link = tmp_path / "link.json"
    link.symlink_to(ours["json"])
    # the link stays; its target is written
    assert check_output(link, [], False) == Path(os.path.realpath(ours["json"]))
    fifo_link = tmp_path / "fifo_link.json"
    fifo_link.symlink_to(tmp_path / "fifo.json")
    with pytest.raises(EdgeError, match="not a regular file"):
        check_output(fifo_link, [], True)
    new = tmp_path / "new.json"
    assert check_output(new, [str(img)], False) == new and not new.exists()
    with pytest.raises(EdgeError, match=r"cannot write .*r\.json: folder .*nowhere does not exist"):
        check_output(tmp_path / "nowhere" / "r.json", [], False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_an_output_in_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(EdgeError, match="folder .*ro is not writable"):
            check_output(ro / "r.json", [], False)
    finally:
        ro.chmod(0o755)


def test_the_bundle_files_a_run_reads(tmp_path: Path) -> None:
    b = tmp_path / "bundle"
    b.mkdir()
    for name in ("model.tflite", "model.json", "labels.txt", "species_labels.txt", "notes.txt",
                 "labels.csv"):
        (b / name).write_text("x")
    extra = tmp_path / "my_labels.txt"
    assert bundle_files(b / "model.tflite", str(extra)) == [
        str(b / "model.tflite"), str(b / "model.json"), str(b / "labels.txt"),
        str(b / "species_labels.txt"), str(extra)]
    assert bundle_files(b / "model.tflite", None)[-1] == str(b / "species_labels.txt")

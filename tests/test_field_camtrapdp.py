"""Issue 25, Camtrap DP side: a package never costs the user anything they had.

Case 2: package files that are not ours are refused (in one line) unless --overwrite, and what
the user filled in (deployments.csv, datapackage.json) is kept on a rerun. Case 4: a rerun that
fails half-way (a real EFBIG from RLIMIT_FSIZE, or a kill in the middle of the swap) leaves the
earlier package byte for byte. Case 7: the same image listed twice is refused, never two rows
with one mediaID. Case 12: --utc_offset minutes >= 60 and offsets beyond -12..+14 are refused;
no deployment is ever called '.', '..' or ''. Case 16: `convert --to camtrapdp` streams.

Packages are checked by frictionless against the standard's schemas (tests/camtrapdp_check.py),
expected values are worked by hand here, never by the writer's own code.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.cli import main  # noqa: E402
from tests.camtrapdp_check import STANDARD, rows, validate  # noqa: E402
from tests.memory import run_measured  # noqa: E402
from tests.pictures import render  # noqa: E402
from tests.shared_paths import CORAL_MODEL, SPECIESNET, coral_labels  # noqa: E402

needs_standard = pytest.mark.skipif(not (STANDARD / "camtrap-dp-profile.json").is_file(),
                                    reason="../shared/data/camtrapdp absent")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "export"), str(ROOT)])}
HEADER = {"info": {"format_version": "1.4", "detector": "md_v5a.0.0", "classifier": "field_v1",
                   "detector_metadata": {"typical_detection_threshold": 0.2}},
          "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
          "classification_categories": {"0": "Vulpes vulpes", "1": "Meles meles"}}


def run(argv: list[str]) -> tuple[int, str]:
    """The CLI in this process; (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def digests(folder: Path) -> dict:
    """Every file under `folder` (hidden ones and leftovers too) by its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def entry(file: str, day: int, hour: int, label: str = "0", conf: float = 0.9) -> dict:
    return {"file": file, "datetime": f"2024-06-{day:02d} {hour:02d}:15:00",
            "detections": [{"category": "1", "conf": conf, "bbox": [0.1, 0.2, 0.3, 0.4],
                            "classifications": [[label, 0.8]]}]}


def results(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({**HEADER, "images": entries}))
    return path


def photos(folder: Path, names: list[str]) -> None:
    """Real textured JPEGs at awkward sizes where the results say the images are."""
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        render((folder / name).parent, Path(name).name, 161 + i, 97 + 2 * i, seed=i, quality=85)


def site_results(tmp: Path, name: str, sites: dict[str, int], first_day: int = 1) -> Path:
    """Results (and their images) for `sites`: {site: number of images}."""
    entries = [entry(f"{site}/IMG_{k:04d}.JPG", first_day + k, 6 + k % 12, str(k % 2))
               for site, n in sites.items() for k in range(n)]
    photos(tmp / "cards", [e["file"] for e in entries])
    return results(tmp / "cards" / name, entries)


def convert(res: Path, pkg: Path, *flags: str) -> tuple[int, str]:
    return run(["convert", str(res), "--to", "camtrapdp", "-o", str(pkg), "--location",
                "51.05,3.72", *flags])


def one_line_error(rc: int, err: str) -> None:
    assert rc == 2 and err.startswith("kerascls-edge: error: ") and err.count("\n") == 1, err


def set_fields(path: Path, edits: dict[str, dict[str, str]]) -> None:
    """Edit deployments.csv as a user would: {deploymentID: {field: value}}."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, table = reader.fieldnames, list(reader)
    for row in table:
        row.update(edits.get(row["deploymentID"], {}))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(table)


# -- case 2: outputs are ours or untouched ------------------------------------------------


FOREIGN = {"deployments.csv": "deploymentID,latitude,longitude\ncam7,-1.29,36.82\n",
           "media.csv": "mediaID,filePath\nm1,cam7/0001.jpg\n",
           "observations.csv": "observationID,mediaID,scientificName\no1,m1,Panthera leo\n"}


@needs_standard
@pytest.mark.parametrize("present", [["deployments.csv"], list(FOREIGN)])
def test_foreign_tables_without_a_package_are_refused(tmp_path: Path, schema_server,
                                                      present: list[str]) -> None:
    res = site_results(tmp_path, "r.json", {"site_a": 3})
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in present:
        (pkg / name).write_text(FOREIGN[name])
    before = digests(pkg)
    rc, err = convert(res, pkg)
    one_line_error(rc, err)
    assert "refusing to replace" in err and present[0] in err and "--overwrite" in err
    assert digests(pkg) == before
    rc, err = convert(res, pkg, "--overwrite")
    assert rc == 0, err
    assert validate(pkg, schema_server) == []
    assert [d["deploymentID"] for d in rows(pkg, "deployments")] == ["site_a"]


def test_a_folder_named_like_a_table_is_never_replaced(tmp_path: Path) -> None:
    res = site_results(tmp_path, "r.json", {"site_a": 2})
    pkg = tmp_path / "pkg"
    (pkg / "media.csv").mkdir(parents=True)
    (pkg / "media.csv" / "photo.jpg").write_bytes(b"\xff\xd8 a user's file")
    before = digests(pkg)
    rc, err = convert(res, pkg, "--overwrite")
    one_line_error(rc, err)
    assert "media.csv there is a folder" in err and digests(pkg) == before


@needs_standard
def test_a_rerun_keeps_what_the_user_filled_in(tmp_path: Path, schema_server) -> None:
    pkg = tmp_path / "pkg"
    first = site_results(tmp_path, "june.json", {"site_a": 3})
    assert convert(first, pkg)[0] == 0
    assert rows(pkg, "deployments")[0]["deploymentEnd"] == "2024-06-03T08:15:00Z"
    mine = {"latitude": "-2.3333", "longitude": "34.8333", "setupBy": "Wanjiru Kamau",
            "cameraModel": "Reconyx HyperFire 2", "deploymentStart": "2024-05-31T10:00:00Z",
            "habitat": "riverine, acacia"}
    set_fields(pkg / "deployments.csv", {"site_a": mine})
    desc = json.loads((pkg / "datapackage.json").read_text())
    desc["title"] = "Mara river survey 2024"
    desc["licenses"] = [{"name": "CC-BY-4.0", "scope": "data"},
                        {"name": "CC-BY-NC-4.0", "scope": "media"}]
    (pkg / "datapackage.json").write_text(json.dumps(desc, indent=1))
    # the next card: more of site_a (later days) and a new site_b
    second = site_results(tmp_path, "july.json", {"site_a": 6, "site_b": 2})
    rc, err = convert(second, pkg)
    assert rc == 0, err
    assert "kept your edits" in err and "site_a.setupBy" in err
    assert validate(pkg, schema_server) == []
    deps = {d["deploymentID"]: d for d in rows(pkg, "deployments")}
    assert sorted(deps) == ["site_a", "site_b"]
    assert {k: deps["site_a"][k] for k in mine} == mine  # every edit kept
    assert deps["site_a"]["deploymentEnd"] == "2024-06-06T11:15:00Z"  # ours: refreshed
    assert (deps["site_b"]["latitude"], deps["site_b"]["setupBy"]) == ("51.05", "")
    desc = json.loads((pkg / "datapackage.json").read_text())
    assert desc["title"] == "Mara river survey 2024" and desc["licenses"][0]["name"] == "CC-BY-4.0"
    assert desc["temporal"]["end"] == "2024-06-06"  # what the data says: refreshed
    assert len(rows(pkg, "media")) == 8
    # a third run with nothing edited since: the kept values stay kept
    rc, err = convert(second, pkg)
    assert rc == 0 and "kept your edits" in err
    assert {k: rows(pkg, "deployments")[0][k] for k in mine} == mine


@needs_standard
def test_edited_tables_are_refused_unless_overwrite(tmp_path: Path, schema_server) -> None:
    pkg = tmp_path / "pkg"
    res = site_results(tmp_path, "r.json", {"site_a": 2, "site_b": 2})
    assert convert(res, pkg)[0] == 0
    set_fields(pkg / "deployments.csv", {"site_b": {"cameraModel": "Browning BTC-8E"}})
    with open(pkg / "observations.csv", "a", encoding="utf-8") as f:
        f.write(f"{rows(pkg, 'observations')[0]['observationID']}-x,site_a,,,2024-06-01T06:15:00Z,"
                "2024-06-01T06:15:00Z,media,animal,,Genetta genetta" + "," * 18 + "\n")
    before = digests(pkg)
    rc, err = convert(res, pkg)
    one_line_error(rc, err)
    assert "observations.csv" in err and "changed since kerascls-edge wrote" in err
    assert digests(pkg) == before
    rc, err = convert(res, pkg, "--overwrite")
    assert rc == 0, err
    assert validate(pkg, schema_server) == []
    assert "Genetta genetta" not in (pkg / "observations.csv").read_text()
    deps = {d["deploymentID"]: d for d in rows(pkg, "deployments")}
    assert deps["site_b"]["cameraModel"] == "Browning BTC-8E"  # deployments edits still kept


@needs_standard
def test_an_unrecorded_package_of_ours_is_refused(tmp_path: Path, schema_server) -> None:
    """A package from before the record (or with it deleted): edits cannot be told apart."""
    pkg = tmp_path / "pkg"
    res = site_results(tmp_path, "r.json", {"site_a": 2})
    assert convert(res, pkg)[0] == 0
    desc = json.loads((pkg / "datapackage.json").read_text())
    del desc["kerascls"]
    (pkg / "datapackage.json").write_text(json.dumps(desc))
    set_fields(pkg / "deployments.csv", {"site_a": {"setupBy": "Ana"}})
    before = digests(pkg)
    rc, err = convert(res, pkg)
    one_line_error(rc, err)
    assert "older kerascls-edge" in err and digests(pkg) == before


@needs_standard
@pytest.mark.skipif(not (CORAL_MODEL.is_file() and SPECIESNET.is_dir()),
                    reason="../shared/data (Coral model, frames) absent")
def test_predict_refuses_foreign_tables_and_keeps_edits(tmp_path: Path, schema_server) -> None:
    cards = tmp_path / "cards"
    (cards / "site_a").mkdir(parents=True)
    for name in ("ocelot.jpg", "blank.jpg"):
        (cards / "site_a" / name).write_bytes((SPECIESNET / name).read_bytes())
    argv = ["predict", str(CORAL_MODEL), str(cards), "--recursive", "--labels",
            str(coral_labels(tmp_path / "labels.txt")), "--format", "camtrapdp", "-o",
            str(cards), "--threads", "1", "--progress_every", "-1", "--location", "1,2"]
    (cards / "deployments.csv").write_text(FOREIGN["deployments.csv"])
    before = digests(cards)
    rc, err = run(argv)
    one_line_error(rc, err)
    assert digests(cards) == before  # refused before any image was classified
    (cards / "deployments.csv").unlink()
    assert run(argv)[0] == 0
    set_fields(cards / "deployments.csv", {"site_a": {"setupBy": "Kofi", "latitude": "5.6"}})
    rc, err = run(argv)
    assert rc == 0, err
    assert validate(cards, schema_server) == []
    dep = rows(cards, "deployments")[0]
    assert (dep["setupBy"], dep["latitude"], dep["longitude"]) == ("Kofi", "5.6", "2.0")


# -- case 4: the package is written as a unit -----------------------------------------------


FSIZE_RUN = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from kerascls_edge.cli import main
sys.exit(main(sys.argv[2:]))
"""

KILL_IN_SWAP = """
import os, signal, sys
real, calls = os.replace, []
def replace(src, dst, *a, **k):
    if str(dst).startswith(sys.argv[1]):
        calls.append(dst)
        if len(calls) == 3:  # deployments.csv swapped in, media.csv not yet
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
os.replace = replace
from kerascls_edge.cli import main
sys.exit(main(sys.argv[2:]))
"""


def good_package(tmp_path: Path) -> tuple[Path, Path, dict]:
    """SITE_A's package, and results for SITE_B large enough to fail on a small disk."""
    pkg = tmp_path / "pkg"
    assert convert(site_results(tmp_path, "a.json", {"SITE_A": 3}), pkg)[0] == 0
    entries = [entry(f"SITE_B/IMG_{k:05d}.JPG", 1 + k % 28, k % 24) for k in range(1500)]
    return pkg, results(tmp_path / "b.json", entries), digests(pkg)


@needs_standard
def test_disk_full_half_way_leaves_the_old_package(tmp_path: Path, schema_server) -> None:
    pkg, site_b, before = good_package(tmp_path)
    assert max((pkg / n).stat().st_size for n in before) < 40_000
    proc = subprocess.run([sys.executable, "-c", FSIZE_RUN, "40000", "convert", str(site_b),
                           "--to", "camtrapdp", "-o", str(pkg), "--location", "1,2",
                           "--image_dir", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "File too large" in proc.stderr and proc.stderr.count("\n") == 1
    assert digests(pkg) == before  # byte for byte, and no .tmp or staging left
    assert validate(pkg, schema_server) == []
    assert {d["deploymentID"] for d in rows(pkg, "deployments")} == {"SITE_A"}


@needs_standard
def test_a_kill_in_the_swap_is_rolled_back(tmp_path: Path, schema_server) -> None:
    from kerascls_edge import packagedir

    pkg, site_b, before = good_package(tmp_path)
    proc = subprocess.run([sys.executable, "-c", KILL_IN_SWAP, str(pkg), "convert", str(site_b),
                           "--to", "camtrapdp", "-o", str(pkg), "--location", "1,2",
                           "--image_dir", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == -9
    assert digests(pkg) != before  # killed with the tables disagreeing
    packagedir.recover(pkg)  # what the next run does first
    after = digests(pkg)
    after.pop(".datapackage.json.lock")  # a killed run's lock file (flock died with it)
    assert after == before
    assert validate(pkg, schema_server) == []
    rc, err = run(["convert", str(site_b), "--to", "camtrapdp", "-o", str(pkg), "--location",
                   "1,2", "--image_dir", str(tmp_path)])
    assert rc == 0, err
    assert validate(pkg, schema_server) == []
    assert {d["deploymentID"] for d in rows(pkg, "deployments")} == {"SITE_B"}
    assert sorted(p.name for p in pkg.iterdir()) == sorted(before)


HOLD_LOCK = """
import sys
from kerascls_edge.journal import OutputLock
with OutputLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_of_the_same_package_refuses(tmp_path: Path) -> None:
    pkg, site_b, before = good_package(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(pkg / "datapackage.json")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, err = convert(site_b, pkg, "--image_dir", str(tmp_path))
        one_line_error(rc, err)
        assert f"pid {holder.pid}" in err
    finally:
        holder.communicate("", timeout=60)
    assert digests(pkg) == before


# -- case 7: one row per image ----------------------------------------------------------------


@pytest.mark.parametrize("second", ["site_a/IMG_0001.JPG", "./site_a/IMG_0001.JPG",
                                    "site_a/x/../IMG_0001.JPG"])
def test_the_same_image_twice_is_refused(tmp_path: Path, second: str) -> None:
    pkg = tmp_path / "pkg"
    assert convert(site_results(tmp_path, "ok.json", {"site_a": 3}), pkg)[0] == 0
    before = digests(pkg)
    entries = [entry(f"site_a/IMG_{k:04d}.JPG", 1 + k, 8) for k in range(3)]
    entries.append(entry(second, 9, 9, label="1"))
    rc, err = convert(results(tmp_path / "dup.json", entries), pkg)
    one_line_error(rc, err)
    assert "site_a/IMG_0001.JPG" in err and "more than once" in err
    assert digests(pkg) == before


@pytest.mark.parametrize("bad", [{"conf": 1.5}, {"conf": "0.9"}, {"bbox": [0, 0, 1]},
                                 {"classifications": [["7", 0.9]]},
                                 {"classifications": [["0", {"p": 1}]]}])
def test_a_malformed_entry_is_one_line(tmp_path: Path, bad: dict) -> None:
    e = entry("site_a/IMG_0001.JPG", 1, 8)
    e["detections"][0].update(bad)
    rc, err = convert(results(tmp_path / "bad.json", [e]), tmp_path / "pkg")
    one_line_error(rc, err)
    assert "images[0]" in err and "IMG_0001.JPG" in err
    assert not (tmp_path / "pkg").exists()


# -- case 12: clocks and deployment names ---------------------------------------------------


@pytest.mark.parametrize("offset", ["+12:75", "-03:60", "+14:30", "-12:30", "+15:00", "-1300"])
def test_impossible_utc_offsets_are_refused(tmp_path: Path, offset: str) -> None:
    res = results(tmp_path / "r.json", [entry("a/IMG_1.JPG", 1, 8)])
    rc, err = run(["convert", str(res), "--to", "camtrapdp", "-o", str(tmp_path / "p"),
                   f"--utc_offset={offset}"])
    one_line_error(rc, err)
    assert "--utc_offset" in err and not (tmp_path / "p").exists()


@pytest.mark.parametrize("offset,written", [("+05:45", "+05:45"), ("-1200", "-12:00"),
                                            ("+14:00", "+14:00"), ("-09:30", "-09:30")])
def test_real_utc_offsets_are_written(tmp_path: Path, offset: str, written: str) -> None:
    res = results(tmp_path / "r.json", [entry("a/IMG_1.JPG", 1, 8)])
    rc, err = run(["convert", str(res), "--to", "camtrapdp", "-o", str(tmp_path / "p"),
                   f"--utc_offset={offset}", "--location", "1,2"])
    assert rc == 0, err
    assert rows(tmp_path / "p", "media")[0]["timestamp"] == f"2024-06-01T08:15:00{written}"


@needs_standard
@pytest.mark.parametrize("image_dir,cwd", [(".", "site_x"), ("./", "site_x"),
                                           ("..", "site_x/inner"), ("../", "site_x/inner")])
def test_deployments_are_never_dot_or_dotdot(tmp_path: Path, schema_server, monkeypatch,
                                             image_dir: str, cwd: str) -> None:
    """Relative image folders and './' / 'a/../' file paths: the folder's own name."""
    site = tmp_path / "site_x"
    names = ["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0003.JPG"]
    photos(site, names)
    (site / "inner").mkdir()
    res = results(tmp_path / "r.json", [entry("./IMG_0001.JPG", 1, 8),
                                        entry("IMG_0002.JPG", 2, 8),
                                        entry("inner/../IMG_0003.JPG", 3, 8)])
    monkeypatch.chdir(tmp_path / cwd)
    pkg = tmp_path / "pkg"
    rc, err = convert(res, pkg, "--image_dir", image_dir)
    assert rc == 0, err
    assert [d["deploymentID"] for d in rows(pkg, "deployments")] == ["site_x"]
    assert {m["deploymentID"] for m in rows(pkg, "media")} == {"site_x"}
    assert validate(pkg, schema_server) == []


@pytest.mark.parametrize("name", ["", ".", "..", " "])
def test_a_deployment_flag_naming_no_deployment_is_refused(tmp_path: Path, name: str) -> None:
    res = results(tmp_path / "r.json", [entry("a/IMG_1.JPG", 1, 8)])
    rc, err = convert(res, tmp_path / "p", f"--deployment={name}")
    one_line_error(rc, err)
    assert "--deployment" in err


# -- case 16: streaming ---------------------------------------------------------------------


def big_results(path: Path, n: int) -> Path:
    """A MegaDetector file of `n` entries written entry by entry (30 sites, boxes, blanks)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(HEADER)[:-1] + ', "images": [')
        for i in range(n):
            dets = [] if i % 5 == 0 else [
                {"category": "1" if i % 5 < 4 else "2", "conf": 0.3 + (i % 70) / 100,
                 "bbox": [0.1, 0.2, 0.3, 0.25], "classifications": [[str(i % 2), 0.8]]}]
            f.write(("," if i else "") + json.dumps(
                {"file": f"site_{i % 30:02d}/DCIM/IMG_{i:07d}.JPG",
                 "datetime": f"2024-05-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00",
                 "detections": dets}))
        f.write("]}\n")
    return path


def peak_mb(res: Path, pkg: Path) -> float:
    proc, peak = run_measured([sys.executable, "-m", "kerascls_edge", "convert", str(res), "--to",
                               "camtrapdp", "-o", str(pkg), "--location", "1,2"], env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return peak


def test_camtrapdp_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """25,000 more images cost (almost) nothing: 8 bytes each for the duplicate check.
    (Holding the rows, as before, cost ~4 KB an image: 100 MB here.)"""
    small = peak_mb(big_results(tmp_path / "s.json", 5_000), tmp_path / "s")
    large = peak_mb(big_results(tmp_path / "l.json", 30_000), tmp_path / "l")
    assert large - small < 20, (small, large)
    assert len(rows(tmp_path / "l", "media")) == 30_000


@pytest.mark.slow
def test_a_million_image_package_fits_a_pi(tmp_path: Path) -> None:
    peak = peak_mb(big_results(tmp_path / "m.json", 1_000_000), tmp_path / "pkg")
    assert peak <= 300, peak
    with open(tmp_path / "pkg" / "media.csv", encoding="utf-8") as f:
        assert sum(1 for _ in f) == 1_000_001


# -- the property: whatever the results and whatever the folder holds ------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_part = st.text(alphabet=list("aZ09 _-.~é漢%,\"'#"), min_size=1, max_size=6)
_when = st.datetimes(min_value=__import__("datetime").datetime(1990, 1, 1),
                     max_value=__import__("datetime").datetime(2040, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%d %H:%M:%S"))
_det = st.fixed_dictionaries({
    "category": st.sampled_from(["1", "2", "3"]), "conf": st.floats(0, 1),
    "bbox": st.lists(st.floats(-0.5, 1.5), min_size=4, max_size=4),
    "classifications": st.lists(st.tuples(st.sampled_from(["0", "1"]), st.floats(0, 1))
                                .map(list), max_size=2)})
_entry = st.one_of(
    st.fixed_dictionaries({"file": st.lists(_part, min_size=1, max_size=3).map("/".join),
                           "datetime": _when, "detections": st.lists(_det, max_size=3)}),
    st.fixed_dictionaries({"file": st.lists(_part, min_size=1, max_size=3).map("/".join),
                           "datetime": _when, "failure": st.just("unreadable"),
                           "detections": st.none()}))
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_edits = st.fixed_dictionaries({"setupBy": _text, "cameraModel": _text, "habitat": _text,
                                "latitude": st.floats(-90, 90).map(lambda v: f"{v:.5f}"),
                                "longitude": st.floats(-180, 180).map(lambda v: f"{v:.5f}")})
FOLDERS = ["empty", "foreign", "ours", "ours, deployments edited", "ours, media edited",
           "ours, datapackage edited", "ours, unrecorded"]


def _folder(tmp: Path, kind: str, edits: dict) -> Path:
    """The package folder as a user left it (always with a file of theirs beside it)."""
    pkg = tmp / "pkg"
    pkg.mkdir()
    (pkg / "notes.txt").write_text("batteries changed 12 June\n")
    if kind == "foreign":
        for name, text in FOREIGN.items():
            (pkg / name).write_text(text)
    if not kind.startswith("ours"):
        return pkg
    first = results(tmp / "first.json", [entry("site_a/IMG_1.JPG", 1, 6),
                                         entry("site_b/IMG_1.JPG", 2, 7)])
    assert convert(first, pkg)[0] == 0
    if kind.endswith("deployments edited"):
        set_fields(pkg / "deployments.csv", {"site_a": edits})
    elif kind.endswith("media edited"):
        with open(pkg / "media.csv", "a", encoding="utf-8") as f:
            f.write("m-extra,site_a,,2024-06-01T06:15:00Z,x.jpg,false,,image/jpeg,,,\n")
    elif kind.endswith("datapackage edited") or kind.endswith("unrecorded"):
        desc = json.loads((pkg / "datapackage.json").read_text())
        desc["title"] = "our survey"
        desc.pop("kerascls") if kind.endswith("unrecorded") else None
        (pkg / "datapackage.json").write_text(json.dumps(desc))
    return pkg


@needs_standard
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(entries=st.lists(_entry, min_size=1, max_size=8), kind=st.sampled_from(FOLDERS),
       edits=_edits, overwrite=st.booleans())
def test_property_nothing_of_the_users_is_lost(schema_server, entries: list, kind: str,
                                              edits: dict, overwrite: bool) -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pkg = _folder(tmp, kind, edits)
        before = digests(pkg)
        res = results(tmp / "r.json", entries)
        rc, err = convert(res, pkg, *(["--overwrite"] if overwrite else []))
        hypothesis.event(f"{kind}, overwrite={overwrite}: exit {rc}")
        leftovers = [p.name for p in pkg.iterdir() if p.name.startswith(".camtrapdp-")]
        assert not leftovers
        assert (pkg / "notes.txt").read_text() == "batteries changed 12 June\n"
        if rc != 0:
            one_line_error(rc, err)
            assert digests(pkg) == before
            return
        assert validate(pkg, schema_server) == []
        protected = kind in ("foreign", "ours, media edited", "ours, unrecorded")
        assert overwrite or not protected, err
        if kind == "ours, deployments edited":
            site_a = next(r for r in rows(pkg, "deployments") if r["deploymentID"] == "site_a")
            assert {k: site_a[k] for k in edits} == edits
        if kind == "ours, datapackage edited":
            assert json.loads((pkg / "datapackage.json").read_text())["title"] == "our survey"


def test_a_failure_entry_whose_file_is_gone_is_left_out_not_fatal(tmp_path: Path,
                                                                  schema_server) -> None:
    """A card reformatted since the run: the unreadable file's failure entry has no capture time
    to give. The package is still written (the other images kept), with a warning; an entry
    that is not a failure and whose image is missing is still refused (a wrong --image_dir)."""
    res = site_results(tmp_path, "results.json", {"site_a": 2})
    md = json.loads(res.read_text())
    md["images"].append({"file": "site_a/IMG_0099.JPG", "failure": "Failure image access"})
    res.write_text(json.dumps(md))
    rc, err = convert(res, tmp_path / "cards")
    assert rc == 0, err
    assert "1 failure entry for files that no longer exist left out" in err
    media = rows(tmp_path / "cards", "media")
    assert sorted(r["fileName"] for r in media) == ["IMG_0000.JPG", "IMG_0001.JPG"]
    assert validate(tmp_path / "cards", schema_server) == []
    del md["images"][-1]["failure"]
    md["images"][-1]["detections"] = []
    res.write_text(json.dumps(md))
    rc, err = convert(res, tmp_path / "cards", "--overwrite")
    one_line_error(rc, err)
    assert "IMG_0099.JPG" in err

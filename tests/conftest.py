"""Shared test fixtures and marks: where the shared data lives, a CLI runner, and the
Fashion-MNIST Debian package check (test modules import these from here, never from
each other)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kerascls.data import fashion_mnist as fm
from tests import camtrapdp_check

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

HAVE_DEBIAN = all((fm.DEBIAN_DIR / f).exists() for pair in fm._FILES.values() for f in pair)
needs_debian = pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Debian package "
                                  f"dataset-fashion-mnist not installed ({fm.DEBIAN_DIR})")


# Modules that use one machine-wide resource run on one worker, one test at a time: local
# Ray clusters (a driver's own ``ray.init()``, a ``ray start --head``) share default ports.
SHARED_RESOURCE_GROUPS = {"tests.test_predict_keras": "ray", "tests.test_predict_ray": "ray",
                          "tests.test_video_keras_predict": "ray"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (setup.cfg): a test that uses a module-scoped
    fixture (a trained run, rendered photos) goes to the worker that holds its module's other
    such tests, so the fixture is built once; a module in SHARED_RESOURCE_GROUPS goes whole to
    its group's worker; every other test goes to whichever worker is free.
    """
    for item in items:
        group = SHARED_RESOURCE_GROUPS.get(item.module.__name__)
        info = getattr(item, "_fixtureinfo", None)
        scopes = {fd.scope for fds in (info.name2fixturedefs.values() if info else ())
                  for fd in fds}
        if group is None and scopes & {"module", "class", "package"}:
            group = item.module.__name__
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def smallest_of_each_family() -> set[str]:
    """One registered name per family (the fewest reference parameters): the names a default
    run builds so that a new family is covered without building every variant."""
    from kerascls.models import list_models, model_info
    best: dict[str, str] = {}
    for name in list_models():
        info = model_info(name)
        if info.family not in best or (info.ref_params or 0) < (
                model_info(best[info.family]).ref_params or 0):
            best[info.family] = name
    return set(best.values())


GIANT_PARAMS = 100_000_000  # above it (VGG, ConvNeXt large and up, EffNetV2-L): `giant`


def giant(name: str) -> list:
    """``[giant]`` for an architecture over GIANT_PARAMS reference parameters: training it
    takes 16-22 bytes a parameter (weights, gradients, Adam; convnextv2_huge: 14.5 GB for one
    step at 32×32), so CI runs such tests alone, one process, and never beside a local Ray
    cluster or another giant (two overlapping exhausted a 24 GB machine)."""
    from kerascls.models import model_info
    return [pytest.mark.giant] if (model_info(name).ref_params or 0) > GIANT_PARAMS else []


def arch_params(names, default, extra_marks=lambda name: ()) -> list:
    """Architecture names as pytest params: those in ``default`` run by default, every other
    one is marked ``slow`` (CI runs it), plus ``extra_marks(name)`` (e.g. ``giant``)."""
    return [n if n in default else pytest.param(n, marks=[pytest.mark.slow, *extra_marks(n)])
            for n in names]


def run_cli(*args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``kerascls ARGS`` in a fresh process (conversions leak memory in-process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kerascls.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode:
        raise AssertionError(f"kerascls {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def free_keras_memory():
    """Clear Keras' global state after a test that builds models (modules opt in with
    ``pytestmark = pytest.mark.usefixtures("free_keras_memory")``)."""
    yield
    import keras
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory):
    """The standard's files served on 127.0.0.1, with the offline-relaxed profile."""
    frictionless = pytest.importorskip("frictionless")
    if not (camtrapdp_check.STANDARD / "camtrap-dp-profile.json").is_file():
        pytest.skip(f"{camtrapdp_check.STANDARD} absent (../shared/data)")
    root = tmp_path_factory.mktemp("schemas")
    for f in camtrapdp_check.STANDARD.glob("*.json"):
        shutil.copy(f, root / f.name)
    handler = functools.partial(camtrapdp_check.QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    text = (camtrapdp_check.STANDARD / "camtrap-dp-profile.json").read_text()
    text = text.replace('"pattern": "1\\\\.0\\\\.2"', f'"pattern": "{url.replace(".", "[.]")}"')
    text = text.replace("https://specs.frictionlessdata.io/schemas/data-package.json",
                        f"{url}/frictionless-data-package.json")
    text = text.replace("http://json.schemastore.org/geojson.json", f"{url}/geojson.json")
    (root / "relaxed-profile.json").write_text(text)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url, frictionless
    server.shutdown()

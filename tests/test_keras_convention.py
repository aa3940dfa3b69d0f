"""Keras' convention for custom objects: after ``import kerascls``, plain
``keras.saving.load_model`` loads a kerascls model, and ``import kerascls`` stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny small_cnn with custom layers (ImagePreprocessing, GroupNorm, SqueezeExcite),
    saved as .keras, and its outputs on a fixed textured batch."""
    import keras

    from kerascls.models import create_model
    model = create_model("small_cnn", 3, (16, 16, 3), widths=(4, 8), norm="group",
                         attention="se")
    used = {type(layer).__name__ for layer in model.layers}
    assert {"ImagePreprocessing", "GroupNorm", "SqueezeExcite"} <= used, used
    folder = tmp_path_factory.mktemp("keras_convention")
    path = folder / "model.keras"
    model.save(path)
    yy, xx = np.mgrid[0:16, 0:16]
    images = np.stack([(np.sin(xx * (k + 1) / 3.0) * np.cos(yy / (k + 2)) + 1) * 127.5
                       for k in range(3)], -1)[None].repeat(2, 0).astype(np.float32)
    images[1] = images[1, ::-1]
    np.save(folder / "images.npy", images)
    np.save(folder / "expected.npy", model.predict(images, verbose=0))
    keras.backend.clear_session()
    return path, folder


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


@pytest.mark.parametrize("imports", [
    "import kerascls, keras",
    # other orders: Keras first, or a kerascls module whose own import loads Keras
    *(pytest.param(order, marks=pytest.mark.slow) for order in (
        "import keras, kerascls", "import kerascls.layers, keras",
        "import keras, kerascls.models"))])
def test_plain_keras_load_model_after_import_kerascls(saved_model, imports):
    path, folder = saved_model
    code = (f"{imports}; import numpy as np, sys\n"
            f"m = keras.saving.load_model({str(path)!r})\n"
            f"x = np.load({str(folder / 'images.npy')!r})\n"
            f"y = m.predict(x, verbose=0)\n"
            f"print(float(np.max(np.abs(y - np.load({str(folder / 'expected.npy')!r})))))")
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5


@pytest.mark.slow
def test_without_kerascls_keras_cannot_find_the_layers(saved_model):
    """The reason for the registration: Keras alone does not know our classes."""
    path, _ = saved_model
    proc = _fresh(f"import keras; keras.saving.load_model({str(path)!r})")
    assert proc.returncode != 0
    assert "ImagePreprocessing" in proc.stderr


def test_import_kerascls_imports_neither_keras_nor_tensorflow():
    proc = _fresh("import json, sys, kerascls, kerascls.cli, kerascls.config\n"
                  "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
                  "('keras', 'tensorflow', 'numpy'))))")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []

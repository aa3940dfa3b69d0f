"""``kerascls predict --devices``: the Keras model on several replicas, one row per image.

Two logical CPUs (``cpu:2``; set up before TensorFlow runs, so in a fresh process) stand in
for two GPUs. Keras' ``predict_on_batch`` under a MirroredStrategy gives every replica the
whole batch, and a replica handed no rows fails, so batches of 3 and 1 images on 2 replicas
are what must come out right: the split's rows equal the bare model's on one device.
The CLI-level check (a trained run, same files and probabilities as one device) is in
test_predict_keras.py, which holds the trained-run fixture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import ROOT

SPLIT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    # two logical CPUs before any op (a program that set up its devices itself)
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from PIL import Image
    from kerascls.keras_classifier import KerasClassifier
    from tests.scenes import SIZES, texture

    path = sys.argv[1]
    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    pix = np.stack([np.asarray(Image.fromarray(texture(c, w, h, i)).resize((24, 24)))
                    for i, ((w, h), c) in enumerate(zip(SIZES + SIZES[:1],
                                                        ["rings", "stripes_fine"] * 4))])
    clf = KerasClassifier(path, batch_size=4, devices="cpu:2")
    out = {"devices": clf.devices, "rows": {}}
    for n in (7, 3, 1):  # 7 = 4 + 3: a partial last batch; 3 and 1: odd on 2 replicas
        out["rows"][n] = clf.predict_array(pix[:n]).tolist()
    ref = keras.saving.load_model(path)  # the bare model, default device, outside any scope
    out["ref"] = np.asarray(ref.predict_on_batch(pix.astype("float32"))).tolist()
    print(json.dumps(out))
""")


@pytest.mark.slow  # a fresh TensorFlow process, ~9 s on a busy 2-core machine
def test_two_replicas_split_odd_batches(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", SPLIT, str(tmp_path / "m.keras")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == ["/cpu:0", "/cpu:1"]
    ref = np.asarray(out["ref"])
    assert ref.shape == (7, 3)
    for n, rows in out["rows"].items():
        rows = np.asarray(rows)
        assert rows.shape == (int(n), 3), n  # one row per image, not one per replica
        assert np.abs(rows - ref[:int(n)]).max() <= 1e-5, n  # measured: 0
        assert (rows.argmax(1) == ref[:int(n)].argmax(1)).all()


def test_devices_checked_before_loading(tmp_path):
    """A bad spec, or --devices where nothing would use it, is a UserError (one line) before
    any model loads."""
    from kerascls.errors import UserError, is_user_error
    from kerascls.predict import backend_for
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cases = ((tmp_path / "m.keras", "cpu:x", "local", "is not a number"),
             (tmp_path / "m.keras", "tpu", "local", "use gpu, gpu:0,1 or cpu:N"),
             (bundle, "cpu:2", "local", "only for a Keras model"),
             (tmp_path / "m.keras", "gpu", "ray", "not with --engine ray"))
    for model, spec, engine, says in cases:
        fl = SimpleNamespace(model=str(model), devices=spec, engine=engine, batch_size=8)
        with pytest.raises(UserError, match=re.escape(says)) as e:
            backend_for(fl)
        assert is_user_error(e.value) and "\n" not in str(e.value)
    fl = SimpleNamespace(model=str(tmp_path / "m.keras"), devices="cpu:2", engine="local",
                         batch_size=8)
    assert backend_for(fl).devices == "cpu:2"  # the model loads later, in the classifier


@pytest.mark.slow  # two CLI processes, ~8 s each on a busy 2-core machine
def test_bad_devices_are_one_line(tmp_path, cli):
    (tmp_path / "a.jpg").write_bytes(b"")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for model, spec, says in ((tmp_path / "m.keras", "cpu:x", "is not a number"),
                              (bundle, "cpu:2", "only for a Keras model")):
        proc = cli("predict", f"--model={model}", f"--devices={spec}", str(tmp_path / "a.jpg"),
                   f"--output={tmp_path / 'o.json'}", check=False)
        assert proc.returncode != 0
        err = proc.stderr.strip()
        assert err.count("\n") == 0 and err.startswith("kerascls: error:"), err
        assert says in err and "--devices" in err, err
    assert not (tmp_path / "o.json").exists()

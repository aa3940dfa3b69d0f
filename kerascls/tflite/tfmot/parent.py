"""The bridge's parent: write the spec, run the child in a fresh interpreter, read its result.

Never imports tf_keras or tfmot (they would switch this process to legacy Keras).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kerascls.tflite.tfmot.spec import BridgeError, BridgeSpec

CHILD = "kerascls.tflite.tfmot.child"
ERROR_FILE = "error.txt"  # the child's one-line reason for a failure it foresaw
LOG_FILE = "child.log"


def finetune_tflite(model_path: str | Path, mode: str, *, timeout: float | None = None,
                    **options) -> tuple[bytes, dict]:
    """Fine-tune (QAT or pruning) in a subprocess; returns int8 .tflite bytes and facts.

    ``options`` are :class:`BridgeSpec` fields (``epochs``, ``data``, ``sparsity`` …); the
    facts (``mode``, ``epochs``, measured ``sparsity`` …) go into report.json.
    """
    task, logits = head_of(model_path)
    with tempfile.TemporaryDirectory(prefix="kerascls-tfmot-") as tmp:
        spec = BridgeSpec(model=str(model_path), mode=mode, out=tmp, task=task, logits=logits,
                          **options)
        run_child(spec, timeout)
        out = Path(tmp)
        return (out / "model.tflite").read_bytes(), json.loads((out / "bridge.json").read_text())


def head_of(model_path: str | Path) -> tuple[str, bool]:
    """(task, logits) from the run's config.json next to the model (defaults without one)."""
    from kerascls.config import TrainConfig
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").exists():
        return "multiclass", False
    args = TrainConfig.load(folder).model_args or {}
    return str(args.get("task", "multiclass")), bool(args.get("logits", False))


def run_child(spec: BridgeSpec, timeout: float | None = None) -> None:
    """Run the child on ``spec`` (its output goes to ``spec.out/child.log``).

    A failure raises one :class:`BridgeError` line: the child's own reason, or the last
    line of its traceback, and where the full log was kept.
    """
    out = Path(spec.out)
    spec_file = spec.write(out / "spec.json")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_USE_LEGACY_KERAS", None)  # the child sets it itself, after loading Keras 3
    with open(out / LOG_FILE, "w") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", CHILD, str(spec_file)], stdout=log,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BridgeError(f"{spec.mode} did not finish within {timeout:g} s "
                              f"(child log: {keep_log(out)})") from None
    if proc.returncode:
        raise BridgeError(f"{failure_reason(out, proc.returncode)} (child log: {keep_log(out)})")


def failure_reason(out: Path, returncode: int) -> str:
    """The child's error line, or the last line of its log for a crash."""
    error = out / ERROR_FILE
    if error.exists():
        return error.read_text().strip()
    lines = [ln for ln in (out / LOG_FILE).read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "no output"
    return f"the tfmot child failed (exit {returncode}): {last[:300]}"


def keep_log(out: Path) -> Path:
    """Copy the child's log out of the folder about to be deleted; returns the copy."""
    fd, name = tempfile.mkstemp(prefix="kerascls-tfmot-", suffix=".log")
    os.close(fd)
    shutil.copyfile(out / LOG_FILE, name)
    return Path(name)

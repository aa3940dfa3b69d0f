"""The one document the bridge's parent writes and its child reads (no argparse twice)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from kerascls.errors import UserError

MODES = ("qat", "prune")
TASKS = ("multiclass", "multilabel", "binary")


class BridgeError(UserError, RuntimeError):
    """QAT or pruning could not run; the message names the reason (the layer, the log)."""


@dataclass(frozen=True)
class BridgeSpec:
    """Everything the child needs; defaults are the export's.

    ``out`` is the folder the child writes ``model.tflite`` and ``bridge.json`` into;
    ``task``/``logits`` come from the run's ``config.json`` (its ``model_args``).
    """

    model: str
    mode: str
    data: str
    out: str
    epochs: int = 1
    sparsity: float = 0.0
    samples: int = 5000
    calibration_samples: int = 500
    batch_size: int = 64
    learning_rate: float | None = None  # None: 1e-4 for QAT, 5e-4 for pruning
    seed: int = 0
    task: str = "multiclass"
    logits: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BridgeError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.task not in TASKS:
            raise BridgeError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.mode == "prune" and not 0.0 < self.sparsity < 1.0:
            raise BridgeError(f"pruning needs a sparsity in (0, 1), got {self.sparsity}")
        for name in ("epochs", "samples", "calibration_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise BridgeError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def rate(self) -> float:
        """The fine-tuning learning rate (the mode's default when none was given)."""
        return self.learning_rate or (1e-4 if self.mode == "qat" else 5e-4)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "BridgeSpec":
        """Parse a spec; unknown or missing keys are one-line errors, not TypeErrors."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise BridgeError(f"bridge spec is not JSON: {e}") from e
        if not isinstance(raw, dict):
            raise BridgeError("bridge spec must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        missing = sorted(n for n, f in fields.items() if n not in raw
                         and f.default is dataclasses.MISSING)
        if unknown or missing:
            raise BridgeError(f"bridge spec: unknown keys {unknown}, missing keys {missing}")
        return cls(**raw)

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path

"""The old name of the tfmot bridge, kept for existing imports: see :mod:`kerascls.tflite.tfmot`
(``parent`` launches, ``child`` runs under tf_keras, ``rebuild`` maps the layers, ``spec``
is the JSON document between them)."""

from kerascls.tflite.tfmot import MODES, BridgeError, BridgeSpec, finetune_tflite
from kerascls.tflite.tfmot.rebuild import rebuild

__all__ = ["MODES", "BridgeError", "BridgeSpec", "finetune_tflite", "rebuild"]

"""QAT and pruning with tensorflow-model-optimization, kept out of the Keras 3 process.

tfmot 0.8 accepts only tf_keras (Keras 2) models, and importing it sets
``TF_USE_LEGACY_KERAS=1`` for the whole process (tensorflow/model-optimization#1119,
#1270). So the bridge has two halves that share one JSON document, :class:`BridgeSpec`:

- :mod:`.parent` (what ``export`` calls, never imports tf_keras or tfmot): fills a spec,
  runs ``python -m kerascls.tflite.tfmot.child SPEC.json`` and reads back the int8 model
  and its facts, or one error line naming the child's log;
- :mod:`.child` (runs under tf_keras): loads the Keras 3 model, rebuilds it as tf_keras
  (:mod:`.rebuild`), wraps it for QAT or pruning, fine-tunes, converts to int8.
"""

from kerascls.tflite.tfmot.parent import finetune_tflite
from kerascls.tflite.tfmot.spec import MODES, BridgeError, BridgeSpec

__all__ = ["MODES", "BridgeError", "BridgeSpec", "finetune_tflite"]

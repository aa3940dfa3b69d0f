"""kerascls-edge: run kerascls TFLite bundles on camera-trap devices, without TensorFlow.

`Classifier` classifies images; `kerascls-edge predict` (see `cli`) turns folders of camera-trap
photos into MegaDetector-format JSON or CSV, with checkpoints and resume for long runs.
"""

from .bundle import EdgeError, ModelSpec, load_spec
from .classifier import Classifier, top_k

__version__ = "0.1.0"
__all__ = ["Classifier", "EdgeError", "ModelSpec", "load_spec", "top_k", "__version__"]

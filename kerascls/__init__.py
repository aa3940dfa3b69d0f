"""kerascls: train, quantize and ship image classifiers for camera traps.

``import kerascls`` stays light (no Keras, no TensorFlow: the CLI's flag errors are
sub-second), yet after it plain ``keras.saving.load_model("RUN/model.keras")`` finds
kerascls' custom layers: their registering module, ``kerascls.layers``, is imported as soon
as Keras is (at once when it already is).
"""

import importlib
import importlib.abc
import importlib.util
import sys

from kerascls._version import __version__ as __version__


def _register_layers() -> None:
    """Import ``kerascls.layers`` (its decorators register every custom layer with Keras),
    unless an import of it is already under way."""
    if "kerascls.layers" not in sys.modules:
        importlib.import_module("kerascls.layers")


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real ``keras`` loader to register our layers once
    Keras has finished loading, then leaves ``sys.meta_path``."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _register_layers()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_layers()
elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterKeras())


def create_model(name, num_classes=1000, input_shape=(224, 224, 3), **overrides):
    """Build a registered architecture (see ``kerascls.models.registry.create_model``)."""
    from kerascls.models import create_model as _create
    return _create(name, num_classes, input_shape, **overrides)


def load_model(path, compile=False):
    """Load a kerascls ``.keras`` file or run directory (its ``model.keras``).

    Adds what plain ``keras.saving.load_model`` lacks: a run directory as the path, and
    one-line errors for a missing file, a non-.keras file or a class kerascls lacks.
    """
    from kerascls.runs import load_model as _load
    return _load(path, compile=compile)


def list_models(family=None):
    """Names of every registered architecture."""
    from kerascls.models import list_models as _list
    return _list(family)

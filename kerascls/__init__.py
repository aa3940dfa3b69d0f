"""kerascls: train, quantize and ship image classifiers for camera traps."""

__version__ = "0.1.0"


def create_model(name, num_classes=1000, input_shape=(224, 224, 3), **overrides):
    """Build a registered architecture (see ``kerascls.models.registry.create_model``)."""
    from kerascls.models import create_model as _create
    return _create(name, num_classes, input_shape, **overrides)


def load_model(path, compile=False):
    """Load a kerascls ``.keras`` file or run directory (its ``model.keras``).

    Registers kerascls' custom layers first, which ``keras.saving.load_model`` alone
    cannot find (``import kerascls`` stays light: it imports neither Keras nor TF).
    """
    from pathlib import Path

    import keras

    import kerascls.layers  # noqa: F401  (registers the custom layers)
    import kerascls.models  # noqa: F401  (and the families' own)
    path = Path(path)
    return keras.saving.load_model(path / "model.keras" if path.is_dir() else path,
                                   compile=compile)


def list_models(family=None):
    """Names of every registered architecture."""
    from kerascls.models import list_models as _list
    return _list(family)

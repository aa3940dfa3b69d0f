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
    file = path / "model.keras" if path.is_dir() else path
    _check_keras_file(file)
    try:
        return keras.saving.load_model(file, compile=compile)
    except (TypeError, ValueError, KeyError, OSError) as e:
        raise ValueError(f"{file}: cannot load the model: {_load_error(e)}") from e


def _check_keras_file(file):
    """Tell a missing file from one that is not a .keras archive (Keras says "File not found"
    for both)."""
    import zipfile

    if not file.exists():
        raise FileNotFoundError(f"model not found: {file}")
    if file.is_dir() or (file.suffix == ".keras" and not zipfile.is_zipfile(file)):
        raise ValueError(f"{file}: not a .keras model (not a zip archive: truncated, or "
                         "another kind of file)")


def _load_error(error):
    """The one line that says why Keras could not load: an unknown class if there is one."""
    import re

    seen = error
    while seen is not None:
        found = re.search(r"Could not locate (?:class|function) '([^']+)'", str(seen))
        if found:
            return (f"it uses {found.group(1)!r}, which neither Keras nor kerascls defines "
                    "(saved by other code or a newer kerascls?)")
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def list_models(family=None):
    """Names of every registered architecture."""
    from kerascls.models import list_models as _list
    return _list(family)

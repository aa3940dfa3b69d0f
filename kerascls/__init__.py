"""kerascls: train, quantize and ship image classifiers for camera traps."""

__version__ = "0.1.0"


def create_model(name, num_classes=1000, input_shape=(224, 224, 3), **overrides):
    """Build a registered architecture (see ``kerascls.models.registry.create_model``)."""
    from kerascls.models import create_model as _create
    return _create(name, num_classes, input_shape, **overrides)


def list_models(family=None):
    """Names of every registered architecture."""
    from kerascls.models import list_models as _list
    return _list(family)

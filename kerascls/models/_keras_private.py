"""Every private Keras name kerascls uses, in one module (Keras has no public API for them).

keras.applications publishes its weight files' hashes and download addresses only in
``keras.src.applications.<module>``, and the cache root ``get_file`` uses only as
``keras.src.backend.config.keras_home``. A Keras release may move them; pyproject.toml
bounds ``keras`` to the versions tested, and ``tests/test_keras_private.py`` imports each
name in ``PRIVATE_NAMES`` so an upgrade says exactly which one moved.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# (module, attribute) pairs this module reads; the test imports each one.
APPLICATION_MODULES = ("resnet", "convnext", "efficientnet", "efficientnet_v2", "mobilenet_v3")
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("keras.src.backend.config", "keras_home"),
    *((f"keras.src.applications.{m}", "WEIGHTS_HASHES") for m in APPLICATION_MODULES),
    *((f"keras.src.applications.{m}", "BASE_WEIGHTS_PATH") for m in APPLICATION_MODULES
      if m != "mobilenet_v3"),
    ("keras.src.applications.mobilenet_v3", "BASE_WEIGHT_PATH"),
)


def keras_home() -> str:
    """The cache root ``keras.utils.get_file`` uses (``$KERAS_HOME`` or ``~/.keras``)."""
    from keras.src.backend.config import keras_home as home
    return home()


def applications_module(module: str) -> ModuleType:
    """``keras.src.applications.<module>``: holds ``WEIGHTS_HASHES`` and the base URL."""
    if module not in APPLICATION_MODULES:
        raise ValueError(f"no keras.applications module {module!r} is used by kerascls")
    return importlib.import_module(f"keras.src.applications.{module}")


def weights_hashes(module: str) -> dict[str, tuple[str, str]]:
    """``{key: (top hash, notop hash)}`` of a keras.applications module's weight files."""
    return applications_module(module).WEIGHTS_HASHES


def weights_base_url(module: str) -> str:
    """The address keras.applications downloads ``module``'s weight files from."""
    mod = applications_module(module)
    return getattr(mod, "BASE_WEIGHTS_PATH", None) or mod.BASE_WEIGHT_PATH

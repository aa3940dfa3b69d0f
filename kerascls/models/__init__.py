"""Model families; importing this package registers every architecture."""

from kerascls.models.registry import (
    create_model,
    list_models,
    load_families,
    model_info,
    register_model,
)

load_families()

__all__ = ["create_model", "list_models", "load_families", "model_info", "register_model"]

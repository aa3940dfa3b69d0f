"""Model families; importing this package registers every architecture."""

from kerascls.models import (  # noqa: F401 (imported to register their architectures)
    alexnet,
    cnn,
    convnext,
    efficientnet,
    efficientnetv2,
    mobilenetv3,
    resnet,
    vgg,
)
from kerascls.models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]

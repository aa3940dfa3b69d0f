"""Model families; importing this package registers every architecture."""

from kerascls.models import alexnet, cnn, vgg  # noqa: F401
from kerascls.models import resnet  # noqa: F401
from kerascls.models import convnext, efficientnet, mobilenetv3  # noqa: F401
from kerascls.models import efficientnetv2  # noqa: F401
from kerascls.models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]

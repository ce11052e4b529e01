"""Model registry (one Architecture record per timm/torchvision/custom net) and the saved-model bundle."""

from radiolens.models.architecture import Architecture
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import (
    available_models,
    create_model,
    get_architecture,
    register_architecture,
    unregister_architecture,
)

__all__ = ["Architecture", "BundleInfo", "ModelBundle", "available_models", "create_model", "get_architecture",
           "register_architecture", "unregister_architecture"]

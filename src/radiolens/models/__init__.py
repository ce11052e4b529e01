"""Model registry (timm/torchvision + small custom nets) and the saved-model bundle."""

from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import available_models, create_model

__all__ = ["BundleInfo", "ModelBundle", "available_models", "create_model"]

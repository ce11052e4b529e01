"""Model registry (one Architecture record per timm/torchvision/custom net) and the saved-model bundle.

The names below are imported on first use (PEP 562), not with the package: ``radiolens.models.info``,
``.backends`` and ``.onnx_metadata`` must stay importable in a ``radiolens[serve]`` installation, which has no
PyTorch, and importing any of them runs this file first.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Architecture": "radiolens.models.architecture",
    "BundleInfo": "radiolens.models.info",
    "ModelBundle": "radiolens.models.bundle",
    "available_models": "radiolens.models.registry",
    "create_model": "radiolens.models.registry",
    "get_architecture": "radiolens.models.registry",
    "register_architecture": "radiolens.models.registry",
    "unregister_architecture": "radiolens.models.registry",
}

__all__ = ["Architecture", "BundleInfo", "ModelBundle", "available_models", "create_model", "get_architecture",
           "register_architecture", "unregister_architecture"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'radiolens.models' has no attribute '{name}'")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

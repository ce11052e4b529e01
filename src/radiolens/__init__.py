"""radiolens: chest X-ray AI from DICOM to a validated, explainable, monitored prediction.

Advisory only: radiolens is decision support for qualified readers, never a diagnosis.

    import radiolens
    model = radiolens.load_model("model.pt")   # or an exported .onnx
    record = model.predict("chest.dcm")         # a PredictionRecord

The names below are imported on first use (PEP 562), so ``import radiolens`` stays light: it loads neither
PyTorch nor NumPy, and works in a ``radiolens[serve]`` installation, which has no PyTorch. See
docs/python-api.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that holds it (the Python API driver, and the pipeline's record types).
_EXPORTS = {
    "load_model": "radiolens.python_api",
    "Model": "radiolens.python_api",
    "Explanation": "radiolens.python_api",
    "PredictionRecord": "radiolens.pipeline.record",
    "ClassScore": "radiolens.pipeline.record",
    "GateOutcome": "radiolens.pipeline.record",
    "Heatmap": "radiolens.pipeline.record",
    "Provenance": "radiolens.pipeline.record",
    "Review": "radiolens.pipeline.decision",
}

__all__ = ["ClassScore", "Explanation", "GateOutcome", "Heatmap", "Model", "PredictionRecord", "Provenance", "Review",
           "__version__", "load_model"]

if TYPE_CHECKING:
    from radiolens.pipeline.decision import Review
    from radiolens.pipeline.record import ClassScore, GateOutcome, Heatmap, PredictionRecord, Provenance
    from radiolens.python_api import Explanation, Model, load_model


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'radiolens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

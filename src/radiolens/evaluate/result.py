"""The outcome of one evaluation, as plain Python data so it serialises to JSON unchanged and other layers
(model card, subgroup audit, the bundle's ``metrics`` dict) can read it without importing plotting code."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA = "radiolens-evaluation/1"


def json_safe(value: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN/inf -> None (JSON has no NaN; None reads as "undefined")."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "to_dict"):
        return json_safe(value.to_dict())
    if hasattr(value, "tolist"):  # torch tensors, numpy-like arrays
        return json_safe(value.tolist())
    if value is None or isinstance(value, str | int):
        return value
    return str(value)  # paths, dates, enums: readable rather than a crash in json.dumps


@dataclass
class EvaluationResult:
    task: str
    class_names: list[str]
    operating_point: str
    temperature: float
    thresholds: list[float]
    n_test: int
    n_val: int | None
    n_bootstrap: int
    seed: int
    per_class: list[dict]  # one entry per output, see evaluate_predictions
    summary: dict  # macro/micro AUROC & AP with intervals, headline numbers, argmax summary (multiclass)
    calibration: dict  # temperature, NLL/ECE/Brier before and after, reliability bins
    curves: dict  # ROC and PR points per output (for plots)
    training: dict  # {"history": [...], "diagnosis": {...}}
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return json_safe({
            "schema": SCHEMA,
            "task": self.task,
            "class_names": self.class_names,
            "operating_point": self.operating_point,
            "temperature": self.temperature,
            "thresholds": self.thresholds,
            "n_test": self.n_test,
            "n_val": self.n_val,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "summary": self.summary,
            "per_class": self.per_class,
            "calibration": self.calibration,
            "training": self.training,
            "curves": self.curves,
            "warnings": self.warnings,
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def bundle_metrics(self) -> dict:
        """A compact, JSON-safe summary for ``BundleInfo.metrics`` (no curves, no history)."""
        per_class = {
            c["name"]: {
                "auroc": c["auroc"]["estimate"], "auroc_ci": [c["auroc"]["lower"], c["auroc"]["upper"]],
                "average_precision": c["average_precision"]["estimate"],
                "sensitivity": c["at_threshold"]["sensitivity"], "specificity": c["at_threshold"]["specificity"],
                "ppv": c["at_threshold"]["ppv"], "npv": c["at_threshold"]["npv"], "threshold": c["threshold"],
            } for c in self.per_class
        }
        return json_safe({"task": self.task, "n_test": self.n_test, "operating_point": self.operating_point,
                          "temperature": self.temperature, "headline": self.summary.get("headline", {}),
                          "per_class": per_class,
                          "ece_after": self.calibration.get("test", {}).get("ece_after"),
                          # a few numbers per bin: enough for the model card's reliability diagram
                          "calibration": {k: self.calibration.get(k) for k in
                                          ("temperature", "view", "n_bins", "test", "reliability_before",
                                           "reliability_after")},
                          "training_verdict": self.training.get("diagnosis", {}).get("verdict")})

    def per_class_by_name(self, name: str) -> dict:
        for entry in self.per_class:
            if entry["name"] == name:
                return entry
        raise KeyError(name)

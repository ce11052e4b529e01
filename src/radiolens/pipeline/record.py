"""The typed result of predicting one image, the one thing every driver builds its output from: the service's
JSON response (``serve.runtime.service.build_prediction_result``), a batch-scoring row (``predict.scoring``), and
later drivers (DICOM result objects, a network receiver, distributed scoring).

``to_dict()`` is the JSON form; probabilities are rounded to 6 decimals there (as the service has always
answered), the record itself keeps full precision. The model embedding rides along for monitoring but is
never serialised (it is large and says nothing to a reader).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from radiolens.monitor.gate import OK, OUT_OF_DISTRIBUTION, GateResult
from radiolens.pipeline.decision import NOT_ASSESSED, Review, not_assessed_review


@dataclass(frozen=True)
class ClassScore:
    name: str
    probability: float  # calibrated
    threshold: float
    positive: bool  # the decision at the operating point

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "probability": round(float(self.probability), 6),
                "threshold": float(self.threshold), "positive": bool(self.positive)}


@dataclass(frozen=True)
class GateOutcome:
    """What the input gate said: ``mode`` names what applied ("header rules", "header rules + learned score",
    with the reason the learned score did not, or "off")."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    ood_score: float | None = None
    threshold: float | None = None
    learned: bool = False  # the model has a monitoring profile (a learned score exists for it)
    mode: str = "off"

    @property
    def status(self) -> str:
        return OK if self.passed else OUT_OF_DISTRIBUTION

    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """The gate's own JSON form (``GateResult.as_dict``) plus which gate applied."""
        gate = GateResult(self.status, list(self.reasons), self.ood_score, self.threshold, self.learned)
        return gate.as_dict() | {"mode": self.mode}


@dataclass(frozen=True)
class Heatmap:
    array: np.ndarray  # (h, w) in [0, 1] at the model input size
    target: str  # the class it explains
    target_index: int


@dataclass(frozen=True)
class Provenance:
    name: str
    version: str
    sha256: str  # of the .pt bundle
    arch: str
    task: str
    operating_point: str
    backend: str  # torch | torchscript | onnx
    backend_sha256: str = ""  # the file the backend runs (an .onnx); "" for the bundle itself
    precision: str = ""  # fp32 | int8 (ONNX)

    @property
    def label(self) -> str:
        """``name@backend[-precision]``: the ``model`` column of batch results."""
        return f"{self.name}@{self.backend}" + (f"-{self.precision}" if self.precision else "")

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "version": self.version, "sha256": self.sha256, "arch": self.arch,
               "task": self.task, "operating_point": self.operating_point, "backend": self.backend}
        if self.backend_sha256:
            out.update(backend_sha256=self.backend_sha256, precision=self.precision)
        return out


@dataclass(frozen=True)
class PredictionRecord:
    status: str  # OK, OUT_OF_DISTRIBUTION, or what a service hook withheld it as: anything but OK = not assessed
    scores: list[ClassScore]  # empty when not assessed
    label: str
    positive_classes: list[str]
    review: Review
    gate: GateOutcome
    provenance: Provenance
    target_index: int = 0  # the output a heatmap explains
    heatmap: Heatmap | None = None
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)  # (d,), never serialised
    # Assessed probabilities kept when withheld (monitoring records what the model said); not serialised.
    raw_probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def assessed(self) -> bool:
        return self.status == OK

    @property
    def probabilities(self) -> np.ndarray | None:
        """(outputs,) calibrated, as the model computed them (also for a withheld image; None if never run)."""
        return self.raw_probabilities

    @property
    def class_probabilities(self) -> dict[str, float]:
        """Calibrated probability by class name; empty when not assessed (the gate refused the image)."""
        return {s.name: float(s.probability) for s in self.scores}

    @property
    def decisions(self) -> dict[str, bool]:
        """The decision at the operating point by class name; empty when not assessed."""
        return {s.name: bool(s.positive) for s in self.scores}

    def __repr__(self) -> str:
        """One readable line for a notebook: what was decided, why it is (not) for review, what the gate said.
        The full record, with thresholds and provenance, is ``to_dict()``."""
        r, g = self.review, self.gate
        parts = [f"status={self.status!r}", f"label={self.label!r}"]
        if self.scores:
            parts.append("probabilities={" + ", ".join(f"{s.name!r}: {s.probability:.4f}" for s in self.scores) + "}")
        parts.append(f"review={'yes' if r.flag else 'no'} ({r.reason})")
        parts.append("gate=" + ("passed" if g.passed else f"refused ({g.reason()})"))
        return f"PredictionRecord({', '.join(parts)}, model={self.provenance.label!r})"

    def withheld(self, status: str, reason: str) -> PredictionRecord:
        """This record not assessed (``status`` != OK): no scores, no decision, flagged for review."""
        return replace(self, status=status, scores=[], label=NOT_ASSESSED, positive_classes=[],
                       review=not_assessed_review(reason or status), heatmap=None)

    def with_heatmap(self, heatmap: Heatmap | None) -> PredictionRecord:
        return replace(self, heatmap=heatmap)

    def to_dict(self) -> dict[str, Any]:
        r = self.review
        return {
            "status": self.status,
            "probabilities": [s.to_dict() for s in self.scores],
            "decision": {"label": self.label, "positive_classes": list(self.positive_classes),
                         "operating_point": self.provenance.operating_point},
            "review": {"flag": bool(r.flag), "reason": r.reason, "rule": r.rule,
                       "spread": None if r.spread is None else round(float(r.spread), 6)},
            "gate": self.gate.to_dict(),
            "model": self.provenance.to_dict(),
            "heatmap_target": None if self.heatmap is None else self.heatmap.target,
        }

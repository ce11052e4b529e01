"""The one prediction path shared by every driver (service, batch scoring, ...): prepared image -> batched
forward pass -> input gate -> decision and triage -> a typed :class:`PredictionRecord`."""

from radiolens.pipeline.decision import Review, Triage, decide
from radiolens.pipeline.predictor import Failure, InferenceFailedError, Predictor, Prepared, prepare
from radiolens.pipeline.record import ClassScore, GateOutcome, Heatmap, PredictionRecord, Provenance

__all__ = ["ClassScore", "Failure", "GateOutcome", "Heatmap", "InferenceFailedError", "PredictionRecord", "Predictor",
           "Prepared", "Provenance", "Review", "Triage", "decide", "prepare"]

"""Plug-in points around a prediction, for layers that build on the service (e.g. monitoring).

In pipeline order, all in the inference worker thread:

``input_gates(ctx)`` run on the de-identified image before inference: raise a
:class:`radiolens.errors.InputError` subclass to refuse it (the client gets 4xx JSON and nothing is stored).
``inference_hooks(ctx)`` run right after the pipeline predicted (``ctx.record``, the
:class:`radiolens.pipeline.PredictionRecord`, is set, and with it ``ctx.probabilities``, ``ctx.embedding``
and ``ctx.status``: the pipeline's input gate has already answered) and before any heatmap: set
``ctx.status`` (any value but "ok") and ``ctx.status_reason`` to answer "not assessed" instead of a
probability (the case is still stored and audited, so rejections are counted and monitored).
``result_hooks(ctx, result)`` run right after :func:`radiolens.serve.runtime.service.build_prediction_result` built
the response dict and before it is stored and audited: they may add keys under ``result["monitoring"]``
or raise the review flag (``result["review"]``).
``record_hooks(session, ctx, result)`` run inside the database transaction that stores the prediction and
its audit row: rows they add commit (or roll back) with it.
``after_commit(ctx, result)`` run once that transaction committed; they must not raise (errors are logged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from radiolens.io.image import RadioImage
from radiolens.pipeline.record import PredictionRecord


@dataclass
class PredictionContext:
    prediction_id: str
    bundle: Any  # the served model: a ModelBundle, or an ONNX export alone (inference.ExportedModel)
    image: RadioImage  # de-identified
    source_format: str
    study_ref: str
    input_sha256: str
    user_id: int
    role: str
    record: PredictionRecord | None = None  # the pipeline's result, once it ran (withheld ones included)
    probabilities: Any = None  # numpy array once inference ran
    embedding: Any = None  # numpy (d,) model embedding once inference ran (None if not computed)
    status: str = "ok"  # anything else: the model output is withheld (by the input gate or an inference hook)
    status_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


InputGate = Callable[[PredictionContext], None]
InferenceHook = Callable[[PredictionContext], None]
ResultHook = Callable[[PredictionContext, dict[str, Any]], None]
RecordHook = Callable[[Any, PredictionContext, dict[str, Any]], None]
AfterCommitHook = Callable[[PredictionContext, dict[str, Any]], None]


@dataclass
class PredictionHooks:
    input_gates: list[InputGate] = field(default_factory=list)
    inference_hooks: list[InferenceHook] = field(default_factory=list)
    result_hooks: list[ResultHook] = field(default_factory=list)
    record_hooks: list[RecordHook] = field(default_factory=list)
    after_commit: list[AfterCommitHook] = field(default_factory=list)

    def extended(self, other: PredictionHooks) -> PredictionHooks:
        """These hooks followed by ``other``'s, stage by stage."""
        return PredictionHooks(self.input_gates + other.input_gates, self.inference_hooks + other.inference_hooks,
                               self.result_hooks + other.result_hooks, self.record_hooks + other.record_hooks,
                               self.after_commit + other.after_commit)

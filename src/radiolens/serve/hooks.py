"""Plug-in points around a prediction, for layers that build on the service (e.g. monitoring).

``input_gates`` run on the de-identified image before inference: raise a
:class:`radiolens.errors.InputError` subclass to refuse it (the client gets 4xx JSON and nothing is stored).
``result_hooks`` run right after :func:`radiolens.serve.service.build_prediction_result` built the
response dict and before it is stored and audited: they may add keys under ``result["monitoring"]`` or
raise the review flag (``result["review"]``). Both run in the inference worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from radiolens.io.image import RadioImage
from radiolens.models.bundle import ModelBundle


@dataclass
class PredictionContext:
    prediction_id: str
    bundle: ModelBundle
    image: RadioImage  # de-identified
    source_format: str
    study_ref: str
    input_sha256: str
    user_id: int
    role: str
    probabilities: Any = None  # numpy array once inference ran
    extra: dict[str, Any] = field(default_factory=dict)


InputGate = Callable[[PredictionContext], None]
ResultHook = Callable[[PredictionContext, dict[str, Any]], None]


@dataclass
class PredictionHooks:
    input_gates: list[InputGate] = field(default_factory=list)
    result_hooks: list[ResultHook] = field(default_factory=list)

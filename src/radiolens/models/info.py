"""What a trained model is, apart from its weights: the :class:`BundleInfo` record (labels, preprocessing,
calibration, thresholds, triage rule, monitoring profile, provenance) and the file hash that names a model.

Kept free of PyTorch on purpose: a service running an exported ONNX model reads this record from the ONNX
file's metadata, and a ``radiolens[serve]`` installation has no torch to import.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from radiolens import __version__
from radiolens.errors import ModelError

FORMAT = "radiolens-model/1"
Task = Literal["binary", "multiclass", "multilabel"]


@dataclass
class BundleInfo:
    """Everything about the model except its weights."""

    arch: str
    task: Task
    class_names: list[str]  # one name per output; binary: one output, the positive class
    input_size: tuple[int, int]
    mean: float = 0.5
    std: float = 0.25
    negative_name: str = "normal"  # binary only: what probability 1 - p means
    #: The dropout the model was built with (None: the architecture's default). Not a weight, so it must be
    #: kept here: a loaded model must drop out as it did in training, or MC-dropout silently does nothing.
    dropout: float | None = None
    temperature: float = 1.0
    thresholds: list[float] = field(default_factory=list)  # per output, chosen on validation
    operating_point: str = "default_0.5"
    triage: dict[str, Any] = field(default_factory=dict)
    monitoring: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    #: The intended population, from the training data's documentation (radiolens.models.population:
    #: description, age_min_years, age_max_years, views); empty: not stated, and every result says so.
    population: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    version: str = "1"
    created_at: float = field(default_factory=time.time)
    radiolens_version: str = __version__

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    def __post_init__(self) -> None:
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if self.task not in ("binary", "multiclass", "multilabel"):
            raise ModelError(f"unknown task '{self.task}'")
        if self.task == "binary" and len(self.class_names) != 1:
            raise ModelError("a binary model has exactly one output (the positive class)")
        if self.task == "multiclass" and len(self.class_names) < 2:
            raise ModelError("a multi-class model needs at least two classes")
        if not self.thresholds:
            self.thresholds = [0.5] * len(self.class_names)
        if len(self.thresholds) != len(self.class_names):
            raise ModelError("thresholds must have one value per output")
        if not self.name:
            self.name = f"{self.arch}-{self.task}"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()

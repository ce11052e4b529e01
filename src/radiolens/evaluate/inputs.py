"""Checking what callers hand the evaluator, so that a bad array fails with a typed, readable error
instead of a numpy broadcast error (or, worse, a silently wrong number) deep inside scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from radiolens.errors import InputError
from radiolens.models.operating_point import OperatingPointError, parse_operating_point

__all__ = ["EvaluationInputError", "LabelValueError", "LengthMismatchError", "NonFiniteError", "OperatingPointError",
           "ShapeError", "Split", "check_split", "check_task", "parse_operating_point"]

Task = Literal["binary", "multiclass", "multilabel"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "multilabel")


class EvaluationInputError(InputError):
    """Predictions or targets handed to the evaluator are unusable."""

    code = "bad_evaluation_input"


class ShapeError(EvaluationInputError):
    code = "bad_shape"


class LengthMismatchError(ShapeError):
    code = "length_mismatch"


class NonFiniteError(EvaluationInputError):
    code = "non_finite_values"


class LabelValueError(EvaluationInputError):
    """Targets outside the task's label set (e.g. a 2 in binary targets)."""

    code = "bad_label_values"


@dataclass(frozen=True)
class Split:
    """One set of model outputs with its targets, validated and in canonical shapes.

    ``logits`` is always (N, K); ``targets`` is (N,) int for binary/multiclass and (N, K) int for multilabel.
    """

    logits: np.ndarray
    targets: np.ndarray

    @property
    def n(self) -> int:
        return int(self.logits.shape[0])


def check_task(task: str, class_names: list[str]) -> tuple[Task, list[str]]:
    if task not in TASKS:
        raise EvaluationInputError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    names = [str(c) for c in class_names]
    if not names:
        raise EvaluationInputError("class_names is empty")
    if len(set(names)) != len(names):
        raise EvaluationInputError("class_names contains duplicates")
    if task == "binary" and len(names) != 1:
        raise EvaluationInputError(
            f"binary task: class_names must hold exactly one name (the positive class), got {len(names)}")
    if task == "multiclass" and len(names) < 2:
        raise EvaluationInputError("multiclass task needs at least two class names")
    return task, names  # type: ignore[return-value]


def check_split(task: Task, n_classes: int, logits, targets, which: str) -> Split:
    """Validate one (logits, targets) pair; ``which`` ("test"/"validation") only names it in messages."""
    try:
        lg = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{which} logits are not numeric") from exc
    try:
        tg = np.asarray(targets)
    except (TypeError, ValueError) as exc:  # pragma: no cover - np.asarray rarely fails
        raise EvaluationInputError(f"{which} targets are not an array") from exc

    if task == "binary" and lg.ndim == 1:
        lg = lg[:, None]
    if lg.ndim != 2 or lg.shape[1] != n_classes:
        expected = "(N, 1)" if task == "binary" else f"(N, {n_classes})"
        raise ShapeError(f"{which} logits have shape {lg.shape}, expected {expected} for task '{task}'")
    if lg.shape[0] == 0:
        raise ShapeError(f"{which} set is empty")
    if not np.all(np.isfinite(lg)):
        bad = int((~np.isfinite(lg)).any(axis=1).sum())
        raise NonFiniteError(f"{which} logits contain NaN or infinite values in {bad} case(s)")

    if tg.dtype.kind not in "biuf":
        raise LabelValueError(f"{which} targets must be numeric (got dtype {tg.dtype})")
    if tg.dtype.kind == "f":
        if not np.all(np.isfinite(tg)):
            raise NonFiniteError(f"{which} targets contain NaN or infinite values")
        if not np.all(tg == np.round(tg)):
            raise LabelValueError(f"{which} targets must be whole numbers (class indices or 0/1)")
    if task == "multilabel":
        if tg.ndim != 2 or tg.shape[1] != n_classes:
            raise ShapeError(f"{which} targets have shape {tg.shape}, expected (N, {n_classes}) 0/1 for multilabel")
    else:
        if tg.ndim == 2 and tg.shape[1] == 1:
            tg = tg[:, 0]
        if tg.ndim != 1:
            raise ShapeError(f"{which} targets have shape {tg.shape}, expected (N,) for task '{task}'")
    if tg.shape[0] != lg.shape[0]:
        raise LengthMismatchError(f"{which}: {lg.shape[0]} logit rows but {tg.shape[0]} targets")
    tg = tg.astype(np.int64)
    if task in ("binary", "multilabel"):
        if not np.isin(tg, (0, 1)).all():
            raise LabelValueError(f"{which} targets must be 0 or 1 for task '{task}'")
    else:
        if tg.min() < 0 or tg.max() >= n_classes:
            raise LabelValueError(f"{which} targets must be class indices in 0..{n_classes - 1}")
    return Split(logits=lg, targets=tg)

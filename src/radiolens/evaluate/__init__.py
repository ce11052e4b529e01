"""Evaluation: metrics with confidence intervals, operating points chosen on validation, calibration,
training-curve diagnosis, and a self-contained HTML + JSON report."""

from radiolens.evaluate.bootstrap import (
    Interval,
    auroc_with_ci,
    average_precision_with_ci,
    bootstrap_auroc,
    bootstrap_average_precision,
    macro_micro_auroc_ci,
)
from radiolens.evaluate.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from radiolens.evaluate.curves import diagnose_training
from radiolens.evaluate.evaluator import evaluate_predictions
from radiolens.evaluate.inputs import (
    EvaluationInputError,
    LabelValueError,
    LengthMismatchError,
    NonFiniteError,
    OperatingPointError,
    ShapeError,
)
from radiolens.evaluate.metrics import binary_rates, brier, probabilities, proportion_ci
from radiolens.evaluate.operating_point import choose_threshold, threshold_choice
from radiolens.evaluate.result import EvaluationResult

__all__ = [
    "EvaluationInputError", "EvaluationResult", "Interval", "LabelValueError", "LengthMismatchError",
    "NonFiniteError", "OperatingPointError", "ShapeError", "auroc_with_ci", "average_precision_with_ci",
    "binary_rates", "bootstrap_auroc", "bootstrap_average_precision", "brier", "choose_threshold",
    "diagnose_training", "evaluate_predictions", "expected_calibration_error", "fit_temperature",
    "macro_micro_auroc_ci", "probabilities", "proportion_ci", "reliability_bins", "reliability_diagram",
    "threshold_choice", "write_report",
]


def write_report(*args, **kwargs):
    """See radiolens.evaluate.report.write_report (imported lazily: matplotlib is slow to import)."""
    from radiolens.evaluate.report import write_report as _write_report

    return _write_report(*args, **kwargs)


def reliability_diagram(*args, **kwargs):
    """See radiolens.evaluate.plots.reliability_diagram (lazy import of matplotlib)."""
    from radiolens.evaluate.plots import reliability_diagram as _reliability_diagram

    return _reliability_diagram(*args, **kwargs)

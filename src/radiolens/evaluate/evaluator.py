"""``evaluate_predictions``: model outputs on validation + test -> every number of the evaluation report.

Order matters and is the point of this module: temperature and thresholds are fitted on VALIDATION only,
then frozen and applied to TEST, so no test number is tuned on the test set. All test metrics use the
temperature-scaled probabilities, i.e. exactly what a saved bundle outputs at prediction time.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    precision_recall_curve,
    roc_curve,
)

from radiolens.evaluate.bootstrap import (
    Interval,
    bootstrap_auroc,
    bootstrap_average_precision,
    macro_micro_auroc_ci,
)
from radiolens.evaluate.calibration import (
    N_BINS,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    top_label,
)
from radiolens.evaluate.curves import diagnose_training
from radiolens.evaluate.inputs import (
    EvaluationInputError,
    Split,
    check_split,
    check_task,
    parse_operating_point,
)
from radiolens.evaluate.metrics import (
    argmax_summary,
    binary_rates,
    brier,
    multiclass_brier,
    one_vs_rest,
    probabilities,
)
from radiolens.evaluate.operating_point import DEFAULT_THRESHOLD, threshold_choice
from radiolens.evaluate.result import EvaluationResult


def _indicators(task: str, split: Split, k: int) -> np.ndarray:
    if task == "binary":
        return split.targets.reshape(-1, 1)
    if task == "multiclass":
        return one_vs_rest(split.targets, k)
    return split.targets


def _calibration_view(task: str, split: Split, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (event, probability) pairs a single reliability diagram shows for this task."""
    if task == "binary":
        return split.targets, probs[:, 0]
    if task == "multiclass":
        return top_label(split.targets, probs)
    return split.targets.reshape(-1), probs.reshape(-1)  # multilabel: every (case, finding) cell pooled


def _task_brier(task: str, split: Split, probs: np.ndarray) -> float:
    if task == "multiclass":
        return multiclass_brier(split.targets, probs)
    Y = _indicators(task, split, probs.shape[1])
    return float(np.mean([brier(Y[:, k], probs[:, k]) for k in range(probs.shape[1])]))


def _task_ece(task: str, split: Split, probs: np.ndarray) -> float:
    if task == "binary":
        return expected_calibration_error(split.targets, probs[:, 0], "binary")
    return expected_calibration_error(split.targets, probs, task)


def _has_both_outcomes(task: str, split: Split) -> bool:
    if task == "multiclass":
        return len(np.unique(split.targets)) > 1
    return 0 < int(split.targets.sum()) < split.targets.size


def _check_fixed(temperature, thresholds, k: int) -> tuple[float | None, list[float] | None]:
    t = None
    if temperature is not None:
        try:
            t = float(temperature)
        except (TypeError, ValueError) as exc:
            raise EvaluationInputError("temperature must be a number") from exc
        if not (np.isfinite(t) and t > 0):
            raise EvaluationInputError("temperature must be a finite number > 0")
    thr = None
    if thresholds is not None:
        try:
            thr_arr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise EvaluationInputError("thresholds must be a list of numbers") from exc
        if thr_arr.size != k:
            raise EvaluationInputError(f"thresholds: expected one per output ({k}), got {thr_arr.size}")
        if not np.all(np.isfinite(thr_arr)) or thr_arr.min() < 0 or thr_arr.max() > 1:
            raise EvaluationInputError("thresholds must be probabilities in [0, 1]")
        thr = [float(v) for v in thr_arr]
    return t, thr


def _curve_points(y: np.ndarray, p: np.ndarray) -> dict:
    if y.min() == y.max():
        return {"roc": None, "pr": None}
    # Plot points only (the metrics come from the full data): collinear points dropped, 5 decimals, so that
    # metrics.json stays small on large test sets.
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
    precision, recall, _ = precision_recall_curve(y, p, drop_intermediate=True)
    return {"roc": {"fpr": np.round(fpr, 5).tolist(), "tpr": np.round(tpr, 5).tolist()},
            "pr": {"precision": np.round(precision, 5).tolist(), "recall": np.round(recall, 5).tolist(),
                   "prevalence": float(y.mean())}}


#: a test rate this far under its validation value, with validation outside the test rate's 95 % interval, is
#: called out: the threshold chosen on validation does not carry over to test
GAP_WARN = 0.10


def _validation_gap_warnings(per_class: list[dict]) -> list[str]:
    """A warning per class whose test sensitivity or specificity at the chosen threshold falls well below
    what the threshold gave on validation (by :data:`GAP_WARN` or more, and beyond the test rate's 95 % Wilson
    interval, so a small test set's noise alone does not trigger it)."""
    out = []
    for c in per_class:
        choice, at = c["threshold_choice"], c["at_threshold"]
        for rate in ("sensitivity", "specificity"):
            val, test, ci = choice.get(f"val_{rate}"), at.get(rate), at.get(f"{rate}_ci")
            if val is None or test is None or not ci or ci[1] is None:
                continue
            if val - test >= GAP_WARN and val > ci[1]:
                out.append(f"{c['name']}: test {rate} {test:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] is well below the "
                           f"{val:.2f} the threshold gave on validation: the operating point does not carry "
                           "over to this test set (a shift between validation and test, or a validation set "
                           "too small to choose it); choose the threshold on data like the test population.")
    return out


def evaluate_predictions(
    task: str,
    class_names: list[str],
    test_logits,
    test_targets,
    val_logits=None,
    val_targets=None,
    history: list[dict] | None = None,
    operating_point: str = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    temperature: float | None = None,
    thresholds: list[float] | None = None,
) -> EvaluationResult:
    """Evaluate model logits on a test set, with temperature and thresholds fitted on a validation set.

    Shapes: logits (N, K) (binary: (N, 1), the positive class); targets (N,) 0/1 for binary, (N,) class indices
    for multiclass, (N, K) 0/1 for multilabel. Without validation data, T = 1 and every threshold is 0.5, and a
    warning says so (thresholds are never chosen on test).

    ``temperature`` / ``thresholds``: frozen values fitted earlier (e.g. a saved bundle's), used instead of fitting
    on validation: the right choice for an external test set, where re-tuning would flatter the model.

    Raises EvaluationInputError subclasses for bad shapes, NaNs, unknown labels, mismatched lengths or an unknown
    operating point.
    """
    task, names = check_task(task, class_names)
    parse_operating_point(operating_point)
    try:
        n_bootstrap, seed = int(n_bootstrap), int(seed)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError("n_bootstrap and seed must be integers") from exc
    if n_bootstrap < 0:
        raise EvaluationInputError("n_bootstrap must be >= 0")
    k = len(names)
    test = check_split(task, k, test_logits, test_targets, "test")
    if (val_logits is None) != (val_targets is None):
        raise EvaluationInputError("give both val_logits and val_targets, or neither")
    val = check_split(task, k, val_logits, val_targets, "validation") if val_logits is not None else None
    fixed_t, fixed_thr = _check_fixed(temperature, thresholds, k)
    warnings: list[str] = []

    # ---- fitted on validation only (or frozen values given by the caller)
    if fixed_t is not None:
        temperature, t_source = fixed_t, "given"
    elif val is not None and _has_both_outcomes(task, val):
        temperature, t_source = fit_temperature(val.logits, val.targets, task), "validation"
    else:
        temperature, t_source = 1.0, None
        if val is not None:
            warnings.append("Validation holds a single class: temperature scaling skipped (T = 1); fitting it "
                            "would only push every probability towards that class.")
    val_nll = {"before": None, "after": None}
    if val is not None:
        val_nll = {"before": nll(val.logits, val.targets, task),
                   "after": nll(val.logits, val.targets, task, temperature)}
    if fixed_thr is not None:
        threshold_details = [{"threshold": t, "rule": "given", "val_sensitivity": None, "val_specificity": None,
                              "fallback": None} for t in fixed_thr]
        operating_point = "given thresholds"
    elif val is not None:
        val_probs = probabilities(val.logits, task, temperature)
        Yv = _indicators(task, val, k)
        threshold_details = [threshold_choice(Yv[:, c], val_probs[:, c], operating_point) for c in range(k)]
        for name, detail in zip(names, threshold_details, strict=True):
            if detail["fallback"]:
                warnings.append(f"{name}: {detail['fallback']}")
    else:
        threshold_details = [{"threshold": DEFAULT_THRESHOLD, "rule": operating_point, "val_sensitivity": None,
                              "val_specificity": None, "fallback": "no validation set"} for _ in names]
        warnings.append("No validation set: every threshold fixed at 0.5 and the stated operating point was not "
                        "applied.")
    if t_source is None and val is None:
        warnings.append("No validation set: no temperature scaling (T = 1).")
    thresholds = [float(d["threshold"]) for d in threshold_details]

    # ---- applied to test
    raw = probabilities(test.logits, task, 1.0)
    probs = probabilities(test.logits, task, temperature)
    Y = _indicators(task, test, k)
    per_class: list[dict] = []
    curves: dict = {}
    for c, name in enumerate(names):
        y, p = Y[:, c], probs[:, c]
        auroc = bootstrap_auroc(y, p, n_bootstrap, seed + c)
        ap = bootstrap_average_precision(y, p, n_bootstrap, seed + c)
        if auroc.estimate is None:
            warnings.append(f"{name}: AUROC undefined on test ({auroc.reason.removeprefix('undefined: ')})")
        rates = binary_rates(y, p, thresholds[c])
        per_class.append({
            "name": name,
            "n_positive": int(y.sum()), "n_negative": int(len(y) - y.sum()), "prevalence": float(y.mean()),
            "auroc": auroc.to_dict(), "average_precision": ap.to_dict(),
            "threshold": thresholds[c], "threshold_choice": threshold_details[c],
            "at_threshold": rates,
            "confusion_matrix": [[rates["tn"], rates["fp"]], [rates["fn"], rates["tp"]]],
            "brier_before": brier(y, raw[:, c]), "brier_after": brier(y, p),
            "ece_before": expected_calibration_error(y, raw[:, c]), "ece_after": expected_calibration_error(y, p),
        })
        curves[name] = _curve_points(y, p)

    warnings += _validation_gap_warnings(per_class)

    summary: dict = {}
    if task == "binary":
        entry = per_class[0]
        pred = (probs[:, 0] >= thresholds[0]).astype(int)
        summary["headline"] = {
            "auroc": entry["auroc"], "average_precision": entry["average_precision"],
            "sensitivity": entry["at_threshold"]["sensitivity"], "specificity": entry["at_threshold"]["specificity"],
            # accuracy is always shown with balanced accuracy and the prevalence it depends on
            "accuracy": float(accuracy_score(test.targets, pred)),
            "balanced_accuracy": (float(balanced_accuracy_score(test.targets, pred))
                                  if entry["auroc"]["estimate"] is not None else None),
            "prevalence": entry["prevalence"],
        }
    else:
        mm = macro_micro_auroc_ci(Y, probs, n_bootstrap, seed + 1000)
        defined = [c for c in range(k) if per_class[c]["auroc"]["estimate"] is not None]
        ap_defined = [c for c in range(k) if per_class[c]["average_precision"]["estimate"] is not None]
        summary["macro_auroc"] = mm["macro"].to_dict()
        summary["micro_auroc"] = mm["micro"].to_dict()
        summary["macro_average_precision"] = Interval(
            float(np.mean([per_class[c]["average_precision"]["estimate"] for c in ap_defined])) if ap_defined
            else None,
            reason=None if len(ap_defined) == k else f"mean over the {len(ap_defined)} of {k} classes with positives",
        ).to_dict()
        summary["micro_average_precision"] = Interval(
            float(average_precision_score(Y.reshape(-1), probs.reshape(-1))) if Y.any() else None).to_dict()
        summary["n_classes_auroc_defined"] = len(defined)
        summary["headline"] = {"macro_auroc": summary["macro_auroc"], "micro_auroc": summary["micro_auroc"],
                               "macro_average_precision": summary["macro_average_precision"]}
        if task == "multiclass":
            summary["argmax"] = argmax_summary(test.targets, probs)

    ev_raw, p_raw = _calibration_view(task, test, raw)
    ev_cal, p_cal = _calibration_view(task, test, probs)
    calibration = {
        "temperature": temperature,
        "fitted_on": t_source,
        "val_nll_before": val_nll["before"], "val_nll_after": val_nll["after"],
        "n_bins": N_BINS,
        "view": {"binary": "positive-class probability", "multiclass": "top-class confidence vs. correct",
                 "multilabel": "all (case, finding) cells pooled"}[task],
        "ece_definition": {"binary": "ECE of the positive-class probability",
                           "multiclass": "top-label ECE (confidence of the argmax class)",
                           "multilabel": "mean of the per-finding ECEs"}[task],
        "test": {"ece_before": _task_ece(task, test, raw), "ece_after": _task_ece(task, test, probs),
                 "brier_before": _task_brier(task, test, raw), "brier_after": _task_brier(task, test, probs)},
        "reliability_before": reliability_bins(ev_raw, p_raw),
        "reliability_after": reliability_bins(ev_cal, p_cal),
    }
    training = {"history": list(history or []), "diagnosis": diagnose_training(history)}
    return EvaluationResult(
        task=task, class_names=names, operating_point=operating_point, temperature=float(temperature),
        thresholds=thresholds, n_test=test.n, n_val=val.n if val is not None else None, n_bootstrap=n_bootstrap,
        seed=int(seed), per_class=per_class, summary=summary, calibration=calibration, curves=curves,
        training=training, warnings=warnings,
    )

"""Subgroup (bias) audit: does the model work equally across age band, sex, view and site?

Per subgroup: AUROC with bootstrap 95 % CI, sensitivity / specificity at the operating threshold, ECE. A
subgroup is flagged only when the model does WORSE there: its AUROC is more than ``max_drop`` below the overall
value, or its whole CI lies below the overall AUROC. A group that does better (CI wholly above overall) is not a
bias finding against that group; it is reported under ``notes`` as information (it usually means another group
is dragging the overall value down, which that group's own flag shows).

Equalized-odds difference (largest TPR gap and FPR gap between judged groups) is computed from the same
confusion matrices (scikit-learn, via ``binary_rates``) rather than adding fairlearn: it is two max-minus-min
differences over numbers we already have. Groups too small to judge are reported, not hidden.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from radiolens.errors import ManifestError
from radiolens.evaluate.bootstrap import auroc_with_ci
from radiolens.evaluate.calibration import expected_calibration_error
from radiolens.evaluate.metrics import binary_rates
from radiolens.models.population import AGE_BANDS

#: Groups a column is expected to have: one with no cases is listed as "0 cases" (too small to judge) rather
#: than silently missing, e.g. the paediatric band of an adult-only set like NIH ChestX-ray14.
EXPECTED_GROUPS: dict[str, tuple[str, ...]] = {"age_band": AGE_BANDS}


def age_band(age: pd.Series) -> pd.Series:
    a = pd.to_numeric(age, errors="coerce")
    band = pd.Series(pd.NA, index=age.index, dtype="object")
    band[a < 18] = AGE_BANDS[0]
    band[(a >= 18) & (a < 65)] = AGE_BANDS[1]
    band[a >= 65] = AGE_BANDS[2]
    return band


def subgroup_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """The grouping values for ``column``; ``age_band`` is derived from an ``age`` column."""
    if column == "age_band" and "age_band" not in frame.columns:
        if "age" not in frame.columns:
            raise ManifestError("age_band needs an 'age' column in the manifest")
        return age_band(frame["age"])
    if column not in frame.columns:
        raise ManifestError(f"manifest has no column '{column}'; available: {', '.join(map(str, frame.columns))}")
    return frame[column].astype("object").where(frame[column].notna(), pd.NA)


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict:
    auc, lo, hi = auroc_with_ci(y, p, n_bootstrap=n_boot, seed=seed)
    rates = binary_rates(y, p, threshold)
    fpr = None if rates["specificity"] is None else 1.0 - rates["specificity"]
    return {"n": int(len(y)), "n_positive": int(y.sum()), "auroc": auc, "auroc_lower": lo, "auroc_upper": hi,
            "sensitivity": rates["sensitivity"], "specificity": rates["specificity"], "fpr": fpr,
            "ece": float(expected_calibration_error(y, p)) if len(y) else None}


def judge_group(row: dict, overall_auroc: float | None, max_drop: float) -> tuple[list[str], list[str]]:
    """(flags, notes) for one judged group: flags name underperformance only (AUROC more than ``max_drop``
    below ``overall_auroc``, or the whole 95 % CI below it); a CI wholly above overall becomes a note."""
    flags: list[str] = []
    notes: list[str] = []
    auc = row.get("auroc")
    if overall_auroc is None or auc is None:
        return flags, notes
    if auc < overall_auroc - max_drop:
        flags.append(f"AUROC {auc:.3f} is more than {max_drop} below overall {overall_auroc:.3f}")
    lo, hi = row.get("auroc_lower"), row.get("auroc_upper")
    if lo is None or hi is None:
        return flags, notes
    ci = f"95% CI [{lo:.3f}, {hi:.3f}]"
    if hi < overall_auroc:
        flags.append(f"{ci} lies below overall {overall_auroc:.3f}")
    elif lo > overall_auroc:
        notes.append(f"performs better than overall: {ci} lies above overall {overall_auroc:.3f} (information, "
                     "not a bias finding)")
    return flags, notes


def rejudge(audit: dict) -> dict:
    """The audit with every judged group's status, flags and notes derived again from its stored numbers, so a
    file written by an older version (which also flagged groups doing better than overall) reads correctly."""
    overall = (audit.get("overall") or {}).get("auroc")
    max_drop = audit.get("max_drop", 0.05)
    for block in (audit.get("columns") or {}).values():
        for row in block.get("groups", []):
            if row.get("status") in ("ok", "flagged"):
                flags, notes = judge_group(row, overall, max_drop)
                row.update(status="flagged" if flags else "ok", flags=flags, notes=notes)
    return audit


def audit_subgroups(y: np.ndarray, p: np.ndarray, frame: pd.DataFrame, columns: list[str], threshold: float = 0.5,
                    *, max_drop: float = 0.05, min_cases: int = 30, min_positives: int = 5,
                    n_bootstrap: int = 1000, seed: int = 0,
                    expected_groups: dict[str, tuple[str, ...]] | None = None) -> dict:
    """Binary labels ``y``, probabilities ``p`` and one manifest row per case -> a JSON-ready audit dict.

    ``expected_groups`` (default :data:`EXPECTED_GROUPS`) names groups per column that are reported even when
    no case falls in them."""
    expected = EXPECTED_GROUPS if expected_groups is None else expected_groups
    y = np.asarray(y).astype(int).reshape(-1)
    p = np.asarray(p, dtype=float).reshape(-1)
    if len(y) != len(p) or len(y) != len(frame):
        raise ManifestError(f"labels ({len(y)}), probabilities ({len(p)}) and manifest rows ({len(frame)}) differ")
    frame = frame.reset_index(drop=True)
    overall = _metrics(y, p, threshold, n_bootstrap, seed)
    out = {"threshold": threshold, "overall": overall, "max_drop": max_drop, "min_cases": min_cases,
           "min_positives": min_positives, "columns": {}}
    for col in columns:
        values = subgroup_column(frame, col)
        rows = []
        present = list(values.dropna().unique())
        seen = {str(g) for g in present}
        absent = [g for g in expected.get(col, ()) if g not in seen]
        for g in sorted(present + absent, key=str):
            m = (values == g).to_numpy(dtype=bool)
            yg, pg = y[m], p[m]
            n_pos, n_neg = int(yg.sum()), int(len(yg) - yg.sum())
            row = {"group": str(g)}
            if len(yg) < min_cases or n_pos < min_positives or n_neg < min_positives:
                reason = ("0 cases: none of this group in the data" if len(yg) == 0 else
                          f"{len(yg)} cases, {n_pos} positives")
                row.update(n=int(len(yg)), n_positive=n_pos, status="too small to judge",
                           reason=f"{reason} (need >= {min_cases} cases and >= {min_positives} of each class)")
                rows.append(row)
                continue
            row.update(_metrics(yg, pg, threshold, n_bootstrap, seed))
            flags, notes = judge_group(row, overall["auroc"], max_drop)
            row.update(status="flagged" if flags else "ok", flags=flags, notes=notes)
            rows.append(row)
        missing = int(values.isna().sum())
        judged = [r for r in rows if r["status"] != "too small to judge"]
        tprs = [r["sensitivity"] for r in judged if r["sensitivity"] is not None]
        fprs = [r["fpr"] for r in judged if r["fpr"] is not None]
        tpr_gap = max(tprs) - min(tprs) if len(tprs) >= 2 else None
        fpr_gap = max(fprs) - min(fprs) if len(fprs) >= 2 else None
        eod = None if tpr_gap is None or fpr_gap is None else max(tpr_gap, fpr_gap)
        out["columns"][col] = {"groups": rows, "missing_values": missing, "tpr_gap": tpr_gap, "fpr_gap": fpr_gap,
                               "equalized_odds_difference": eod}
    return out


def subgroup_table(audit: dict) -> pd.DataFrame:
    """Flat table (one row per column x group) for printing and the model card."""
    recs = []
    for col, block in audit["columns"].items():
        for r in block["groups"]:
            recs.append({"column": col, **{k: v for k, v in r.items() if k not in ("flags", "notes")},
                         "flags": "; ".join(r.get("flags", [])), "notes": "; ".join(r.get("notes", []))})
    return pd.DataFrame(recs)

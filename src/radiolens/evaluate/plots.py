"""Matplotlib figures of the report, returned as ``data:`` URIs so the HTML needs no side files.

Headless by construction (Agg backend, no pyplot state machine), so it runs in a server or CI job.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from radiolens.evaluate.curves import smooth, window

_DPI = 100


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(n: int, cell: float = 3.2, max_cols: int = 4) -> tuple[Figure, list]:
    if n == 1:
        cell *= 1.5
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cell * cols, cell * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    fig.subplots_adjust(wspace=0.35, hspace=0.45)
    return fig, axes


def _fmt_ci(interval: dict) -> str:
    if interval.get("estimate") is None:
        return "undefined"
    if interval.get("lower") is None:
        return f"{interval['estimate']:.3f}"
    return f"{interval['estimate']:.3f} ({interval['lower']:.3f}-{interval['upper']:.3f})"


def roc_figure(per_class: list[dict], curves: dict) -> Figure:
    fig, axes = _grid(len(per_class))
    for ax, entry in zip(axes, per_class, strict=True):
        pts = curves.get(entry["name"], {}).get("roc")
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
        if pts:
            ax.plot(pts["fpr"], pts["tpr"], color="C0", lw=1.8)
            at = entry["at_threshold"]
            if at["sensitivity"] is not None and at["specificity"] is not None:
                ax.plot([1 - at["specificity"]], [at["sensitivity"]], "o", color="C3", label="operating point")
                ax.legend(loc="lower right", fontsize=7)
        else:
            reason = (entry["auroc"].get("reason") or "").removeprefix("undefined: ")
            ax.text(0.5, 0.5, "undefined:\n" + reason.replace(" in this set", "\nin this set"), ha="center",
                    va="center", fontsize=8)
        ax.set_title(f"{entry['name']}\nAUROC {_fmt_ci(entry['auroc'])}", fontsize=9)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.tick_params(labelsize=7)
    return fig


def pr_figure(per_class: list[dict], curves: dict) -> Figure:
    fig, axes = _grid(len(per_class))
    for ax, entry in zip(axes, per_class, strict=True):
        pts = curves.get(entry["name"], {}).get("pr")
        if pts:
            ax.plot(pts["recall"], pts["precision"], color="C2", lw=1.8)
            ax.axhline(pts["prevalence"], ls=":", color="grey", lw=1, label=f"prevalence {pts['prevalence']:.2f}")
            ax.legend(loc="lower left", fontsize=7)
        else:
            ax.text(0.5, 0.5, "undefined", ha="center", va="center", fontsize=8)
        ax.set_title(f"{entry['name']}\nAP {_fmt_ci(entry['average_precision'])}", fontsize=9)
        ax.set_xlabel("recall (sensitivity)", fontsize=8)
        ax.set_ylabel("precision (PPV)", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.tick_params(labelsize=7)
    return fig


def _matrix(ax, cm: np.ndarray, row_labels: list[str], col_labels: list[str], title: str) -> None:
    ax.imshow(cm, cmap="Blues")
    vmax = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9,
                    color="white" if vmax and cm[i, j] > vmax / 2 else "black")
    ax.set_xticks(range(len(col_labels)), col_labels, fontsize=7, rotation=30 if len(col_labels) > 2 else 0)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=9)


def per_class_confusion_figure(per_class: list[dict]) -> Figure:
    fig, axes = _grid(len(per_class), cell=2.6)
    for ax, entry in zip(axes, per_class, strict=True):
        labels = [f"not {entry['name']}", entry["name"]]
        _matrix(ax, np.asarray(entry["confusion_matrix"]), labels, labels,
                f"{entry['name']} @ {entry['threshold']:.3g}")
    return fig


def argmax_confusion_figure(cm: list[list[int]], class_names: list[str]) -> Figure:
    size = max(3.5, 0.7 * len(class_names) + 2)
    fig = Figure(figsize=(size, size))
    _matrix(fig.add_subplot(1, 1, 1), np.asarray(cm), class_names, class_names, "argmax decision")
    return fig


def reliability_diagram(series: dict[str, dict], title: str = "Reliability diagram") -> Figure:
    """One reliability diagram; ``series`` maps a label (e.g. "before T", "after T") to the output of
    ``radiolens.evaluate.calibration.reliability_bins``. Bars below show how many cases fall in each bin."""
    fig = Figure(figsize=(5, 5.6))
    ax = fig.add_axes((0.12, 0.32, 0.8, 0.6))
    hist = fig.add_axes((0.12, 0.08, 0.8, 0.16), sharex=ax)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    n_series = max(len(series), 1)
    for i, (label, bins) in enumerate(series.items()):
        ax.plot(bins["mean_predicted"], bins["observed_fraction"], "o-", color=f"C{i}", lw=1.5, ms=4, label=label)
        width = 0.9 / bins["n_bins"] / n_series  # side-by-side bars within each bin
        centres = np.asarray(bins.get("bin_centres", bins["mean_predicted"]), dtype=float)
        hist.bar(centres + (i - (n_series - 1) / 2) * width, bins["bin_counts"], width=width, color=f"C{i}", alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(labelbottom=False, labelsize=8)
    hist.set_xlabel("predicted probability", fontsize=9)
    hist.set_ylabel("cases", fontsize=8)
    hist.tick_params(labelsize=7)
    return fig


def training_figure(history: list[dict], diagnosis: dict) -> Figure | None:
    def series(key):
        pts = [(row.get("epoch", i), row[key]) for i, row in enumerate(history)
               if row.get(key) is not None and np.isfinite(float(row[key]))]
        return [p[0] for p in pts], [float(p[1]) for p in pts]

    panels = [("loss", ["train_loss", "val_loss"]), ("validation AUROC", ["val_auroc"]), ("learning rate", ["lr"])]
    panels = [(t, [k for k in keys if series(k)[0]]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys and not (keys == ["lr"] and len(set(series("lr")[1])) == 1)]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    for n, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), n + 1)
        for key in keys:
            x, y = series(key)
            line = ax.plot(x, y, "o-", ms=3, lw=1.5, label=key.replace("_", " "))[0]
            w = window(len(y))
            if key == "val_loss" and w > 1:  # what diagnose_training judged
                ax.plot(x, smooth(y, w), "-", lw=2.5, alpha=0.45, color=line.get_color(),
                        label=f"val loss, {w}-epoch average")
        if diagnosis.get("overfit_from_epoch") is not None:
            ax.axvline(diagnosis["overfit_from_epoch"], color="C3", ls="--", lw=1, label="over-fitting starts")
        elif diagnosis.get("best_epoch") is not None:
            ax.axvline(diagnosis["best_epoch"], color="grey", ls=":", lw=1, label="best epoch")
        if title == "learning rate":
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3)
    return fig


def risk_coverage_figure(rc: dict, referral_rate: float | None = None,
                         title: str = "Risk-coverage on test") -> Figure:
    """Error rate on the kept cases against the share kept (``radiolens.explain.triage.risk_coverage`` output);
    the dashed line marks the fitted triage rule's coverage, the dotted one the error with nothing referred."""
    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    cov, risk = np.asarray(rc["coverage"], dtype=float), np.asarray(rc["risk"], dtype=float)
    ax.plot(cov, risk, color="C0", lw=1.8, label=f"AURC {rc['aurc']:.3f}")
    if len(risk):
        ax.axhline(risk[-1], ls=":", color="grey", lw=1, label=f"no referral: error {risk[-1]:.3f}")
    if referral_rate is not None:
        ax.axvline(1 - referral_rate, ls="--", color="C3", lw=1,
                   label=f"triage rule: {100 * referral_rate:.1f} % referred")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (share of cases the model keeps)", fontsize=9)
    ax.set_ylabel("error rate on kept cases", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    return fig

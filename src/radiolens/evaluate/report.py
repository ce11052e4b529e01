"""Writing the evaluation as one self-contained HTML file (figures inlined) plus the same numbers as JSON.

Self-contained on purpose: a report is e-mailed, attached to a model card or archived next to a model, and
must still open years later without a folder of images or a network connection.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from radiolens import __version__
from radiolens.evaluate import plots
from radiolens.evaluate.result import EvaluationResult, json_safe
from radiolens.evaluate.templating import render

TEMPLATE = "report.html"


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(interval: dict | None) -> str:
    if not interval or interval.get("estimate") is None:
        reason = (interval or {}).get("reason") or "undefined"
        return f"undefined ({html.escape(reason.removeprefix('undefined: '))})"
    text = f"{interval['estimate']:.3f}"
    if interval.get("lower") is not None:
        text += f" [{interval['lower']:.3f}, {interval['upper']:.3f}]"
        if "not reliable" in (interval.get("reason") or ""):
            text += " *"
    elif (interval.get("reason") or "").startswith("no interval"):
        text += " (no CI: too few cases)"
    return text


def _rate(value, ci) -> str:
    if value is None:
        return "—"
    if not ci or ci[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


FILTERS = {"fmt": _fmt, "ci": _ci, "rate": _rate}


def _figures(result: EvaluationResult) -> dict[str, str]:
    figs: dict[str, str] = {}
    figs["roc"] = plots.to_data_uri(plots.roc_figure(result.per_class, result.curves))
    figs["pr"] = plots.to_data_uri(plots.pr_figure(result.per_class, result.curves))
    figs["confusion"] = plots.to_data_uri(plots.per_class_confusion_figure(result.per_class))
    if result.task == "multiclass":
        figs["argmax"] = plots.to_data_uri(
            plots.argmax_confusion_figure(result.summary["argmax"]["confusion_matrix"], result.class_names))
    cal = result.calibration
    figs["reliability"] = plots.to_data_uri(plots.reliability_diagram(
        {"before temperature scaling": cal["reliability_before"],
         f"after (T = {result.temperature:.2f})": cal["reliability_after"]},
        title=f"Reliability on test ({cal['view']})"))
    training = plots.training_figure(result.training["history"], result.training["diagnosis"])
    if training is not None:
        figs["training"] = plots.to_data_uri(training)
    return figs


def render_html(result: EvaluationResult, title: str = "Evaluation report", model_info: dict | None = None,
                triage: dict | None = None, examples: list[dict] | None = None) -> str:
    """``triage``: a ``radiolens triage-fit`` triage.json; adds the rule and its test risk-coverage curve.
    ``examples``: thumbnails of the most confident errors (:func:`radiolens.evaluate.error_examples.thumbnails`)."""
    figs = _figures(result)
    rc = (triage or {}).get("risk_coverage_test")
    if rc and rc.get("coverage"):
        figs["risk_coverage"] = plots.to_data_uri(
            plots.risk_coverage_figure(rc, (triage.get("test") or {}).get("referral_rate")))
    return render(
        "radiolens.evaluate", TEMPLATE, FILTERS, title=title, r=result.to_dict(),
        model_info=json_safe(model_info or {}), figs=figs, triage=json_safe(triage) if triage else None,
        examples=list(examples or []),
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), version=__version__,
    )


def write_report(result: EvaluationResult, out_dir: str | Path, title: str = "Evaluation report",
                 model_info: dict | None = None, triage: dict | None = None,
                 examples: list[dict] | None = None) -> dict[str, Path]:
    """Write ``report.html`` and ``metrics.json`` into ``out_dir`` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    payload["title"] = title
    payload["model_info"] = json_safe(model_info or {})
    if triage:
        payload["triage"] = json_safe(triage)
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=False), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(result, title, model_info, triage, examples), encoding="utf-8")
    return {"html": html_path, "json": json_path}

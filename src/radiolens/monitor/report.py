"""``radiolens monitor report``: every monitored signal over time, with the alert history, as one
self-contained HTML file (figures inlined) plus the same numbers as JSON.

The history is recomputed from the stored monitoring records: the window is slid over them exactly as the
service does (every ``check_every`` predictions), so the report shows what the live checks saw.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from radiolens import __version__
from radiolens.evaluate.plots import to_data_uri
from radiolens.evaluate.templating import render
from radiolens.monitor.config import DriftConfig
from radiolens.monitor.drift import DRIFT, INSUFFICIENT, WindowReport, evaluate_window
from radiolens.monitor.profile import MonitoringProfile

if TYPE_CHECKING:
    from radiolens.models.bundle import ModelBundle


@dataclass
class StoredObservation:
    prediction_id: str
    created_at: str  # ISO 8601 UTC
    record: dict[str, Any]
    agree: bool | None = None  # latest reader feedback, if any



def current_window(profile: MonitoringProfile, observations: list[StoredObservation],
                   cfg: DriftConfig) -> WindowReport:
    """The most recent window (the last ``cfg.window`` observations) against the baseline, with the reader
    disagreement of the observations that have feedback: what ``monitor status`` shows."""
    win = observations[-cfg.window:]
    answered = [o.agree for o in win if o.agree is not None]
    return evaluate_window(profile, [o.record for o in win], cfg, (len(answered), answered.count(False)))


def model_reference(bundle: ModelBundle) -> dict[str, Any]:
    """Name, version, sha256, architecture and task of the monitored model, as the report shows them."""
    info = bundle.info
    return {"name": info.name, "version": str(info.version), "sha256": bundle.sha256, "arch": info.arch,
            "task": info.task}

def replay(profile: MonitoringProfile, observations: list[StoredObservation], cfg: DriftConfig,
           step: int | None = None) -> list[WindowReport]:
    """Window reports at every ``step`` observations (oldest first), as the live checks computed them."""
    step = step or cfg.check_every
    reports = []
    for end in range(step, len(observations) + 1, step):
        win = observations[max(0, end - cfg.window):end]
        answered = [o.agree for o in win if o.agree is not None]
        rep = evaluate_window(profile, [o.record for o in win], cfg, (len(answered), answered.count(False)),
                              seed=end)
        rep.first_id, rep.last_id = win[0].prediction_id, win[-1].prediction_id
        rep.first_at, rep.last_at = win[0].created_at, win[-1].created_at
        reports.append(rep)
    return reports


_FAMILIES = [
    ("Calibrated probabilities (KS)", lambda n: n.startswith("probability:")),
    ("Image statistics (KS)", lambda n: n.startswith("image:")),
    ("Input gate: OOD score (KS) and rejection rate (binomial)", lambda n: n in ("ood_score", "ood_rate")),
    ("Model embedding (MMD permutation test)", lambda n: n == "embedding"),
    ("Header fields and intensity histogram (PSI)", lambda n: n.startswith("header:") or n == "intensity_histogram"),
    ("Reader disagreement", lambda n: n == "disagreement"),
]


def _plot_value(sig) -> float | None:
    """What is plotted against its limit: -log10 p for tests, the statistic for PSI and rates."""
    if sig.test in ("ks", "mmd", "binomial"):
        return None if sig.p_value is None else -np.log10(max(sig.p_value, 1e-300))
    return sig.statistic


def _plot_limit(sig) -> float | None:
    if sig.limit is None:
        return None
    return -np.log10(sig.limit) if sig.test in ("ks", "mmd", "binomial") else sig.limit


def family_figure(title: str, match, reports: list[WindowReport], alerts: list[dict[str, Any]]) -> Figure | None:
    names = sorted({s.name for r in reports for s in r.signals if match(s.name)})
    if not names:
        return None
    fig = Figure(figsize=(9, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(1, len(reports) + 1)
    limits, plotted = set(), 0
    for name in names:
        ys, lim = [], None
        for r in reports:
            sig = next((s for s in r.signals if s.name == name), None)
            v = None if sig is None or sig.status == INSUFFICIENT else _plot_value(sig)
            ys.append(np.nan if v is None else min(v, 50.0))
            if sig is not None and _plot_limit(sig) is not None:
                lim = _plot_limit(sig)
        if np.all(np.isnan(ys)):
            continue
        ax.plot(x, ys, lw=1.2, label=name)
        plotted += 1
        if lim is not None:
            limits.add(round(float(lim), 6))
    for lim in sorted(limits):
        ax.axhline(lim, color="red", ls="--", lw=0.8)
    by_last = {r.last_id: i + 1 for i, r in enumerate(reports)}
    for a in alerts:
        pos = by_last.get((a.get("window") or {}).get("last_id"))
        if pos is not None and match(a.get("signal", "")):
            ax.axvline(pos, color="darkred" if a["event"] == "drift_alert" else "green", lw=0.8, alpha=0.6)
    uses_p = any(s.test in ("ks", "mmd", "binomial") for r in reports for s in r.signals if match(s.name))
    ax.set_ylabel("-log10 p (tests)" if uses_p else "statistic")
    ax.set_xlabel("check (every window of recent predictions)")
    ax.set_title(title + " — dashed red: alert limit; vertical lines: alerts raised (red) / cleared (green)",
                 fontsize=9)
    if not plotted:
        return None
    if plotted <= 14:
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    return fig


def status_figure(reports: list[WindowReport]) -> Figure:
    fig = Figure(figsize=(9, 1.4))
    ax = fig.add_subplot(1, 1, 1)
    colours = {"ok": "#2e7d32", DRIFT: "#c62828", INSUFFICIENT: "#9e9e9e"}
    for i, r in enumerate(reports):
        ax.bar(i + 1, 1, width=1.0, color=colours[r.status])
    ax.set_yticks([])
    ax.set_xlabel("check")
    ax.set_title("window status: green ok, red drift, grey insufficient data", fontsize=9)
    return fig


def build_report(profile: MonitoringProfile | None, observations: list[StoredObservation], cfg: DriftConfig,
                 alerts: list[dict[str, Any]], model: dict[str, Any]) -> dict[str, Any]:
    """The report's content as plain data (written as JSON, rendered as HTML)."""
    reports = replay(profile, observations, cfg) if profile is not None and observations else []
    counts = {s: sum(1 for r in reports if r.status == s) for s in ("ok", DRIFT, INSUFFICIENT)}
    return {"generated_at": time.time(), "radiolens_version": __version__, "model": model,
            "baseline": profile.summary() if profile else None, "config": cfg.model_dump(exclude={"webhook_url"}),
            "n_predictions": len(observations),
            "n_rejected": sum(1 for o in observations if o.record.get("status") != "ok"),
            "n_feedback": sum(1 for o in observations if o.agree is not None),
            "first_at": observations[0].created_at if observations else None,
            "last_at": observations[-1].created_at if observations else None,
            "window_counts": counts, "checks": [r.as_dict() for r in reports], "alerts": alerts,
            "_reports": reports}


def write_report(content: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports: list[WindowReport] = content.pop("_reports")
    figures = []
    if reports:
        figures.append(("Window status", to_data_uri(status_figure(reports))))
        for title, match in _FAMILIES:
            fig = family_figure(title, match, reports, content["alerts"])
            if fig is not None:
                figures.append((title, to_data_uri(fig)))
    page = render("radiolens.monitor", "monitor_report.html", c=content, figures=figures,
                  latest=content["checks"][-1] if content["checks"] else None, esc=html.escape)
    html_path, json_path = out / "monitoring_report.html", out / "monitoring_report.json"
    html_path.write_text(page, encoding="utf-8")
    json_path.write_text(json.dumps(content, indent=1, default=str), encoding="utf-8")
    return html_path, json_path

"""Monitoring inside the service: one monitoring record per prediction (from the pipeline's record: its
input-gate outcome, probabilities and embedding; stored in the prediction's own transaction, so none is
lost), input-gate rejection counts, periodic drift checks of the most recent window against the model's
validation baseline, and alerts. The input gate itself runs in the pipeline (:mod:`radiolens.pipeline`).

The monitor is given what it needs (database engine and sessions, metrics registry, the model's sha256,
profile, gate and reference), not the service, so it depends on nothing above it.

Alerts are audit-log events (``drift_alert`` / ``drift_cleared``, hash-chained like predictions), so the
alert history is as tamper-evident as the predictions themselves, and the set of active alerts is derived
from the log inside the audit write lock: several worker processes never raise the same alert twice.
Drift checks run on one background thread, off the request path; a check already queued absorbs the next
trigger rather than piling up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from radiolens.monitor import (
    CLEARED,
    RAISED,
    AlertTracker,
    InputGate,
    MonitorConfig,
    MonitoringProfile,
    WindowReport,
    evaluate_window,
)
from radiolens.monitor.alerts import active_alerts as fold_active_alerts
from radiolens.monitor.drift import INSUFFICIENT
from radiolens.monitor.observe import observation
from radiolens.monitor.report import StoredObservation
from radiolens.serve.runtime.hooks import PredictionContext, PredictionHooks
from radiolens.serve.store import audit
from radiolens.serve.store.tables import AuditEntry, Feedback, MonitoringRecord

log = logging.getLogger("radiolens.serve")
SYSTEM_USER, SYSTEM_ROLE = 0, "system"
ALERT_EVENTS = (RAISED, CLEARED)


def _iso_utc(dt: datetime) -> str:
    if dt.tzinfo is None:  # SQLite hands back naive UTC datetimes, PostgreSQL aware ones
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass
class LastCheck:
    at: float
    report: WindowReport
    transitions: list[dict[str, Any]]


class ServiceMonitor:
    def __init__(self, cfg: MonitorConfig, *, engine: Engine, sessions: sessionmaker[Session],
                 registry: CollectorRegistry, model_sha256: str, profile: MonitoringProfile | None,
                 gate: InputGate | None = None, model_ref: Callable[[], dict[str, Any]] = dict):
        """``gate``: the input gate the pipeline applies (for the status page); ``model_ref``: the served model's
        reference (``Service.model_ref``) for the status page and alert webhooks."""
        self.cfg, self.engine, self.sessions, self.model_ref = cfg, engine, sessions, model_ref
        self.model_sha = model_sha256
        self.profile = profile
        self.gate = gate or InputGate(cfg.gate, profile.density if profile else None,
                                      profile.observed if profile else None)
        self.tracker = AlertTracker(cfg.drift.consecutive)
        self.last: LastCheck | None = None
        self._lock = threading.Lock()
        self._count = 0
        self._pending = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radiolens-monitor")
        reg = registry
        # With several workers (prometheus multiprocess mode, see serve/metrics.py) counters are summed over the
        # workers. The drift gauges are "mostrecent": every worker checks the same window of the shared database
        # and derives active alerts from the shared audit log, so the newest check by any worker is the current
        # answer (sum would multiply it by the workers, max would keep an alert another worker has cleared since).
        # Not the "live" variant: a worker that exited after the newest check still gave the newest answer.
        self.m_rejections = Counter("radiolens_input_gate_rejections_total",
                                    "Uploads the input gate answered as out of distribution", ["rule"], registry=reg)
        self.m_stat = Gauge("radiolens_drift_statistic", "Latest drift statistic per signal (KS D, PSI, MMD^2, rate)",
                            ["signal", "test"], registry=reg, multiprocess_mode="mostrecent")
        self.m_p = Gauge("radiolens_drift_p_value", "Latest drift p-value per tested signal", ["signal"], registry=reg,
                         multiprocess_mode="mostrecent")
        self.m_active = Gauge("radiolens_drift_alert_active", "1 while a drift alert is active for the signal",
                              ["signal"], registry=reg, multiprocess_mode="mostrecent")
        self.m_alerts = Counter("radiolens_drift_alerts_total", "Drift alerts raised", ["signal"], registry=reg)
        self.m_window = Gauge("radiolens_drift_window_predictions", "Predictions in the latest drift window",
                              registry=reg, multiprocess_mode="mostrecent")
        self.m_status = Gauge("radiolens_drift_window_status", "1 for the latest window's status",
                              ["status"], registry=reg, multiprocess_mode="mostrecent")
        self._alert_signals: set[str] = set()  # signals this process has written an alert-active value for
        self.m_webhook_failures = Counter("radiolens_alert_webhook_failures_total",
                                          "Alert webhook deliveries that failed", registry=reg)

    # ------------------------------------------------------------------ hooks on the prediction path
    def hooks(self) -> PredictionHooks:
        return PredictionHooks(inference_hooks=[self._observe], result_hooks=[self._annotate],
                               record_hooks=[self._record], after_commit=[self._after_commit])

    def _observe(self, ctx: PredictionContext) -> None:
        # the observation is computed here, outside the database transaction (which holds the audit write lock)
        record = ctx.record
        emb = None if record.embedding is None else np.atleast_2d(record.embedding)
        projection = self.profile.density.project(emb)[0] if self.profile is not None and emb is not None else None
        ctx.extra["observation"] = observation(ctx.image, record.probabilities, projection, record.gate.ood_score,
                                               record.gate.status)

    def _annotate(self, ctx: PredictionContext, result: dict[str, Any]) -> None:
        gate = ctx.record.gate.to_dict()
        gate.pop("mode", None)  # the status page says which gate applies; a response keeps the verdict
        result.setdefault("monitoring", {})["gate"] = gate

    def _record(self, session: Session, ctx: PredictionContext, result: dict[str, Any]) -> None:
        obs = ctx.extra["observation"]
        session.add(MonitoringRecord(prediction_id=ctx.prediction_id, created_at=audit.utcnow(),
                                     model_sha256=self.model_sha, status=obs["status"], ood_score=obs["ood_score"],
                                     record_json=audit.canonical_json(obs)))

    def _after_commit(self, ctx: PredictionContext, result: dict[str, Any]) -> None:
        gate = ctx.record.gate
        if not gate.passed:
            learned = any(r.startswith("outside what this model") for r in gate.reasons)
            header = len(gate.reasons) > int(learned)
            for rule, hit in (("header", header), ("learned_score", learned)):
                if hit:
                    self.m_rejections.labels(rule).inc()
        with self._lock:
            self._count += 1
            due = self.profile is not None and self._count % self.cfg.drift.check_every == 0
            if due and not self._pending:
                self._pending = True
                self._executor.submit(self._background_check)

    def _background_check(self) -> None:
        try:
            self.check()
        except Exception as exc:  # never let monitoring take predictions down; say so in the log
            log.error("drift check failed (%s)", type(exc).__name__)
        finally:
            with self._lock:
                self._pending = False

    # ------------------------------------------------------------------ drift checks
    def window(self, session: Session) -> tuple[list[dict[str, Any]], list[MonitoringRecord]]:
        rows = list(session.scalars(select(MonitoringRecord).where(MonitoringRecord.model_sha256 == self.model_sha)
                                    .order_by(MonitoringRecord.id.desc()).limit(self.cfg.drift.window)))
        rows.reverse()
        return [json.loads(r.record_json) for r in rows], rows

    @staticmethod
    def feedback_counts(session: Session, prediction_ids: list[str]) -> tuple[int, int]:
        """(answers, disagreements) over the window's predictions, the latest answer per prediction."""
        latest: dict[str, bool] = {}
        for i in range(0, len(prediction_ids), 500):
            chunk = prediction_ids[i:i + 500]
            for fb in session.scalars(select(Feedback).where(Feedback.prediction_id.in_(chunk)).order_by(Feedback.id)):
                latest[fb.prediction_id] = bool(fb.agree)
        return len(latest), sum(1 for agree in latest.values() if not agree)

    def evaluate(self) -> WindowReport:
        """The current window against the baseline, without raising or clearing alerts."""
        if self.profile is None:
            return WindowReport(INSUFFICIENT, 0, reason="the model has no monitoring baseline: register one with "
                                "`radiolens monitor baseline`")
        with Session(self.engine) as s:
            obs, rows = self.window(s)
            feedback = self.feedback_counts(s, [r.prediction_id for r in rows])
        report = evaluate_window(self.profile, obs, self.cfg.drift, feedback)
        if rows:
            report.first_id, report.last_id = rows[0].prediction_id, rows[-1].prediction_id
            report.first_at, report.last_at = _iso_utc(rows[0].created_at), _iso_utc(rows[-1].created_at)
        return report

    def check(self) -> LastCheck:
        """Evaluate the window, then raise/clear alerts (audit rows, metrics, webhook)."""
        report = self.evaluate()
        self._gauges(report)
        transitions: list[dict[str, Any]] = []
        if self.profile is not None:
            with audit.writer(self.sessions) as s:
                active = self.active_alerts(s)
                for t in self.tracker.update(report, set(active)):
                    payload = {"signal": t.signal.name, "test": t.signal.test, "statistic": t.signal.statistic,
                               "p_value": t.signal.p_value, "limit": t.signal.limit, "detail": t.signal.detail,
                               "window": {"n": report.n, "first_id": report.first_id, "last_id": report.last_id,
                                          "first_at": report.first_at, "last_at": report.last_at}}
                    row = audit.append(s, audit.AuditEvent(t.kind, SYSTEM_USER, SYSTEM_ROLE, report.last_id or "",
                                                           self.model_sha, "", "", payload, 0.0))
                    transitions.append({"event": t.kind, "audit_seq": int(row.seq), "created_at":
                                        _iso_utc(row.created_at), **json.loads(audit.canonical_json(payload))})
        for t in transitions:
            if t["event"] == RAISED:
                self.m_alerts.labels(t["signal"]).inc()
            log.warning("monitoring: %s for %s (%s)", t["event"], t["signal"], t["detail"] or t["test"])
            if self.cfg.drift.webhook_url:
                self._executor.submit(self._post_webhook, t)
        with Session(self.engine) as s:
            active_now = self.active_alerts(s)
        self._alert_gauges(report, set(active_now))
        self.last = LastCheck(time.time(), report, transitions)
        return self.last

    def _gauges(self, report: WindowReport) -> None:
        self.m_window.set(report.n)
        for status in ("ok", "drift", INSUFFICIENT):
            self.m_status.labels(status).set(1 if report.status == status else 0)
        for sig in report.signals:
            if sig.statistic is not None:
                self.m_stat.labels(sig.name, sig.test).set(sig.statistic)
            if sig.p_value is not None:
                self.m_p.labels(sig.name).set(sig.p_value)

    def _alert_gauges(self, report: WindowReport, active_now: set[str]) -> None:
        # Every known signal is written (0 or 1) rather than clearing the label set: multiprocess mode cannot
        # remove a series, and a newest 0 is what overrides another worker's older 1 once an alert clears.
        known = self._alert_signals = self._alert_signals | {sig.name for sig in report.signals} | active_now
        for name in known:  # a new set each time: a concurrent check (refresh=true) never sees one change
            self.m_active.labels(name).set(1 if name in active_now else 0)

    def active_alerts(self, session: Session) -> dict[str, dict[str, Any]]:
        """Signal -> the alert event that raised it, for every alert not cleared since (this model only): the
        monitor's fold (:func:`radiolens.monitor.alerts.active_alerts`) of the audit log's alert events, read in
        the caller's session (inside the audit write lock when alerts are about to be written)."""
        q = (select(AuditEntry).where(AuditEntry.event.in_(ALERT_EVENTS), AuditEntry.model_sha256 == self.model_sha)
             .order_by(AuditEntry.seq))
        return fold_active_alerts(_alert_event(row) for row in session.scalars(q))

    def alert_history(self, limit: int = 100) -> list[dict[str, Any]]:
        return alert_events(self.engine, limit=limit, newest_first=True)

    def _post_webhook(self, transition: dict[str, Any]) -> None:
        import httpx

        url = self.cfg.drift.webhook_url or ""
        body = {"source": "radiolens", "model": self.model_ref(), **transition}
        try:
            r = httpx.post(url, json=body, timeout=self.cfg.drift.webhook_timeout_s)
            r.raise_for_status()
        except Exception as exc:
            self.m_webhook_failures.inc()
            log.warning("alert webhook to %s failed (%s)", urlsplit(url).netloc, type(exc).__name__)

    # ------------------------------------------------------------------ reading
    def status(self, refresh: bool = False) -> dict[str, Any]:
        if refresh:
            last = self.check()
            current = last.report
        else:
            last, current = self.last, self.evaluate()
        with Session(self.engine) as s:
            active = self.active_alerts(s)
        drift = self.cfg.drift.model_dump()
        if drift.get("webhook_url"):
            drift["webhook_url"] = urlsplit(drift["webhook_url"]).netloc  # never echo paths/tokens
        return {
            "model": self.model_ref(),
            "baseline": self.profile.summary() if self.profile else None,
            "gate": {"learned_score": self.profile is not None, **self.cfg.gate.model_dump(),
                     "rules": self.gate.rules.as_dict()},
            "config": drift,
            "window": current.as_dict(),
            "last_check": None if last is None else {"at": last.at, "status": last.report.status,
                                                     "transitions": last.transitions},
            "active_alerts": list(active.values()),
            "alert_history": self.alert_history(),
        }

    def close(self) -> None:
        self._executor.shutdown(wait=True)


# ---------------------------------------------------------------------- reading the store (CLI, reports)
def _range(q, column, engine: Engine, since: str | None, until: str | None):
    lo, hi = audit._parse_time(since, "since"), audit._parse_time(until, "until")
    if engine.dialect.name == "sqlite":  # SQLite stores naive UTC strings: compare like with like
        lo = lo.astimezone(UTC).replace(tzinfo=None) if lo else None
        hi = hi.astimezone(UTC).replace(tzinfo=None) if hi else None
    if lo is not None:
        q = q.where(column >= lo)
    if hi is not None:
        q = q.where(column < hi)
    return q


def _alert_event(row: AuditEntry) -> dict[str, Any]:
    """One alert event of the audit log, as the status page and ``radiolens monitor status`` list it."""
    return {"event": row.event, "audit_seq": int(row.seq), "created_at": _iso_utc(row.created_at),
            "model_sha256": row.model_sha256, **json.loads(row.outputs_json)}


def alert_events(engine: Engine, model_sha256: str | None = None, since: str | None = None,
                 until: str | None = None, limit: int | None = None, newest_first: bool = False) -> list[dict]:
    """Drift alert events from the audit log (``since`` inclusive, ``until`` exclusive, ISO 8601, naive = UTC)."""
    q = select(AuditEntry).where(AuditEntry.event.in_(ALERT_EVENTS))
    if model_sha256:
        q = q.where(AuditEntry.model_sha256 == model_sha256)
    q = _range(q, AuditEntry.created_at, engine, since, until)
    q = q.order_by(AuditEntry.seq.desc() if newest_first else AuditEntry.seq)
    if limit:
        q = q.limit(limit)
    with Session(engine) as s:
        return [_alert_event(r) for r in s.scalars(q)]


def stored_observations(engine: Engine, model_sha256: str, since: str | None = None,
                        until: str | None = None) -> list[StoredObservation]:
    """The model's monitoring records in prediction order, each with its latest reader feedback."""
    q = _range(select(MonitoringRecord).where(MonitoringRecord.model_sha256 == model_sha256),
               MonitoringRecord.created_at, engine, since, until).order_by(MonitoringRecord.id)
    with Session(engine) as s:
        rows = list(s.scalars(q))
        latest: dict[str, bool] = {}
        ids = [r.prediction_id for r in rows]
        for i in range(0, len(ids), 500):
            for fb in s.scalars(select(Feedback).where(Feedback.prediction_id.in_(ids[i:i + 500]))
                                .order_by(Feedback.id)):
                latest[fb.prediction_id] = bool(fb.agree)
    return [StoredObservation(r.prediction_id, _iso_utc(r.created_at), json.loads(r.record_json),
                              latest.get(r.prediction_id)) for r in rows]


def stored_status(engine: Engine, profile: MonitoringProfile, model_sha256: str, cfg) -> dict[str, Any]:
    """The most recent window of the model's stored predictions against its baseline, and its active alerts:
    what ``radiolens monitor status`` prints, read from the store without a running service."""
    from radiolens.monitor.report import current_window

    report = current_window(profile, stored_observations(engine, model_sha256), cfg)
    active = fold_active_alerts(alert_events(engine, model_sha256))
    return {"window": report.as_dict(), "active_alerts": list(active.values())}

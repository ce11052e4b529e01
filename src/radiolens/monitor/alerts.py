"""From successive window reports to alert events: raised after ``consecutive`` drifting checks of a signal,
cleared at the first check where that signal is back to normal. An "insufficient data" check changes
nothing: it is neither evidence of drift nor of its absence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from radiolens.monitor.drift import DRIFT, INSUFFICIENT, OK_STATUS, SignalResult, WindowReport

RAISED, CLEARED = "drift_alert", "drift_cleared"


@dataclass
class AlertTransition:
    kind: str  # RAISED | CLEARED
    signal: SignalResult


class AlertTracker:
    def __init__(self, consecutive: int = 3):
        self.consecutive = max(1, int(consecutive))
        self.streak: dict[str, int] = {}

    def update(self, report: WindowReport, active: set[str]) -> list[AlertTransition]:
        """Transitions implied by ``report`` given the currently ``active`` alerts (signal names)."""
        if report.status == INSUFFICIENT:
            return []
        out: list[AlertTransition] = []
        for s in report.signals:
            if s.status == DRIFT:
                self.streak[s.name] = self.streak.get(s.name, 0) + 1
                if self.streak[s.name] >= self.consecutive and s.name not in active:
                    out.append(AlertTransition(RAISED, s))
            elif s.status == OK_STATUS:
                self.streak[s.name] = 0
                if s.name in active:
                    out.append(AlertTransition(CLEARED, s))
        return out


def active_alerts(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Signal -> the ``RAISED`` event that raised it, for every alert not ``CLEARED`` since: the fold of a
    model's alert events in the order they were written (each a dict with ``event`` and ``signal``)."""
    active: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev["event"] == RAISED:
            active[ev["signal"]] = ev
        else:
            active.pop(ev["signal"], None)
    return active

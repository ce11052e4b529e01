"""THE decision and human-review triage of one image's calibrated probabilities, for every driver (service,
batch scoring, and whatever comes next).

Choices, made once here so no driver re-decides them:

- Decision per class: probability >= the bundle's operating threshold (binary, multi-label); the argmax class
  for multi-class (one class is decided, the others are not). ``positive_classes`` lists the decided classes.
- Label text: binary -> the positive class name or the bundle's ``negative_name``; multi-class -> the argmax
  class; multi-label -> the positive classes joined with ", " in output order, or "no finding above
  threshold" when none is positive.
- Review flag = "refer for human review". It is the bundle's fitted :class:`~radiolens.explain.triage.TriageRule`
  when one is stored (two-sided ``|p - threshold| < margin`` per output, or the top-two margin for
  multi-class, plus ``spread > max_spread`` when an MC-dropout spread was computed), else the two-sided
  near-threshold fallback with the configured margin (multi-class: the top two probabilities within the
  margin). A positive decision is not a review flag by itself: the decision already says positive, and a
  confident positive needs no second opinion from the triage rule's point of view.
- A stored rule that cannot be read ("invalid") or that raises on a case ("failed") falls back to the
  near-threshold rule; the rule name says which happened, so a response or row never hides it.
- An image the input gate refused is not assessed: no decision, the review flag always set, rule "input_gate".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from radiolens.models.info import BundleInfo

log = logging.getLogger("radiolens.pipeline")

#: Rule names (the ``review.rule`` of a response, the ``review_rule`` column of a batch row).
FITTED_RULE = "bundle_triage_rule"
FALLBACK_RULE = "near_threshold_fallback"
INVALID_RULE = "near_threshold_fallback(bundle triage invalid)"
FAILED_RULE = "bundle_triage_rule_failed->near_threshold_fallback"
GATE_RULE = "input_gate"
NO_FINDING = "no finding above threshold"
NOT_ASSESSED = "not assessed"
NOT_ASSESSED_PREFIX = "not assessed by the model: "


@dataclass(frozen=True)
class Review:
    flag: bool
    reason: str
    rule: str
    spread: float | None = None  # MC-dropout std of the reviewed output (None: not computed)


@dataclass(frozen=True)
class Decision:
    positives: np.ndarray  # (outputs,) bool
    label: str
    positive_classes: list[str]
    target_index: int  # the output a heatmap explains


def load_rule(info: BundleInfo) -> tuple[Any, str]:
    """(TriageRule or None, rule name) of a bundle; a malformed stored rule gives (None, INVALID_RULE)."""
    if not info.triage:
        return None, FALLBACK_RULE
    from radiolens.explain.triage import TriageRule

    try:
        return TriageRule(**info.triage), FITTED_RULE
    except Exception:  # a malformed dict must not stop predictions: fall back and say so in the rule name
        log.warning("the bundle's triage rule is invalid; using the near-threshold fallback")
        return None, INVALID_RULE


def decide(info: BundleInfo, probs: np.ndarray) -> Decision:
    """Decisions, label text, positive classes and heatmap target of one image's probabilities."""
    p = np.asarray(probs, dtype=float)
    names = list(info.class_names)
    if info.task == "multiclass":
        top = int(np.argmax(p))
        positives = np.zeros(len(p), dtype=bool)
        positives[top] = True
        return Decision(positives, names[top], [names[top]], top)
    positives = p >= np.asarray(info.thresholds, dtype=float)
    chosen = [n for n, d in zip(names, positives, strict=True) if d]
    if info.task == "binary":
        return Decision(positives, names[0] if positives[0] else info.negative_name, chosen, 0)
    target = int(np.argmax(np.where(positives, p, -np.inf))) if positives.any() else int(np.argmax(p))
    return Decision(positives, ", ".join(chosen) if chosen else NO_FINDING, chosen, target)


def review_index(info: BundleInfo, probs: np.ndarray) -> int:
    """The output that matters most for review: the top class, or the output closest to its threshold."""
    p = np.asarray(probs, dtype=float)
    if info.task == "multiclass":
        return int(np.argmax(p))
    return int(np.argmin(np.abs(p - np.asarray(info.thresholds, dtype=float))))


def near_threshold(info: BundleInfo, probs: np.ndarray, margin: float, rule: str = FALLBACK_RULE) -> Review:
    """The fallback: two-sided ``|p - threshold| < margin`` (multi-class: top two within ``margin``)."""
    p = np.asarray(probs, dtype=float)
    if info.task == "multiclass":
        top2 = np.sort(p)[-2:]
        if top2[1] - top2[0] < margin:
            return Review(True, f"top two classes within {margin:.2f} of each other", rule)
        return Review(False, "confident top class", rule)
    thr = np.asarray(info.thresholds, dtype=float)
    dist = np.abs(p - thr)
    near = np.flatnonzero(dist < margin)
    if near.size:
        i = int(near[np.argmin(dist[near])])
        return Review(True, f"{info.class_names[i]} probability {p[i]:.2f} is within {margin:.2f} of the "
                      f"operating threshold {thr[i]:.2f}", rule)
    return Review(False, f"all probabilities at least {margin:.2f} from their thresholds", rule)


class Triage:
    """The review flag of a bundle: its fitted rule, else the near-threshold fallback with ``margin``.

    ``rule`` and ``rule_name`` are plain attributes so a deployment (or a test) can swap the rule in place.
    """

    def __init__(self, info: BundleInfo, margin: float = 0.1):
        self.info = info
        self.margin = float(margin)
        self.rule, self.rule_name = load_rule(info)

    def review(self, probs: np.ndarray, spreads: np.ndarray | float | None = None) -> Review:
        """Review of one image. ``spreads``: the MC-dropout std per output (or one value), None if not computed;
        the rule sees every output's probability and spread, as it was fitted (``radiolens triage-fit``)."""
        p = np.asarray(probs, dtype=float)
        s = None if spreads is None else np.broadcast_to(np.asarray(spreads, dtype=float), p.shape)
        spread = None if s is None else float(s[review_index(self.info, p)])
        if self.rule is not None:
            try:
                flag, reason = self.rule.flag(p, s)
                return Review(bool(flag), str(reason), self.rule_name, spread)
            except Exception as exc:  # a broken rule must not take predictions down; the rule name says so
                log.error("triage rule failed (%s); using the near-threshold fallback", type(exc).__name__)
                r = near_threshold(self.info, p, self.margin, FAILED_RULE)
                return Review(r.flag, r.reason, r.rule, spread)
        r = near_threshold(self.info, p, self.margin, self.rule_name)
        return Review(r.flag, r.reason, r.rule, spread)


def not_assessed_review(reason: str) -> Review:
    """The review of an image withheld from the model (input gate, or a hook): always for a human."""
    return Review(True, NOT_ASSESSED_PREFIX + reason, GATE_RULE, None)

"""Fitting the human-review (triage) rule of a bundle on a manifest: the job behind ``radiolens triage-fit``.

The rule is fitted on the validation split to a referral budget and applied unchanged to the test split,
whose referral rate, error rates and risk-coverage curve are reported. Scores may carry an MC-dropout spread
or come from a deep ensemble (the members' mean and std).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radiolens.errors import InputError
from radiolens.explain.manifest_scoring import score_manifest
from radiolens.explain.triage import decision_errors, fit_triage_rule, risk_coverage, triage_kind
from radiolens.models.bundle import ModelBundle


@dataclass
class TriageFitOptions:
    budget: float = 0.2  #: maximum fraction of cases referred for human review
    label: str | None = None  #: 0/1 label column (default: the model's own label definition)
    val_split: str = "val"
    test_split: str = "test"
    mc_passes: int = 0  #: MC-dropout passes for a spread (0: threshold margin only)
    batch_size: int = 64
    write_bundle: bool = False  #: also store the rule in the bundle's ``info.triage`` (rewrites the file)


def fit_triage_on_manifest(model_path: Path, manifest: Path, out: Path, options: TriageFitOptions | None = None,
                           ensemble: Sequence[Path] = ()) -> dict[str, Any]:
    """Fit the rule for the bundle at ``model_path``, write ``triage.json`` and ``risk_coverage.png`` into
    ``out`` and return the report (``rule``, ``uncertainty``, ``model_sha256``, ``test``,
    ``risk_coverage_test``). ``ensemble``: the other member bundles of a deep ensemble."""
    from radiolens.evaluate.plots import risk_coverage_figure

    opts = options or TriageFitOptions()
    bundle = ModelBundle.load(model_path)
    info = bundle.info
    kind = triage_kind(info.task)  # multi-class: refer when the top two classes are close (no thresholds)
    members = [ModelBundle.load(p) for p in ensemble]
    if members and opts.write_bundle:
        raise InputError("a rule fitted on ensemble spread cannot be stored in one bundle: the service "
                         "measures MC-dropout spread of that bundle alone (fit with --mc-passes instead)")
    scoring = dict(mc_passes=opts.mc_passes, ensemble=members, batch_size=opts.batch_size)
    val = score_manifest(bundle, manifest, opts.val_split, opts.label, **scoring)
    vs, vy = val.cases, val.targets
    thresholds = [] if kind == "top2_margin" else list(info.thresholds)
    if members and kind == "threshold":
        # the members' calibrated probabilities need not share a scale (their own thresholds can differ
        # widely), so the mean gets its own threshold, chosen on validation by the model's rule
        from radiolens.evaluate.operating_point import choose_threshold

        rule_name = "youden" if info.operating_point.startswith("default") else info.operating_point
        vy2 = vy.reshape(len(vs.probs), -1)
        thresholds = [choose_threshold(vy2[:, k], vs.probs[:, k], rule_name) for k in range(vs.probs.shape[1])]
        vs.source.update(thresholds=thresholds, threshold_rule=f"{rule_name} on validation, for the members' "
                                                                 "mean")
    rule = fit_triage_rule(vs.probs, vy, thresholds, info.class_names, opts.budget, vs.spread, kind=kind)
    test = score_manifest(bundle, manifest, opts.test_split, opts.label, **scoring)
    ts, ty = test.cases, test.targets
    tp = ts.probs
    refer = rule.refer_mask(tp, ts.spread)
    wrong = decision_errors(tp, ty, thresholds, kind)
    rc = risk_coverage(tp, ty, thresholds, ts.spread, kind=kind)
    report = {"rule": rule.model_dump(), "uncertainty": vs.source, "model_sha256": bundle.sha256, "test": {
        "n": int(len(tp)), "referral_rate": float(refer.mean()), "error_rate_all": float(wrong.mean()),
        "error_rate_kept": float(wrong[~refer].mean()) if (~refer).any() else None,
        "error_rate_referred": float(wrong[refer].mean()) if refer.any() else None},
        "risk_coverage_test": rc}
    if opts.write_bundle:  # before triage.json, which must name the file's new hash
        info.triage = rule.model_dump()
        report["model_sha256"] = bundle.save(model_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "triage.json").write_text(json.dumps(report, indent=2))
    risk_coverage_figure(rc, report["test"]["referral_rate"]).savefig(out / "risk_coverage.png", dpi=100,
                                                                    bbox_inches="tight")
    return report

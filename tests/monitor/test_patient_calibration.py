"""The gate's threshold is chosen on patients its density was not fitted on, and its false-rejection rate is
measured on patients none of its parts saw, with a Wilson interval. Real data: Kermany (patient ids in the
manifest)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.models.bundle import ModelBundle
from radiolens.monitor import MonitoringProfile
from radiolens.monitor.gate import conformal_threshold
from radiolens.monitor.profile import heldout_rejections, wilson_interval


@pytest.mark.realdata
def test_threshold_is_chosen_on_patients_not_used_to_fit(monitor_model, kermany, tmp_path):
    root, rows = kermany
    model = tmp_path / "model.pt"
    monitor_model.save(model)
    out = tmp_path / "registered.pt"
    result = CliRunner().invoke(app, ["monitor", "baseline", "--model", str(model), "--manifest",
                                      str(root / "manifest.csv"), "--split", "val", "--label-column", "label_int",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    profile = MonitoringProfile.from_bundle(ModelBundle.load(out))
    val = [r for r in rows if r["split"] == "val"]  # the rows in the order the baseline read them
    assert len(profile.reference) == len(val)

    halves: dict[str, set[str]] = defaultdict(set)
    for row, obs in zip(val, profile.reference, strict=True):
        halves[row["patient_id"]].add(obs["half"])
    assert all(len(h) == 1 for h in halves.values()), "a patient both fitted and calibrated the gate"
    cal_patients = {p for p, h in halves.items() if h == {"calibration"}}
    fit_patients = {p for p, h in halves.items() if h == {"fit"}}
    assert len(cal_patients) == profile.heldout["patients"] and len(fit_patients) == profile.heldout["fit_patients"]
    assert min(len(cal_patients), len(fit_patients)) >= 0.4 * len(halves)
    # no patient identifier is stored in the profile
    assert not any(p in str(profile.to_dict()) for p in list(halves)[:50])

    # the threshold is the conformal quantile of the calibration patients' scores (stored rounded to 1e-4)
    cal_scores = np.array([o["ood_score"] for o in profile.reference if o["half"] == "calibration"])
    target = profile.density.target_false_rejection
    assert profile.density.threshold == pytest.approx(conformal_threshold(cal_scores, target), abs=1e-3)
    # the reported rate: held-out patients, with its Wilson interval
    k, n = profile.heldout["rejected"], profile.heldout["images"]
    assert n == len(cal_scores) and profile.expected_rejection_rate == pytest.approx(k / n)
    assert profile.heldout["ci"] == pytest.approx(list(wilson_interval(k, n)))
    lo, hi = profile.heldout["ci"]
    assert lo <= k / n <= hi and lo <= target
    assert "patients the gate was not fitted on" in result.output and "95% CI" in result.output


def test_conformal_threshold_keeps_its_promise():
    rng = np.random.default_rng(0)
    target, n = 0.02, 300
    # over many calibration sets, a fresh score exceeds the threshold at most `target` of the time on average
    rates = [np.mean(rng.standard_normal(20000) > conformal_threshold(rng.standard_normal(n), target))
             for _ in range(200)]
    assert np.mean(rates) <= target + 0.002
    # the plain empirical quantile does not: its average false rejection is above the target
    plain = [np.mean(rng.standard_normal(20000) > np.quantile(rng.standard_normal(n), 1 - target))
             for _ in range(200)]
    assert np.mean(plain) > np.mean(rates)


def test_heldout_rejections_judge_each_patient_by_a_threshold_fitted_without_it():
    """A patient whose images all score high sets the threshold when it is calibrated on its own images, and
    would look accepted; judged by the other patients' threshold, it is refused."""
    rng = np.random.default_rng(1)
    groups = np.concatenate([np.repeat(np.arange(100), 3).astype(str), ["odd"] * 12])
    scores = rng.standard_normal(len(groups))
    odd = groups == "odd"
    scores[odd] = 50.0 + np.arange(12)  # one patient, 12 unusual images (e.g. a rare device)
    in_sample = scores > conformal_threshold(scores, 0.02)
    assert not in_sample[odd].all()  # calibrated on its own images, the patient shields most of them
    held = heldout_rejections(scores, np.zeros(len(groups), dtype=bool), groups, 0.02, seed=0)
    assert held[odd].all()
    header = np.zeros(len(groups), dtype=bool)
    header[:5] = True
    assert heldout_rejections(scores, header, groups, 0.02, seed=0)[:5].all()  # header refusals count too

"""Monitoring on real data: the input gate against real non-chest images, and drift detection on a real
population shift (paediatric Kermany -> adult NIH ChestX-ray14) with no alert on held-in Kermany data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radiolens.errors import InputError
from radiolens.io import read_image
from radiolens.monitor import AlertTracker, DriftConfig, MonitoringProfile, evaluate_window
from radiolens.monitor.profile import observe_images

pytestmark = pytest.mark.realdata


def _readable(paths):
    out = []
    for p in paths:
        try:
            out.append((p.name, read_image(p)))
        except InputError:
            pass  # a file the reader refuses never reaches the model (tested in tests/io)
    return out


def test_profile_is_stored_in_the_bundle(registered):
    path, bundle = registered
    profile = MonitoringProfile.from_bundle(bundle)
    assert profile is not None and profile.n_images > 100
    assert {r["half"] for r in profile.reference} == {"fit", "calibration"}
    # the threshold promises ~2% false rejection on the held-out calibration half, and keeps it
    assert 0.0 < profile.density.calibration_rejection <= 0.05
    assert profile.expected_error_rate is not None and 0 < profile.expected_error_rate < 0.3


def test_gate_rejects_real_non_chest_images_and_keeps_chest(registered, val_halves, non_chest_files):
    _, bundle = registered
    profile = MonitoringProfile.from_bundle(bundle)
    held_in = observe_images(bundle, profile, (read_image(p) for p, _ in val_halves[1]))
    negatives = _readable(non_chest_files)
    assert len(negatives) >= 50
    outside = observe_images(bundle, profile, (im for _, im in negatives))
    false_rejection = np.mean([not g.passed for g, _ in held_in])
    assert false_rejection <= 0.08, false_rejection  # target 0.02; allowance for a ~300-image sample
    missed = [name for (name, _), (g, _) in zip(negatives, outside, strict=True) if g.passed]
    assert len(missed) <= 0.05 * len(negatives), missed
    # the learned score alone (no header rule) separates them
    scores_in = [g.ood_score for g, _ in held_in]
    scores_out = [g.ood_score for g, _ in outside]
    auroc = roc_auc_score([0] * len(scores_in) + [1] * len(scores_out), scores_in + scores_out)
    assert auroc >= 0.95, auroc
    # header rules name the problem in plain words
    by_name = dict(zip([n for n, _ in negatives], [g for g, _ in outside], strict=True))
    assert any("modality CT" in r for r in by_name["693_UNCR.dcm"].reasons)
    assert any("body part EXTREMITY" in r for r in by_name["RG3_UNCR.dcm"].reasons)
    assert any("colour" in r for r in by_name["grace_hopper.jpg"].reasons)


def _stream(bundle, profile, paths):
    return [obs for _, obs in observe_images(bundle, profile, (read_image(p) for p in paths))]


def test_paediatric_stream_no_alert_then_adult_nih_alert(registered, val_halves, nih_paths):
    _, bundle = registered
    profile = MonitoringProfile.from_bundle(bundle)
    cfg = DriftConfig()  # the shipped defaults: window 100, check every 10, alert after 2 drifting checks
    # production arrives in no particular order: the manifest lists all NORMAL files first, and a run of
    # only normals IS a (prevalence) shift the monitor rightly reports, so the held-in stream is shuffled
    held_in = [val_halves[1][i][0] for i in np.random.default_rng(0).permutation(len(val_halves[1]))]
    kermany = _stream(bundle, profile, held_in)
    nih = _stream(bundle, profile, nih_paths[:200])
    stream = kermany + nih
    tracker, active, first_alert = AlertTracker(cfg.consecutive), set(), None
    statuses = []
    for end in range(cfg.check_every, len(stream) + 1, cfg.check_every):
        report = evaluate_window(profile, stream[max(0, end - cfg.window):end], cfg, seed=end)
        statuses.append((end, report.status))
        for t in tracker.update(report, active):
            if t.kind == "drift_alert":
                active.add(t.signal.name)
                if first_alert is None:
                    first_alert = (end, t.signal.name)
    # windows before min_window predictions are "insufficient data", never a verdict
    early = [s for e, s in statuses if e < cfg.min_window]
    assert early and set(early) == {"insufficient_data"}
    assert {s for e, s in statuses if e >= cfg.min_window} <= {"ok", "drift"}
    assert first_alert is not None, "no alert on adult NIH images"
    assert first_alert[0] > len(kermany), f"false alarm on held-in Kermany data at {first_alert}"
    delay = first_alert[0] - len(kermany)
    assert delay <= 60, delay
    # the shift is seen by content signals too, not only by file format and size
    content = {"embedding", "ood_score", "ood_rate"} | {f"probability:{c}" for c in profile.class_names}
    final = evaluate_window(profile, nih[-cfg.window:], cfg)
    assert content & {s.name for s in final.drifted}, final.reason


def test_small_window_is_insufficient_data_not_a_verdict(registered, val_halves, nih_paths):
    _, bundle = registered
    profile = MonitoringProfile.from_bundle(bundle)
    cfg = DriftConfig()
    few = _stream(bundle, profile, nih_paths[: cfg.min_window - 1])
    report = evaluate_window(profile, few, cfg)
    assert report.status == "insufficient_data" and not report.signals and "fewer than" in report.reason
    assert AlertTracker(1).update(report, {"embedding"}) == []  # neither raises nor clears


def test_reader_disagreement_is_judged_against_the_validation_error(registered, val_halves):
    _, bundle = registered
    profile = MonitoringProfile.from_bundle(bundle)
    cfg = DriftConfig()
    window = _stream(bundle, profile, [p for p, _ in val_halves[1][:40]] + [p for p, _ in val_halves[1][-40:]])

    def disagreement(feedback):
        rep = evaluate_window(profile, window, cfg, feedback)
        return next(s for s in rep.signals if s.name == "disagreement")

    expected = profile.expected_error_rate
    calm = disagreement((40, round(40 * expected)))
    assert calm.status == "ok" and calm.limit == pytest.approx(expected + cfg.disagreement_margin)
    assert disagreement((40, 30)).status == "drift"
    few = disagreement((cfg.min_feedback - 1, cfg.min_feedback - 1))
    assert few.status == "insufficient_data" and "fewer than" in few.detail

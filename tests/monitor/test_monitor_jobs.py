"""The jobs behind `radiolens monitor baseline / gate / status`, called as library functions on real Kermany
images and pydicom's non-chest files."""

from __future__ import annotations

import copy

import pytest

from radiolens.errors import ConfigError
from radiolens.models.bundle import ModelBundle
from radiolens.monitor.alerts import CLEARED, RAISED, AlertTracker, active_alerts
from radiolens.monitor.baseline import BaselineOptions, register_baseline
from radiolens.monitor.config import DriftConfig, GateConfig
from radiolens.monitor.drift import evaluate_window
from radiolens.monitor.gate_files import check_files
from radiolens.monitor.profile import MonitoringProfile, observe_images, require_profile
from radiolens.monitor.report import StoredObservation, current_window


def test_register_baseline_from_a_manifest_split(monitor_model, kermany, tmp_path):
    root, rows = kermany
    fresh = ModelBundle(info=copy.deepcopy(monitor_model.info), model=monitor_model.model)
    fresh.info.monitoring = {}  # the shared fixture may already carry a baseline another test registered
    with pytest.raises(ConfigError, match="no monitoring baseline"):
        require_profile(fresh, "m.pt")
    notes = []
    profile = register_baseline(fresh, root / "manifest.csv", GateConfig(),
                                BaselineOptions(split="val", label="label_int", max_images=120), note=notes.append)
    assert notes == []  # Kermany has a complete patient_id column
    assert require_profile(fresh, "m.pt").to_dict() == profile.to_dict()
    n_val = sum(r["split"] == "val" for r in rows)
    summary = profile.summary()
    assert summary["images"] == min(120, n_val) and summary["expected_error_rate"] is not None
    assert summary["fit_patients"] > 0 and summary["heldout_patients"] > 0


def test_check_files_accepts_chest_refuses_other_and_reports_unreadable(registered, val_halves, non_chest_files,
                                                                        tmp_path):
    _, bundle = registered
    profile = require_profile(bundle, "registered.pt")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"DICM not really")
    chest = [p for p, _ in val_halves[1][:3]]
    rows = list(check_files(bundle, profile, [*chest, non_chest_files[0], broken], GateConfig()))
    assert [r["file"] for r in rows] == [p.name for p in [*chest, non_chest_files[0], broken]]
    assert [r["status"] for r in rows[:3]] == ["ok"] * 3
    assert rows[3]["status"] != "ok" and rows[3]["reasons"]
    assert rows[4]["status"] == "unreadable" and rows[4]["reasons"]


def test_active_alerts_fold_raised_and_cleared_events(registered, val_halves):
    """Events as AlertTracker emits them for real windows: raised signals stay active until cleared."""
    _, bundle = registered
    profile = MonitoringProfile.from_bundle(bundle)
    sig = {"signal": "prediction_psi"}
    events = [{"event": RAISED, "audit_seq": 1, **sig}, {"event": RAISED, "audit_seq": 2, "signal": "embedding_mmd"},
              {"event": CLEARED, "audit_seq": 3, **sig}]
    assert active_alerts(events) == {"embedding_mmd": events[1]}
    assert active_alerts(events[:1]) == {"prediction_psi": events[0]}
    # the folding matches the tracker's own bookkeeping on a real window
    cfg = DriftConfig(window=40, consecutive=1)
    records = [r for _, r in observe_images(bundle, profile, (_read(p) for p, _ in val_halves[1][:40]))]
    report = evaluate_window(profile, records, cfg)
    transitions = AlertTracker(1).update(report, set())
    folded = active_alerts({"event": t.kind, "signal": t.signal.name} for t in transitions)
    assert set(folded) == {s.name for s in report.signals if s.status == "drift"}


def test_current_window_is_the_last_window_with_reader_feedback(registered, val_halves):
    _, bundle = registered
    profile = MonitoringProfile.from_bundle(bundle)
    records = [r for _, r in observe_images(bundle, profile, (_read(p) for p, _ in val_halves[1][:50]))]
    obs = [StoredObservation(f"p{i}", "2026-01-01T00:00:00Z", r, agree=(i % 5 != 0) if i >= 10 else None)
           for i, r in enumerate(records)]
    cfg = DriftConfig(window=40)
    report = current_window(profile, obs, cfg)
    answered = [o.agree for o in obs[-40:] if o.agree is not None]
    expected = evaluate_window(profile, records[-40:], cfg, (len(answered), answered.count(False)))
    assert report.as_dict() == expected.as_dict() and report.n == 40


def _read(path):
    from radiolens.io import read_image

    return read_image(path)

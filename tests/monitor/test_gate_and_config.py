"""Header rules, the learned density's calibration and persistence, and typed config errors."""

from __future__ import annotations

import numpy as np
import pytest

from radiolens.errors import ConfigError, InputError
from radiolens.io.image import ImageMeta
from radiolens.monitor import FeatureDensity, GateConfig, InputGate, MonitorConfig, load_monitor_config
from radiolens.monitor.gate import header_problems


def _meta(**kw) -> ImageMeta:
    base = dict(source_format="dicom", modality="CR", body_part="CHEST", photometric_interpretation="MONOCHROME2")
    base.update(kw)
    return ImageMeta(**base)


@pytest.mark.parametrize("meta, size, expect", [
    (_meta(), (1024, 1024), None),
    (_meta(modality="CT"), (512, 512), "modality CT"),
    (_meta(modality="US", photometric_interpretation="RGB"), (480, 640), "colour image"),
    (_meta(body_part="EXTREMITY"), (1760, 1760), "body part EXTREMITY"),
    (_meta(number_of_frames=10), (64, 64), "multi-frame"),
    (_meta(), (20, 400), "smaller than"),
    (_meta(), (100, 400), "aspect ratio"),
    (ImageMeta(source_format="jpeg", photometric_interpretation="MONOCHROME2", extra={"chroma": 0.2}), (512, 512),
     "colour picture"),
    (ImageMeta(source_format="png", photometric_interpretation="MONOCHROME2", extra={"chroma": 0.0}), (64, 64),
     None),
    (_meta(modality=None, body_part=None), (1024, 1024), None),  # absent tags pass (the learned score decides)
])
def test_header_rules(meta, size, expect):
    problems = header_problems(meta, size[0], size[1], GateConfig())
    if expect is None:
        assert problems == []
    else:
        assert any(expect in p for p in problems), problems


def test_density_threshold_keeps_its_promise_on_new_data():
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(5, 0.1, 64))
    emb = rng.multivariate_normal(np.zeros(64), cov, size=800)
    idx = rng.permutation(800)
    cfg = GateConfig(target_false_rejection=0.05, pca_components=16)
    d = FeatureDensity.fit(emb, cfg, fit_index=idx[:400], calibration_index=idx[400:])
    fresh = rng.multivariate_normal(np.zeros(64), cov, size=4000)
    assert 0.02 < np.mean(d.score(fresh) > d.threshold) < 0.09  # ~5% as promised
    far = fresh[:200] + 3.0
    assert np.mean(d.score(far) > d.threshold) > 0.95
    back = FeatureDensity.from_dict(d.to_dict())
    np.testing.assert_allclose(back.score(fresh[:10]), d.score(fresh[:10]))
    gate = InputGate(GateConfig(), back)
    assert gate.check(_meta(), 512, 512, fresh[:1]).learned
    with pytest.raises(ConfigError, match="another model"):
        back.score(np.zeros((1, 10)))


def test_density_needs_enough_images():
    with pytest.raises(InputError, match="at least 20"):
        FeatureDensity.fit(np.zeros((30, 8)), GateConfig(), np.arange(15), np.arange(15, 30))


def test_monitor_config_errors_are_typed(tmp_path):
    (tmp_path / "ok.yaml").write_text("drift:\n  window: 50\n  min_window: 20\ngate:\n  max_chroma: 0.05\n")
    cfg = load_monitor_config(tmp_path / "ok.yaml")
    assert cfg.drift.window == 50 and cfg.gate.max_chroma == 0.05 and isinstance(cfg, MonitorConfig)
    (tmp_path / "bad.yaml").write_text("drift:\n  window: 20\n  min_window: 50\n")
    with pytest.raises(ConfigError, match="min_window"):
        load_monitor_config(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("drift:\n  windw: 20\n")
    with pytest.raises(ConfigError, match="windw"):
        load_monitor_config(tmp_path / "typo.yaml")
    (tmp_path / "hook.yaml").write_text("drift:\n  webhook_url: ftp://x\n")
    with pytest.raises(ConfigError, match="webhook_url"):
        load_monitor_config(tmp_path / "hook.yaml")
    (tmp_path / "broken.yaml").write_text("drift: [\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_monitor_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_monitor_config(tmp_path / "missing.yaml")

"""Header rules, the learned density's calibration and persistence, and typed config errors."""

from __future__ import annotations

import numpy as np
import pytest

from radiolens.errors import ConfigError, InputError
from radiolens.io.image import ImageMeta
from radiolens.monitor import FeatureDensity, GateConfig, InputGate, MonitorConfig, load_monitor_config
from radiolens.monitor.gate import ObservedHeaders, header_problems, header_rules
from radiolens.monitor.profile import MonitoringProfile


def _meta(**kw) -> ImageMeta:
    base = dict(source_format="dicom", modality="CR", body_part="CHEST", photometric_interpretation="MONOCHROME2")
    base.update(kw)
    return ImageMeta(**base)


def _observed(meta: ImageMeta, height: int, width: int, n: int = 5) -> ObservedHeaders:
    return ObservedHeaders.of([(meta, height, width)] * n)


@pytest.mark.parametrize("meta, size, expect", [
    (_meta(), (1024, 1024), None),
    (_meta(modality="CT"), (512, 512), "modality CT"),
    (_meta(modality="US", photometric_interpretation="RGB"), (480, 640), "colour image"),
    (_meta(body_part="EXTREMITY"), (1760, 1760), "body part EXTREMITY"),
    (_meta(number_of_frames=10), (64, 64), "multi-frame"),
    (_meta(), (20, 400), "smaller than"),
    (_meta(), (400, 700), "aspect ratio"),
    (ImageMeta(source_format="jpeg", photometric_interpretation="MONOCHROME2", extra={"chroma": 0.2}), (512, 512),
     "colour picture"),
    (ImageMeta(source_format="png", photometric_interpretation="MONOCHROME2", extra={"chroma": 0.0}), (900, 1000),
     None),
    (_meta(modality=None, body_part=None), (1024, 1024), None),  # absent tags pass (the learned score decides)
])
def test_header_rules(meta, size, expect):
    problems = header_problems(meta, size[0], size[1], header_rules(GateConfig(), _observed(_meta(), 1024, 1024)))
    if expect is None:
        assert problems == []
    else:
        assert any(expect in p for p in problems), problems


def test_header_rules_are_learned_from_the_baseline_images():
    png = ImageMeta(source_format="png", photometric_interpretation="MONOCHROME2", bits_stored=8,
                    extra={"chroma": 0.0})
    # a model of 28 px thumbnails accepts 28 px thumbnails; no fixed pixel count refuses its own data
    small = header_rules(GateConfig(), _observed(png, 28, 28))
    assert header_problems(png, 28, 28, small) == []
    assert any("smaller than 14 px" in p for p in header_problems(png, 10, 12, small))
    # a model of 2,000 px films refuses a 40 px icon, and says what it was validated on
    films = header_rules(GateConfig(), _observed(_meta(bits_stored=12), 2000, 2500))
    problems = header_problems(_meta(bits_stored=12), 40, 40, films)
    assert any("smaller than 1000 px" in p and "2000 px" in p for p in problems), problems
    # bit depth: a 1-bit mask is not a 12-bit film; an 8-bit PNG baseline does not refuse 16-bit files
    assert any("1 bits stored" in p for p in header_problems(_meta(bits_stored=1), 2000, 2000, films))
    assert header_problems(_meta(bits_stored=16), 64, 64, small) == []
    # modalities, photometric and body parts the baseline holds are accepted; others still refused
    px = _meta(modality="PX", body_part="CHEST_PA", photometric_interpretation="PALETTE COLOR")
    assert len(header_problems(px, 1000, 1000, films)) == 3
    learned = header_rules(GateConfig(), _observed(px, 1000, 1000))
    assert header_problems(px, 1000, 1000, learned) == []
    assert any("modality CT" in p for p in header_problems(_meta(modality="CT"), 1000, 1000, learned))
    # frames and aspect come from the baseline as well; an explicit number in the config wins
    assert any("multi-frame" in p for p in header_problems(_meta(number_of_frames=4), 2000, 2500, films))
    assert header_problems(_meta(number_of_frames=4), 64, 64,
                           header_rules(GateConfig(), _observed(_meta(number_of_frames=4), 64, 64))) == []
    assert films.max_aspect_ratio == pytest.approx(1.5 * 2500 / 2000)
    assert header_rules(GateConfig(min_side_px=32), _observed(png, 28, 28)).min_side_px == 32
    # round trip through the stored profile
    obs = _observed(png, 28, 30)
    assert header_rules(GateConfig(), ObservedHeaders.from_dict(obs.to_dict())) == header_rules(GateConfig(), obs)


def test_profiles_of_the_fixed_rule_format_are_refused_with_a_way_out():
    with pytest.raises(ConfigError, match="monitor baseline"):
        MonitoringProfile.from_dict({"format": "radiolens-monitoring/1"})


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

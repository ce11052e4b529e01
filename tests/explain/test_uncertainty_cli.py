"""MC-dropout / deep-ensemble uncertainty and `radiolens triage-fit` on small models trained on real labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.errors import InputError
from radiolens.evaluate.operating_point import choose_threshold
from radiolens.explain.triage import TriageRule
from radiolens.explain.uncertainty import (
    dropout_mode,
    ensemble_predict,
    mc_dropout_predict,
    score_with_uncertainty,
)
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle


def _images(manifest, split):
    frame = pd.read_csv(manifest)
    frame = frame[frame.split == split]
    return [read_image(manifest.parent / p).first_frame() for p in frame.path], frame


def _invoke(*args):
    return CliRunner().invoke(app, ["triage-fit", *map(str, args)])


def test_mc_dropout_applies_the_bundle_temperature_to_every_pass(pneumonia_models, pneumonia_manifest):
    bundle = ModelBundle.load(pneumonia_models[0])
    imgs, _ = _images(pneumonia_manifest, "val")
    x = torch.stack([bundle.preprocess(i) for i in imgs[:32]])
    # the raw logits of the same 6 dropout passes (same seed -> same masks), taken by hand
    torch.manual_seed(5)
    dropout_mode(bundle.model)
    with torch.no_grad():
        logits = torch.stack([bundle.model(x) for _ in range(6)]).numpy()
    bundle.model.eval()
    for t in (1.0, 2.5, 0.6):
        bundle.info.temperature = t
        r = mc_dropout_predict(bundle, x, passes=6, seed=5)
        np.testing.assert_allclose(r.samples, 1 / (1 + np.exp(-logits / t)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.mean, r.samples.mean(axis=0), atol=1e-7)
    assert np.ptp(logits, axis=0).max() > 0  # dropout really varied the passes
    assert not bundle.model.training


def test_batched_scoring_equals_one_batch(pneumonia_models, pneumonia_manifest):
    a, b = (ModelBundle.load(p) for p in pneumonia_models)
    imgs, _ = _images(pneumonia_manifest, "test")
    whole = score_with_uncertainty(a, iter(imgs), ensemble=[b], batch_size=len(imgs))
    small = score_with_uncertainty(a, iter(imgs), ensemble=[b], batch_size=7)  # 150 = 21 x 7 + 3
    np.testing.assert_allclose(small.probs, whole.probs, atol=1e-6)
    np.testing.assert_allclose(small.spread, whole.spread, atol=1e-6)
    ref = ensemble_predict([a, b], imgs, batch_size=16)
    np.testing.assert_allclose(whole.probs, ref.mean, atol=1e-6)
    assert whole.source["method"] == "ensemble" and len(whole.source["members"]) == 2
    mc = score_with_uncertainty(a, iter(imgs), mc_passes=4, batch_size=32)
    plain = score_with_uncertainty(a, iter(imgs), batch_size=150)
    np.testing.assert_allclose(mc.probs, plain.probs, atol=1e-6)  # MC gives the spread, not the score
    assert mc.spread.shape == (150, 1) and (mc.spread > 0).mean() > 0.9 and plain.spread is None
    with pytest.raises(InputError, match="not both"):
        score_with_uncertainty(a, iter(imgs), mc_passes=4, ensemble=[b])
    with pytest.raises(InputError, match="no images"):
        score_with_uncertainty(a, iter([]))


def test_triage_fit_cli_mc_dropout(pneumonia_models, pneumonia_manifest, tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(pneumonia_models[0].read_bytes())
    r = _invoke("--model", model, "--manifest", pneumonia_manifest, "--budget", 0.2, "--mc-passes", 5,
                "--batch-size", 16, "--out", tmp_path / "t", "--write-bundle")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "t" / "triage.json").read_text())
    assert rep["uncertainty"]["method"] == "mc_dropout" and rep["uncertainty"]["passes"] == 5
    rule = TriageRule(**rep["rule"])
    assert rule.validation_n == 150 and rule.validation_referral_rate <= 0.2
    assert rep["test"]["n"] == 150 and len(rep["risk_coverage_test"]["coverage"]) == 150
    assert 0 <= rep["test"]["referral_rate"] <= 1 and 0 <= rep["test"]["error_rate_all"] <= 1
    assert (tmp_path / "t" / "risk_coverage.png").stat().st_size > 1000
    saved = ModelBundle.load(model)
    assert TriageRule(**saved.info.triage) == rule  # what the service reads back
    assert rep["model_sha256"] == saved.sha256  # the rewritten file, so evaluate / model-card accept it


def test_triage_fit_cli_ensemble_uses_member_mean_and_spread(pneumonia_models, pneumonia_manifest, tmp_path):
    a, b = pneumonia_models
    r = _invoke("--model", a, "--ensemble", b, "--manifest", pneumonia_manifest, "--budget", 0.3,
                "--batch-size", 32, "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "t" / "triage.json").read_text())
    members = [ModelBundle.load(p) for p in (a, b)]
    assert [m["sha256"] for m in rep["uncertainty"]["members"]] == [m.sha256 for m in members]
    rule = TriageRule(**rep["rule"])
    assert rule.validation_referral_rate <= 0.3
    # recompute the test referral independently from the two members
    imgs, frame = _images(pneumonia_manifest, "test")
    ens = ensemble_predict(members, imgs)
    refer = rule.refer_mask(ens.mean, ens.std)
    assert rep["test"]["referral_rate"] == pytest.approx(float(refer.mean()))
    y = (frame.label == "pneumonia").to_numpy()
    # the mean's threshold is chosen on validation (the members' own thresholds need not fit their mean)
    val_imgs, val_frame = _images(pneumonia_manifest, "val")
    t = choose_threshold((val_frame.label == "pneumonia").to_numpy(), ensemble_predict(members, val_imgs).mean[:, 0],
                         members[0].info.operating_point)
    assert rule.thresholds == pytest.approx([t]) == rep["uncertainty"]["thresholds"]
    wrong = (ens.mean[:, 0] >= t) != y
    assert rep["test"]["error_rate_all"] == pytest.approx(float(wrong.mean()))


def test_triage_fit_cli_bad_combinations_exit_2(pneumonia_models, pneumonia_manifest, tmp_path):
    a, b = pneumonia_models
    r = _invoke("--model", a, "--ensemble", b, "--mc-passes", 4, "--manifest", pneumonia_manifest,
                "--out", tmp_path / "t")
    assert r.exit_code == 2 and "not both" in r.output and "Traceback" not in r.output
    r = _invoke("--model", a, "--ensemble", b, "--write-bundle", "--manifest", pneumonia_manifest,
                "--out", tmp_path / "t")
    assert r.exit_code == 2 and "cannot be stored" in r.output
    r = _invoke("--model", a, "--manifest", pneumonia_manifest, "--label", "label", "--out", tmp_path / "t")
    assert r.exit_code == 2 and "0/1 values" in r.output
    r = _invoke("--model", a, "--manifest", pneumonia_manifest, "--mc-passes", 1, "--out", tmp_path / "t")
    assert r.exit_code == 2 and "at least 2 passes" in r.output

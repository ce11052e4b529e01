"""Re-runs retry error rows, refuse results of another model, and model/heatmap failures become error rows
(the run goes on); flags follow the bundle's fitted triage rule exactly as the service does."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import radiolens.predict.scoring as scoring
from radiolens.cli import app
from radiolens.explain.triage import fit_triage_rule
from radiolens.models.backends import load_backend
from radiolens.models.bundle import ModelBundle
from radiolens.models.export import export_onnx
from radiolens.models.registry import create_model
from radiolens.pipeline import Triage
from radiolens.predict import PredictConfig, Scorer, discover
from radiolens.predict.results import ResultsMismatchError
from radiolens.predict.sources import load_preprocessed

CFG = {"workers": 0, "progress": False}


@pytest.fixture()
def small_tree(real_tree, tmp_path):
    """4 pneumonia + 2 normal real images and the truncated JPEG, copied so a test may repair the broken file."""
    root = tmp_path / "tree"
    keys = sorted(it.key for it in discover(real_tree) if it.key.startswith("pneumonia/"))[:4]
    keys += sorted(it.key for it in discover(real_tree) if it.key.startswith("normal/"))[:2]
    for key in [*keys, "normal/zz_corrupt.jpeg"]:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_tree / key, root / key)
    return root


@pytest.fixture(scope="module")
def other_pt(fitted_pt, tmp_path_factory):
    """Same architecture and classes as fitted_pt, other weights: only the hash tells them apart."""
    torch.manual_seed(1)
    info = ModelBundle.load(fitted_pt).info
    path = tmp_path_factory.mktemp("other") / "other.pt"
    ModelBundle(info, create_model(info.arch, 1).eval()).save(path)
    return path


def _rows(out):
    return pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out, keep_default_na=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_error_rows_are_retried_and_replaced_on_rerun(small_tree, fitted_pt, real_tree, tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    backend = load_backend(fitted_pt)
    items = discover(small_tree)
    first = Scorer(backend, PredictConfig(batch_size=3, **CFG)).run(items, out)
    assert len(items) == 7 and first.errors == 1
    assert _rows(out).set_index("path").loc["normal/zz_corrupt.jpeg", "status"] == "error"
    # not retried when asked not to
    kept = Scorer(backend, PredictConfig(batch_size=3, retry_errors=False, **CFG)).run(items, out)
    assert (kept.scored, kept.errors, kept.retried_errors) == (0, 0, 0) and kept.skipped_already_done == len(items)
    # the file is repaired (e.g. re-exported from PACS): the next run scores it and replaces its error row
    shutil.copy(real_tree / "normal" / sorted(p.name for p in (real_tree / "normal").glob("*.jpeg"))[0],
                small_tree / "normal" / "zz_corrupt.jpeg")
    again = Scorer(backend, PredictConfig(batch_size=3, **CFG)).run(items, out)
    assert (again.retried_errors, again.scored, again.errors) == (1, 1, 0)
    assert again.skipped_already_done == len(items) - 1
    rows = _rows(out)
    assert len(rows) == len(items) and rows["path"].is_unique and (rows["status"] == "ok").all()


def test_resume_refuses_results_of_another_model_unless_overwrite(small_tree, fitted_pt, other_pt, tmp_path):
    out = tmp_path / "r.csv"
    items = discover(small_tree)
    Scorer(load_backend(fitted_pt), PredictConfig(**CFG)).run(items[:3], out)
    with pytest.raises(ResultsMismatchError, match="another model") as err:
        Scorer(load_backend(other_pt), PredictConfig(**CFG)).run(items, out)
    assert err.value.code == "results_other_model"
    assert len(_rows(out)) == 3  # the refused run wrote nothing
    summary = Scorer(load_backend(other_pt), PredictConfig(overwrite=True, **CFG)).run(items, out)
    rows = _rows(out)
    assert summary.skipped_already_done == 0 and len(rows) == len(items)
    assert set(rows["model_sha256"]) == {ModelBundle.load(other_pt).sha256}


def test_cli_resume_with_another_model_or_backend_is_a_one_line_error(small_tree, fitted_pt, other_pt, tmp_path):
    out = tmp_path / "r.csv"
    runner = CliRunner()
    base = ["predict", str(small_tree), "--out", str(out), "--workers", "0", "--no-progress"]
    assert runner.invoke(app, [*base, "--model", str(fitted_pt)]).exit_code == 0
    r = runner.invoke(app, [*base, "--model", str(other_pt)])
    assert r.exit_code == 2 and "another model" in r.output and "--overwrite" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    script = runner.invoke(app, [*base, "--model", str(fitted_pt), "--backend", "torchscript"])
    assert script.exit_code == 2 and "another model" in script.output  # same file, other backend
    ok = runner.invoke(app, [*base, "--model", str(other_pt), "--overwrite"])
    assert ok.exit_code == 0, ok.output
    assert set(_rows(out)["model_sha256"]) == {ModelBundle.load(other_pt).sha256}


class FailOnCalls:
    """A backend whose forward pass raises (as an ORT/torch runtime error would) on the given call numbers."""

    def __init__(self, inner, calls: set[int]):
        self.inner, self.fail, self.n = inner, calls, 0
        self.info, self.kind, self.sha256 = inner.info, inner.kind, inner.sha256

    def predict_logits(self, batch):
        self.n += 1
        if self.n in self.fail:
            raise RuntimeError("/secret/patient/path simulated kernel failure")
        return self.inner.predict_logits(batch)


def test_a_failing_forward_pass_becomes_error_rows_and_the_run_continues(real_tree, fitted_pt, tmp_path):
    items = [it for it in discover(real_tree) if "corrupt" not in it.key][:12]
    backend = load_backend(fitted_pt)
    out = tmp_path / "r.csv"
    # call 2 = batch 2 of 4 images, retried one by one (calls 3-6): call 3, its first image, fails again
    summary = Scorer(FailOnCalls(backend, {2, 3}), PredictConfig(batch_size=4, **CFG)).run(items, out)
    assert (summary.scored, summary.errors) == (11, 1)
    rows = _rows(out).set_index("path")
    bad = rows.loc[items[4].key]
    assert bad.status == "error" and bad.error_code == "inference_failed" and "RuntimeError" in bad.error_message
    assert "secret" not in out.read_text()  # exception text (could hold paths) never reaches the file
    reference = tmp_path / "ref.csv"
    Scorer(backend, PredictConfig(batch_size=12, **CFG)).run(items, reference)
    ref = _rows(reference).set_index("path")
    good = [it.key for it in items if it.key != items[4].key]
    np.testing.assert_allclose(rows.loc[good, "p_pneumonia"].astype(float), ref.loc[good, "p_pneumonia"].astype(float),
                               atol=1e-6)
    # a backend failing on everything: every row is an error, nothing crashes
    dead = Scorer(FailOnCalls(backend, set(range(1, 100))), PredictConfig(batch_size=4, **CFG)).run(
        items, tmp_path / "dead.csv")
    assert (dead.scored, dead.errors) == (0, 12)
    # the next run retries the failed image
    again = Scorer(backend, PredictConfig(batch_size=4, **CFG)).run(items, out)
    assert (again.retried_errors, again.scored) == (1, 1) and (_rows(out)["status"] == "ok").all()


def test_a_failing_heatmap_is_an_error_row_with_its_scores(real_tree, fitted_pt, tmp_path, monkeypatch):
    items = [it for it in discover(real_tree) if "corrupt" not in it.key][:6]
    backend = load_backend(fitted_pt)
    real_write, calls = scoring.write_heatmap, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(scoring, "write_heatmap", flaky)
    cfg = PredictConfig(batch_size=3, near_threshold_margin=1.0, **CFG)  # everything flagged
    out, heat = tmp_path / "r.csv", tmp_path / "heat"
    summary = Scorer(backend, cfg, cam_model=backend.bundle.model, heatmap_dir=heat).run(items, out)
    assert (summary.scored, summary.errors, summary.heatmaps) == (5, 1, 5)
    rows = _rows(out)
    bad = rows[rows.status == "error"].iloc[0]
    assert bad.error_code == "heatmap_failed" and bad.path == items[1].key and bad.heatmap == ""
    assert 0 <= float(bad.p_pneumonia) <= 1  # the scores were fine and are kept
    monkeypatch.setattr(scoring, "write_heatmap", real_write)
    again = Scorer(backend, cfg, cam_model=backend.bundle.model, heatmap_dir=heat).run(items, out)
    assert again.retried_errors == 1 and again.heatmaps == 1 and len(list(heat.glob("*.png"))) == 6


def test_flags_follow_the_bundles_fitted_triage_rule_like_the_service(real_tree, fitted_pt, tmp_path, data_dir):
    bundle = ModelBundle.load(fitted_pt)
    val = discover(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv", split="val", label_column="label_int")
    x, used = load_preprocessed(val[::4], bundle.info, limit=120)
    probs = bundle.predict_batch(torch.from_numpy(x))
    rule = fit_triage_rule(probs, np.array([[it.label] for it in used]), bundle.info.thresholds,
                           bundle.info.class_names, budget=0.3)
    bundle.info.triage = rule.model_dump()
    bundle.save(tmp_path / "triaged.pt")
    backend = load_backend(tmp_path / "triaged.pt")
    out = tmp_path / "r.csv"
    summary = Scorer(backend, PredictConfig(batch_size=16, **CFG)).run(discover(real_tree), out)
    assert summary.flag_rule == "bundle_triage_rule"
    ok = _rows(out).query("status == 'ok'")
    p = ok["p_pneumonia"].astype(float).to_numpy()
    flagged = (ok["flagged"].astype(str) == "True").to_numpy()
    thr = bundle.info.thresholds[0]
    service = Triage(ModelBundle.load(tmp_path / "triaged.pt").info)
    assert service.rule_name == "bundle_triage_rule"
    referred = np.array([service.review(np.array([v])).flag for v in p])
    # flagged = referred for review by the fitted rule (a positive decision alone is not a flag)
    np.testing.assert_array_equal(flagged, referred)
    assert (ok["review_rule"] == "bundle_triage_rule").all()
    assert (p >= thr).any() and (~flagged).any() and flagged.any()
    reasons = ok.loc[referred, "flag_reason"]
    assert len(reasons) > 0 and reasons.str.startswith("refer for human review").all()
    fallback = np.abs(p - thr) < 0.1  # what the near-threshold fallback alone would have flagged
    assert (flagged != fallback).any(), f"fitted margin {rule.margin:.3f} should change some flags"


def test_cam_model_is_matched_by_the_onnx_files_source_hash(real_tree, fitted_pt, other_pt, tmp_path):
    bundle = ModelBundle.load(fitted_pt)
    batch, _ = load_preprocessed(discover(real_tree), bundle.info, limit=4)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(bundle, onnx_path, batch)
    assert load_backend(onnx_path).source_sha256 == bundle.sha256
    args = ["predict", str(real_tree), "--model", str(onnx_path), "--out", str(tmp_path / "r.csv"), "--workers",
            "0", "--no-progress", "--heatmaps-for-flagged", str(tmp_path / "heat")]
    # same arch and class names, other weights: the old name-only check let this through
    wrong = CliRunner().invoke(app, [*args, "--cam-model", str(other_pt)])
    assert wrong.exit_code == 2 and "not the model that --model was exported from" in wrong.output
    assert not (tmp_path / "r.csv").exists()

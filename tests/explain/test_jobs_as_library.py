"""The jobs behind `radiolens train / evaluate / triage-fit / explain / audit-subgroups`, called as library
functions (what benchmarks and other code import) on real PneumoniaMNIST and Kermany images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from radiolens.data.manifest import load_manifest
from radiolens.errors import InputError, ManifestError
from radiolens.evaluate.metrics import probabilities
from radiolens.evaluate.saved_model import BundleEvaluationOptions, evaluate_bundle, model_logits
from radiolens.explain.batch import INDEX_COLUMNS, explain_files
from radiolens.explain.subgroup_audit import audit_bundle_subgroups
from radiolens.explain.triage_fit import TriageFitOptions, fit_triage_on_manifest
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle
from radiolens.train.config import config_from_dict
from radiolens.train.job import run_training_job


def test_training_job_summary_is_what_it_wrote(pneumonia_manifest, tmp_path):
    cfg = {"name": "job", "data": {"manifest": str(pneumonia_manifest),
                                   "label": {"task": "binary", "columns": ["label"], "positive": "pneumonia"}},
           "model": {"arch": "small_cnn", "input_size": 28}, "optim": {"epochs": 1, "batch_size": 64},
           "augment": {"enabled": False}, "eval": {"n_bootstrap": 20}, "mlflow": False, "progress_bar": False,
           "num_threads": 2}
    summary = run_training_job(config_from_dict(cfg), tmp_path, echo=lambda *a: None)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary.to_dict()
    bundle = ModelBundle.load(summary.model)
    assert bundle.info.temperature == summary.temperature and bundle.info.thresholds == summary.thresholds
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    auroc = metrics["summary"]["headline"]["auroc"]
    assert summary.headline["auroc"] == auroc["estimate"] and summary.headline["auroc_ci"] == [auroc["lower"],
                                                                                                auroc["upper"]]
    assert summary.epochs_run == 1 and summary.timings_s["job_total_s"] > 0


def test_evaluate_bundle_scores_the_test_split_it_names(pneumonia_models, pneumonia_manifest, tmp_path):
    r = evaluate_bundle(pneumonia_models[0], pneumonia_manifest, tmp_path / "ev",
                        BundleEvaluationOptions(n_bootstrap=50))
    assert r.report.is_file() and json.loads(r.metrics.read_text())["summary"] == r.result.to_dict()["summary"]
    # the AUROC reported is the AUROC of the bundle's own logits over the test rows
    bundle = ModelBundle.load(pneumonia_models[0])
    from radiolens.data.manifest import LabelSpec

    spec = LabelSpec.model_validate(bundle.info.training["label"])
    logits, y = model_logits(bundle, load_manifest(pneumonia_manifest).subset("test"), spec)
    expected = roc_auc_score(y.reshape(-1), probabilities(logits, "binary")[:, 0])
    assert r.result.to_dict()["summary"]["headline"]["auroc"]["estimate"] == pytest.approx(expected, abs=1e-9)


def test_triage_fit_report_and_its_use_by_evaluate(pneumonia_models, pneumonia_manifest, tmp_path):
    out = tmp_path / "triage"
    report = fit_triage_on_manifest(pneumonia_models[0], pneumonia_manifest, out, TriageFitOptions(budget=0.25))
    n_test = int((pd.read_csv(pneumonia_manifest)["split"] == "test").sum())
    assert report["test"]["n"] == n_test and 0 <= report["test"]["referral_rate"] <= 1
    assert json.loads((out / "triage.json").read_text()) == json.loads(json.dumps(report))
    assert (out / "risk_coverage.png").is_file()
    # the report of the same model takes it; another model's evaluation refuses it
    ok = evaluate_bundle(pneumonia_models[0], pneumonia_manifest, tmp_path / "ev0",
                         BundleEvaluationOptions(n_bootstrap=20, triage_json=out / "triage.json"))
    assert ok.report.is_file()
    with pytest.raises(InputError, match="fitted on another model"):
        evaluate_bundle(pneumonia_models[1], pneumonia_manifest, tmp_path / "ev1",
                        BundleEvaluationOptions(n_bootstrap=20, triage_json=out / "triage.json"))


def test_explain_files_indexes_every_file_it_writes(pneumonia_models, data_dir, tmp_path):
    kermany = data_dir / "kermany_pediatric_pneumonia"
    rows = pd.read_csv(kermany / "manifest.csv").head(2)
    files = [kermany / p for p in rows["path"]]
    written = []
    index = explain_files(ModelBundle.load(pneumonia_models[0]), files, tmp_path, "gradcam", figure=True,
                          on_written=written.append)
    table = pd.read_csv(index)
    assert list(table.columns) == INDEX_COLUMNS and list(table["output"]) == [p.name for p in written]
    overlays = table[table["kind"] == "overlay"]
    assert len(overlays) == len(files) and len(table[table["kind"] == "figure"]) == len(files)
    for row in overlays.itertuples():
        h, w = read_image(files[row.input_position]).first_frame().shape
        assert Image.open(tmp_path / row.output).size == (w, h) == (row.width, row.height)


def test_subgroup_audit_refuses_a_missing_column_before_scoring(pneumonia_models, pneumonia_manifest, tmp_path):
    with pytest.raises(ManifestError, match="no column 'site'"):
        audit_bundle_subgroups(pneumonia_models[0], pneumonia_manifest, ["site"], tmp_path, split="test")
    assert not (tmp_path / "subgroups.json").exists()


def test_subgroup_audit_on_nih_validation(pneumonia_models, data_dir, tmp_path):
    """Groups partition the audited rows, and the overall AUROC is the AUROC of the same scores."""
    audit, table = audit_bundle_subgroups(pneumonia_models[0], data_dir / "nih_chestxray14" / "manifest.csv",
                                          ["sex"], tmp_path, label="label_abnormal", split="val", n_bootstrap=20)
    assert json.loads((tmp_path / "subgroups.json").read_text())["model_sha256"] == audit["model_sha256"]
    groups = audit["columns"]["sex"]["groups"]
    assert sum(g["n"] for g in groups) == audit["overall"]["n"] and len(table) == len(groups)
    assert np.isfinite(audit["overall"]["auroc"])

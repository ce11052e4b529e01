"""`radiolens train / evaluate / make-manifest / split` end to end on real data through the Typer app."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.models.bundle import ModelBundle

runner = CliRunner()


def test_train_then_evaluate(pneumonia_tiny, tmp_path, tiny_config):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(pneumonia_tiny, arch="lenet5")))
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--epochs", "1", "--mlflow"])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output
    bundle = ModelBundle.load(out / "model.pt")
    assert bundle.info.temperature > 0 and len(bundle.info.thresholds) == 1
    assert bundle.info.operating_point == "youden" and "per_class" in bundle.info.metrics
    assert (out / "report" / "report.html").is_file()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["n_test"] == 80
    assert (out / "mlflow.db").is_file() and any((out / "mlartifacts").rglob("model.pt"))

    res = runner.invoke(app, ["evaluate", "--model", str(out / "model.pt"), "--manifest",
                              str(out / "manifest_used.csv"), "--out", str(tmp_path / "ev"), "--n-bootstrap", "50"])
    assert res.exit_code == 0, res.output
    # both reports show the most confident errors as thumbnails, in the shared look, and never a file name
    names = {p.rsplit("/", 1)[-1] for p in pd.read_csv(out / "manifest_used.csv")["path"]}
    for page in (out / "report" / "report.html", tmp_path / "ev" / "report.html"):
        html = page.read_text()
        assert "Most confident errors on test" in html and html.count('<div class="thumbs">') == 1
        assert "Written by radiolens" in html
        assert not [n for n in names if n in html]
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # same model, same images, same val-fitted threshold -> the same test AUROC as the training job's report
    assert abs(again["per_class"][0]["auroc"]["estimate"] - metrics["per_class"][0]["auroc"]["estimate"]) < 1e-6


def test_leaking_manifest_fails_before_training(pneumonia_tiny, tmp_path, tiny_config):
    frame = pd.read_csv(pneumonia_tiny, dtype={"patient_id": str})
    val_patient = frame[frame.split == "val"].patient_id.iloc[0]
    frame.loc[frame.index[frame.split == "train"][0], "patient_id"] = val_patient
    bad = tmp_path / "leak.csv"
    frame.to_csv(bad, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(bad)))
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "error:" in res.output and "more than one split" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {manifest: x.csv}\n")
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1


def test_make_manifest_and_split(data_dir, tmp_path):
    out = tmp_path / "k.csv"
    res = runner.invoke(app, ["make-manifest", "kermany", str(data_dir / "kermany_pediatric_pneumonia" / "images"),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["split", str(out), "--out", str(tmp_path / "s.csv"), "--task", "multiclass",
                              "-l", "subtype", "--val", "0.15", "--test", "0.15"])
    assert res.exit_code == 0, res.output
    s = pd.read_csv(tmp_path / "s.csv", dtype={"patient_id": str})
    assert set(s.split) == {"train", "val", "test"} and (s.groupby("patient_id").split.nunique() == 1).all()


def test_tune_scores_on_validation_and_writes_a_config(pneumonia_tiny, tmp_path, tiny_config):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(pneumonia_tiny, arch="lenet5")))
    res = runner.invoke(app, ["tune", "--config", str(cfg), "--out", str(tmp_path / "t"), "--trials", "2",
                              "--epochs", "1"])
    assert res.exit_code == 0, res.output
    trials = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert len(trials) == 2 and trials["value"].between(0, 1).all()
    best = yaml.safe_load((tmp_path / "t" / "best_config.yaml").read_text())
    assert best["optim"]["lr"] == trials.loc[trials["value"].idxmax(), "params_lr"]
    assert best["data"]["test_split"] == "test"  # the saved config keeps the test split for the final run


def test_unknown_binary_label_fails_before_training(pneumonia_tiny, tmp_path, tiny_config):
    frame = pd.read_csv(pneumonia_tiny, dtype={"patient_id": str})
    frame.loc[[3, 50], "label"] = "FUNGAL"
    frame.loc[7, "label"] = "Pneumonia"
    bad = tmp_path / "fungal.csv"
    frame.to_csv(bad, index=False)
    cfg = tmp_path / "c.yaml"
    for negative in ("normal", None):  # declared negative, and the inferred one
        raw = tiny_config(bad)
        if negative:
            raw["data"]["label"]["negative"] = negative
        cfg.write_text(yaml.safe_dump(raw))
        res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.output
        assert "'FUNGAL' x2 (first CSV line 5)" in lines[0] and "'Pneumonia' x1 (first CSV line 9" in lines[0]
        assert not (tmp_path / "o" / "checkpoints").exists()


def test_multiclass_value_only_in_val_fails_before_training(pneumonia_tiny, tmp_path, tiny_config):
    frame = pd.read_csv(pneumonia_tiny, dtype={"patient_id": str})
    first_val = int(frame.index[frame.split == "val"][0])
    frame.loc[first_val, "label"] = "fungal"
    bad = tmp_path / "mc.csv"
    frame.to_csv(bad, index=False)
    raw = tiny_config(bad)
    raw["data"]["label"] = {"task": "multiclass", "columns": ["label"]}  # classes learned from the data
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"'fungal' x1 (first CSV line {first_val + 2})" in res.output and "never seen in the train" in res.output

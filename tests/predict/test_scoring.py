"""Batch scoring over a real archive: error rows for bad files, no PHI, crash-safe resume, flagged heatmaps."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from radiolens.models.backends import load_backend
from radiolens.predict import PredictConfig, Scorer, discover
from radiolens.predict.results import ResultStore


class InjectedCrash(BaseException):
    """Stands in for the process dying (OOM kill, power cut): not an Exception, so nothing may turn it into
    error rows, unlike a forward pass that raises."""


class CrashAfter:
    """Wraps a backend and dies on batch ``n`` (as an OOM kill or power cut would, mid-run)."""

    def __init__(self, inner, n: int):
        self.inner, self.n, self.calls = inner, n, 0
        self.info, self.kind, self.sha256 = inner.info, inner.kind, inner.sha256

    def predict_logits(self, batch):
        self.calls += 1
        if self.calls == self.n:
            raise InjectedCrash("injected crash")
        return self.inner.predict_logits(batch)


def test_discover_finds_images_and_extensionless_dicom_only(real_tree):
    keys = [it.key for it in discover(real_tree)]
    assert len(keys) == 38
    assert "pacs/study1/series1/IM0001" in keys and "normal/zz_corrupt.jpeg" in keys
    assert "notes.txt" not in keys and keys == sorted(keys)


def test_scoring_a_real_tree_with_a_corrupt_file(real_tree, fitted_pt, tmp_path, data_dir):
    out = tmp_path / "results.csv"
    summary = Scorer(load_backend(fitted_pt), PredictConfig(batch_size=8, workers=2, progress=False)).run(
        discover(real_tree), out)
    assert (summary.total, summary.scored, summary.errors) == (38, 37, 1)
    rows = pd.read_csv(out, keep_default_na=False)
    assert len(rows) == 38 and rows["path"].is_unique
    bad = rows[rows.status == "error"].iloc[0]
    assert bad.path == "normal/zz_corrupt.jpeg" and bad.error_code in {"unreadable_image", "truncated_file"}
    ok = rows[rows.status == "ok"]
    probs = ok["p_pneumonia"].astype(float)
    assert probs.between(0, 1).all()
    # the fitted model separates the two folders on average (real signal, not a constant)
    assert probs[ok.path.str.startswith("pneumonia/")].mean() > probs[ok.path.str.startswith("normal/")].mean()
    dicom = rows[rows.path == "pacs/study1/series1/IM0001"].iloc[0]
    assert dicom.status == "ok" and len(dicom.sop_uid_hash) == 16
    # no DICOM identifiers in the output: not the SOP UID, not the patient pseudonym
    text = out.read_text()
    manifest = pd.read_csv(data_dir / "siim_acr_pneumothorax" / "manifest.csv", dtype=str)
    assert manifest.image_id[0] not in text and manifest.patient_id[0] not in text


def test_crash_mid_run_loses_at_most_the_batch_in_flight_and_resume_completes(real_tree, fitted_pt, tmp_path):
    items = discover(real_tree)
    backend = load_backend(fitted_pt)
    out = tmp_path / "results.csv"
    with pytest.raises(InjectedCrash, match="injected crash"):
        Scorer(CrashAfter(backend, 3), PredictConfig(batch_size=8, workers=2, progress=False)).run(items, out)
    first = pd.read_csv(out, keep_default_na=False)
    assert len(first) == 16  # two complete batches on disk, the third (in flight) lost
    summary = Scorer(backend, PredictConfig(batch_size=8, workers=2, progress=False)).run(items, out)
    assert summary.skipped_already_done == 16 and summary.scored + summary.errors == 38 - 16
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 38 and final["path"].is_unique
    reference = tmp_path / "reference.csv"
    Scorer(backend, PredictConfig(batch_size=38, workers=0, progress=False)).run(items, reference)
    ref = pd.read_csv(reference, keep_default_na=False).set_index("path")
    merged = final.set_index("path").loc[ref.index]
    ok = ref.status == "ok"
    np.testing.assert_allclose(merged.loc[ok, "p_pneumonia"].astype(float), ref.loc[ok, "p_pneumonia"].astype(float),
                               atol=1e-6)


def test_torn_csv_line_is_cut_on_reopen(tmp_path):
    out = tmp_path / "r.csv"
    store = ResultStore(out, ["path", "p_x"])
    store.append([{"path": "a.png", "p_x": 0.1}, {"path": "b.png", "p_x": 0.2}])
    with open(out, "a") as fh:
        fh.write("c.png,0.3")  # killed before the newline
    assert ResultStore(out, ["path", "p_x"]).done_keys() == {"a.png", "b.png"}
    assert list(csv.reader(out.open()))[-1] == ["b.png", "0.2"]


def test_parquet_resume_from_part_files(real_tree, fitted_pt, tmp_path):
    items = discover(real_tree)
    backend = load_backend(fitted_pt)
    out = tmp_path / "results.parquet"
    with pytest.raises(InjectedCrash):
        Scorer(CrashAfter(backend, 2), PredictConfig(batch_size=10, workers=0, progress=False)).run(items, out)
    assert not out.exists() and len(list((tmp_path / "results.parquet.parts").glob("part-*.parquet"))) == 1
    summary = Scorer(backend, PredictConfig(batch_size=10, workers=0, progress=False)).run(items, out)
    assert summary.skipped_already_done == 10
    table = pd.read_parquet(out)
    assert len(table) == 38 and table["path"].is_unique and not (tmp_path / "results.parquet.parts").exists()
    assert table["p_pneumonia"].dtype == np.float64


def test_results_of_another_model_are_not_mixed_in(tmp_path):
    out = tmp_path / "r.csv"
    ResultStore(out, ["path", "p_a"]).append([{"path": "x", "p_a": 1.0}])
    from radiolens.errors import InputError

    with pytest.raises(InputError, match="other columns"):
        ResultStore(out, ["path", "p_b"])
    with pytest.raises(InputError, match=".csv or .parquet"):
        ResultStore(tmp_path / "r.xlsx", ["path"])


def test_heatmaps_only_for_flagged_cases(real_tree, fitted_pt, tmp_path):
    heat_dir = tmp_path / "heat"
    backend = load_backend(fitted_pt)
    out = tmp_path / "r.csv"
    cfg = PredictConfig(batch_size=16, workers=1, progress=False, near_threshold_margin=0.1)
    summary = Scorer(backend, cfg, cam_model=backend.bundle.model, heatmap_dir=heat_dir).run(discover(real_tree), out)
    rows = pd.read_csv(out, keep_default_na=False)
    ok = rows[rows.status == "ok"]
    p, thr = ok["p_pneumonia"].astype(float), backend.info.thresholds[0]
    expected_flagged = (p - thr).abs() < 0.1  # referred for review: the two-sided near-threshold fallback
    assert (ok["flagged"].astype(str) == "True").tolist() == expected_flagged.tolist()
    assert (ok["review_rule"] == "near_threshold_fallback").all()
    assert (ok["decision_pneumonia"].astype(str) == "True").tolist() == (p >= thr).tolist()
    assert 0 < summary.flagged < len(ok), "a fitted model should leave some clear cases unflagged"
    explained = expected_flagged | (p >= thr)  # heatmaps for flagged or positive cases
    assert (~explained).any(), "a fitted model should leave some clear negatives without a heatmap"
    files = {f.name for f in heat_dir.glob("*.png")}
    assert files == set(ok.loc[explained, "heatmap"]) and summary.heatmaps == len(files)
    assert (ok.loc[~explained, "heatmap"] == "").all()
    assert not any("person" in f or "IM0001" in f for f in files)  # named by hash, not by input file name


def test_a_path_listed_twice_is_scored_once(real_tree, fitted_pt, tmp_path):
    items = discover(real_tree)[:5]
    out = tmp_path / "r.csv"
    summary = Scorer(load_backend(fitted_pt), PredictConfig(batch_size=4, workers=0, progress=False)).run(
        items + items[:2], out)
    rows = pd.read_csv(out, keep_default_na=False)
    assert summary.scored + summary.errors == 5 and len(rows) == 5 and rows["path"].tolist() == [i.key for i in items]

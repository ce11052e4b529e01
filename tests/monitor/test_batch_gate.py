"""``radiolens predict`` applies the service's input gate: the same verdicts and scores as the monitoring
path (``observe_images``) on real chest and non-chest files, on PyTorch and on ONNX Runtime."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.errors import InputError
from radiolens.io import read_image
from radiolens.models.backends import load_backend
from radiolens.models.bundle import ModelBundle
from radiolens.monitor.profile import MonitoringProfile, observe_images
from radiolens.predict import PredictConfig, Scorer, discover


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory, val_halves, non_chest_files) -> tuple[Path, dict[str, str]]:
    """24 held-in Kermany images and every readable real non-chest file; key -> 'chest' | 'other'."""
    root = tmp_path_factory.mktemp("mixed")
    kinds: dict[str, str] = {}
    for i, (path, _) in enumerate(val_halves[1][:24]):
        shutil.copy(path, root / f"chest_{i:02d}{path.suffix}")
        kinds[f"chest_{i:02d}{path.suffix}"] = "chest"
    for i, path in enumerate(non_chest_files):
        try:
            read_image(path)
        except InputError:
            continue  # refused by the reader: an error row, covered in tests/predict
        name = f"other_{i:03d}_{path.name}"
        shutil.copy(path, root / name)
        kinds[name] = "other"
    return root, kinds


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {Path(r["path"]).name: r for r in csv.DictReader(fh)}


def test_predict_gate_matches_the_monitoring_path(registered, mixed_tree, tmp_path):
    path, bundle = registered
    root, kinds = mixed_tree
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(app, ["predict", str(root), "--model", str(path), "--out", str(out),
                                      "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "input gate: header rules + learned score" in result.output
    rows = _rows(out)
    assert set(rows) == set(kinds)

    # The reference: what the service's monitoring records for the same images.
    profile = MonitoringProfile.from_bundle(bundle)
    names = sorted(kinds)
    verdicts = dict(zip(names, (g for g, _ in observe_images(bundle, profile,
                                                             (read_image(root / n) for n in names))), strict=True))
    for name in names:
        row, ref = rows[name], verdicts[name]
        assert row["status"] == ref.status, (name, row["flag_reason"], ref.reasons)
        assert float(row["ood_score"]) == pytest.approx(ref.ood_score, rel=1e-3, abs=1e-3)
        if ref.passed:
            assert row["prediction"] != "not assessed" and not math.isnan(float(row["p_pneumonia"]))
        else:  # as the service: no probability, flagged for a human, reasons in plain words
            assert row["prediction"] == "not assessed" and math.isnan(float(row["p_pneumonia"]))
            assert row["flagged"] == "True" and row["review_rule"] == "input_gate"
            assert row["flag_reason"] == "not assessed by the model: " + ref.reason()  # the service's words

    others = [n for n in names if kinds[n] == "other"]
    chest = [n for n in names if kinds[n] == "chest"]
    assert len(others) >= 50
    assert sum(rows[n]["status"] == "out_of_distribution" for n in others) >= 0.95 * len(others)
    assert sum(rows[n]["status"] == "out_of_distribution" for n in chest) <= 3  # target 2 % false rejection
    ct = next(n for n in others if n.endswith("_693_UNCR.dcm"))
    assert "modality CT" in rows[ct]["flag_reason"]

    # A re-run resumes: refused rows are final results, not errors to retry.
    again = CliRunner().invoke(app, ["predict", str(root), "--model", str(path), "--out", str(out),
                                     "--no-progress", "--workers", "0"])
    assert again.exit_code == 0 and f"{len(kinds)} already in r.csv" in again.output


def test_onnx_backend_gates_like_pytorch(registered, mixed_tree, tmp_path):
    from radiolens.models.export import export_onnx

    path, bundle = registered
    root, kinds = mixed_tree
    items = discover(root)
    x = np.stack([bundle.preprocess(read_image(items[0].path)).numpy()])
    export_onnx(bundle, tmp_path / "m.onnx", x)
    cfg = PredictConfig(workers=0, progress=False)
    torch_summary = Scorer(load_backend(path), cfg).run(items, tmp_path / "torch.csv")
    onnx_scorer = Scorer(load_backend(tmp_path / "m.onnx", threads=1), cfg)
    assert onnx_scorer.gate_mode == "header rules + learned score"
    onnx_summary = onnx_scorer.run(items, tmp_path / "onnx.csv")
    assert onnx_summary.not_assessed == torch_summary.not_assessed > 0
    a, b = _rows(tmp_path / "torch.csv"), _rows(tmp_path / "onnx.csv")
    for name in kinds:
        assert a[name]["status"] == b[name]["status"], name
        assert float(b[name]["ood_score"]) == pytest.approx(float(a[name]["ood_score"]), rel=1e-3, abs=1e-2)


def test_gate_off_and_header_rules_only(registered, mixed_tree, tmp_path):
    path, _ = registered
    root, kinds = mixed_tree
    items = discover(root)
    cfg = PredictConfig(workers=0, progress=False)
    off = Scorer(load_backend(path), cfg, gate=False).run(items, tmp_path / "off.csv")
    assert off.gate == "off" and off.not_assessed == 0 and off.scored == len(kinds)
    assert all(r["ood_score"] == "" for r in _rows(tmp_path / "off.csv").values())

    unregistered = tmp_path / "plain.pt"
    plain = ModelBundle.load(path)  # a copy: the session's fixtures stay registered
    plain.info.monitoring = {}
    plain.save(unregistered)
    header = Scorer(load_backend(unregistered), cfg).run(items, tmp_path / "header.csv")
    assert header.gate == "header rules (no monitoring profile in the model)"
    rows = _rows(tmp_path / "header.csv")
    assert all(rows[n]["status"] == "ok" for n in kinds if kinds[n] == "chest")  # no learned score: no FRR
    refused = {n for n in kinds if rows[n]["status"] == "out_of_distribution"}
    assert any(n.endswith("_693_UNCR.dcm") for n in refused)  # CT, by its header
    assert any(n.endswith("grace_hopper.jpg") for n in refused)  # a colour photo
    assert header.not_assessed == len(refused) < off.scored

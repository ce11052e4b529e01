"""`radiolens predict` end to end on real files, with the ONNX backend, and killed mid-run then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.models.bundle import ModelBundle
from radiolens.models.export import export_onnx
from radiolens.predict.sources import discover, load_preprocessed


def test_cli_predict_with_onnx_backend_and_heatmaps(real_tree, fitted_pt, tmp_path):
    bundle = ModelBundle.load(fitted_pt)
    batch, _ = load_preprocessed(discover(real_tree), bundle.info, limit=8)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(bundle, onnx_path, batch)
    out, heat = tmp_path / "r.parquet", tmp_path / "heat"
    args = ["predict", str(real_tree), "--model", str(onnx_path), "--out", str(out), "--batch-size", "8",
            "--workers", "2", "--no-progress", "--heatmaps-for-flagged", str(heat), "--cam-model", str(fitted_pt)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "37 scored, 1 errors" in result.output
    table = pd.read_parquet(out)
    assert len(table) == 38 and set(table["model"]) == {"lenet5-binary@onnx-fp32"}
    explained = table["flagged"] | table["decision_pneumonia"].fillna(False).astype(bool)  # flagged or positive
    assert len(list(heat.glob("*.png"))) == int(explained.sum()) > 0
    again = CliRunner().invoke(app, args)
    # the corrupt file is retried (still corrupt: one error row again, not two)
    assert again.exit_code == 0 and "37 already in" in again.output and "1 earlier errors retried" in again.output
    assert len(pd.read_parquet(out)) == 38


def test_cli_predict_bad_inputs_are_one_line_errors(fitted_pt, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(tmp_path / "nowhere"), "--model", str(fitted_pt), "--out",
                            str(tmp_path / "r.csv")])
    assert r.exit_code == 2 and "input not found" in r.output and "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["predict", str(tmp_path / "empty"), "--model", str(fitted_pt), "--out",
                            str(tmp_path / "r.xlsx")])
    assert r.exit_code == 2 and ".csv or .parquet" in r.output
    onnx_less = runner.invoke(app, ["predict", str(tmp_path), "--model", str(fitted_pt), "--backend", "onnx",
                                    "--out", str(tmp_path / "r.csv")])
    assert onnx_less.exit_code == 2 and "exported .onnx" in onnx_less.output


@pytest.mark.slow  # ~30 s: a subprocess scoring 631 real images twice
def test_killed_run_resumes_without_loss_or_duplicates(fitted_pt, tmp_path, data_dir):
    manifest = data_dir / "kermany_pediatric_pneumonia" / "manifest.csv"
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "radiolens.cli", "predict", str(manifest), "--split", "val", "--model",
           str(fitted_pt), "--out", str(out), "--batch-size", "4", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 40):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group: the CLI and its decoding worker
    proc.wait()
    partial = pd.read_csv(out, keep_default_na=False)
    n_val = len(discover(manifest, split="val"))
    assert 0 < len(partial) < n_val, "the run should have been killed part-way"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == n_val and final["path"].is_unique
    assert (final["status"] == "ok").all()
    assert f"{len(partial)} already in" in done.stdout

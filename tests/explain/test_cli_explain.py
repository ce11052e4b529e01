from __future__ import annotations

import torch
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model


def _bundle(tmp_path):
    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["abnormal"], input_size=(64, 64))
    path = tmp_path / "m.pt"
    ModelBundle(info=info, model=create_model("small_cnn", 1)).save(path)
    return path


def test_explain_writes_overlays_at_original_size(tmp_path, data_dir):
    from PIL import Image

    model = _bundle(tmp_path)
    img = data_dir / "tbx11k" / "imgs" / "tb" / "tb0005.png"
    r = CliRunner().invoke(app, ["explain", str(img), "--model", str(model), "--out", str(tmp_path / "o"),
                                 "--class", "abnormal", "--class", "normal", "--method", "gradcam++", "--filters"])
    assert r.exit_code == 0, r.output
    pngs = sorted(p.name for p in (tmp_path / "o").glob("*.png"))
    assert pngs == ["filters.png", "image000_abnormal_gradcampp.png", "image000_feature_maps.png",
                    "image000_normal_gradcampp.png"]
    assert Image.open(tmp_path / "o" / "image000_abnormal_gradcampp.png").size[0] > 300


def test_bad_inputs_exit_2_with_one_line(tmp_path, data_dir):
    model = _bundle(tmp_path)
    manifest = data_dir / "nih_chestxray14" / "manifest.csv"
    r = CliRunner().invoke(app, ["audit-subgroups", "--model", str(model), "--manifest", str(manifest),
                                 "--column", "site", "--split", "val", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "no column 'site'" in r.output and "Traceback" not in r.output
    img = data_dir / "tbx11k" / "imgs" / "tb" / "tb0005.png"
    r = CliRunner().invoke(app, ["explain", str(img), "--model", str(model), "--out", str(tmp_path / "o"),
                                 "--class", "nonsense"])
    assert r.exit_code == 2 and "unknown class" in r.output


def test_audit_subgroups_cli_on_nih_val(tmp_path, data_dir):
    model = _bundle(tmp_path)
    manifest = data_dir / "nih_chestxray14" / "manifest.csv"
    r = CliRunner().invoke(app, ["audit-subgroups", "--model", str(model), "--manifest", str(manifest),
                                 "--column", "sex", "--column", "age_band", "--split", "val",
                                 "--label", "label_abnormal",
                                 "--n-bootstrap", "50", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "subgroups.json").is_file() and "equalized-odds" in r.output

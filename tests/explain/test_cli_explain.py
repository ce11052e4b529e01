from __future__ import annotations

from pathlib import Path

import pytest
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
    assert Image.open(tmp_path / "o" / "image000_abnormal_gradcampp.png").size == Image.open(img).size


def test_overlays_are_exactly_the_input_size_with_an_index(tmp_path, data_dir):
    """Regression: the overlay was a 730x373 matplotlib figure whatever the image. Now each overlay PNG has
    exactly its input's width x height (a real SIIM DICOM, 1024 x 1024; a Kermany JPEG, 224 x 224 like every
    Kermany image in the shared set; a non-square real JPEG from the Figure 1 COVID set, 844 x 480), output
    names carry no part of the input name, and index.csv maps every output to its input and target."""
    import csv

    import numpy as np
    import pydicom
    from PIL import Image

    from radiolens.models.bundle import file_sha256

    model = _bundle(tmp_path)
    dcm = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))[0]
    header = pydicom.dcmread(dcm, stop_before_pixels=True)
    kermany = sorted((data_dir / "kermany_pediatric_pneumonia" / "images").rglob("*.jpeg"))[0]
    wide = data_dir / "covid_figure1" / "images" / "COVID-00020.jpg"
    inputs = [str(dcm), str(kermany), str(wide)]
    expected = {str(dcm): (int(header.Columns), int(header.Rows)), str(kermany): Image.open(kermany).size,
                str(wide): Image.open(wide).size}
    assert expected[str(dcm)] == (1024, 1024) and expected[str(wide)][0] != expected[str(wide)][1]
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["explain", *inputs, "--model", str(model), "--out", str(out),
                                 "--class", "abnormal", "--class", "normal", "--figure"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "index.csv", encoding="utf-8")))
    overlays = [row for row in rows if row["kind"] == "overlay"]
    assert len(overlays) == 6 and {row["class"] for row in overlays} == {"abnormal", "normal"}
    for row in overlays:
        png = Image.open(out / row["output"])
        assert png.size == expected[row["input"]], row
        assert (int(row["width"]), int(row["height"])) == png.size and png.mode == "RGB"
        assert row["input_sha256"] == file_sha256(row["input"])
        assert row["input_position"] == str(inputs.index(row["input"]))
        assert row["model_output"] == "0" and row["negated_logit"] == str(row["class"] == "normal")
        assert png.text["radiolens:class"] == row["class"] and png.text["Comment"].startswith("Advisory only")
        assert float(png.text["radiolens:probability"]) == float(row["probability"])
        assert 0 <= float(row["probability"]) <= 1
    # the two binary classes' probabilities add up for each image
    pos = {(row["input"], row["class"]): float(row["probability"]) for row in overlays}
    for f in expected:
        assert pos[(f, "abnormal")] + pos[(f, "normal")] == pytest.approx(1.0, abs=1e-5)
    figures = [row for row in rows if row["kind"] == "figure"]
    assert len(figures) == 6 and all((out / row["output"]).is_file() for row in figures)
    assert {row["output"] for row in rows} == {p.name for p in out.glob("*.png")}
    # no part of an input's name reaches an output file name
    for row in rows:
        assert Path(row["input"]).stem[:12] not in row["output"]
    # the overlay really is the image under the map: where the map is ~0 the pixel is the grey image dimmed
    # by the blend, so the overlay correlates with the windowed input
    from radiolens.io import read_image

    grey = read_image(dcm).first_frame()
    first = next(row for row in overlays if row["input"] == str(dcm))
    rgb = np.asarray(Image.open(out / first["output"]), dtype=np.float32).mean(axis=2)
    assert np.corrcoef(rgb.ravel(), grey.ravel())[0, 1] > 0.5


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


def test_index_maps_what_was_written_when_a_later_input_is_unreadable(tmp_path, data_dir):
    """The index is written as files appear: a run stopped by an unreadable second input (exit 2, one line)
    still maps the first image's overlay, and the bad file's name reaches no output name."""
    import csv

    model = _bundle(tmp_path)
    good = sorted((data_dir / "nih_chestxray14" / "images_64px").glob("*.png"))[0]
    bad = tmp_path / "Doe_Jane_scan.png"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["explain", str(good), str(bad), "--model", str(model), "--out", str(out)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    rows = list(csv.DictReader(open(out / "index.csv", encoding="utf-8")))
    assert [(row["output"], row["input"], row["kind"]) for row in rows] == [
        ("image000_abnormal_gradcam.png", str(good), "overlay")]
    assert sorted(p.name for p in out.iterdir()) == ["image000_abnormal_gradcam.png", "index.csv"]

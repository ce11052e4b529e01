"""What the evaluation report tells a reader beyond the numbers: an under-trained model, a threshold that does
not carry over from validation to test, the most confident errors as thumbnails, named confusion axes, and one
look shared by every HTML report."""

from __future__ import annotations

import base64
from importlib import resources
from io import BytesIO

import numpy as np
import pydicom
from PIL import Image

from radiolens.evaluate import diagnose_training, evaluate_predictions, write_report
from radiolens.evaluate.error_examples import THUMB_PX, report_examples, select_errors, thumbnails

SIIM_FILE = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _hist(aurocs):
    return [{"epoch": e, "train_loss": 0.7 / (e + 1), "val_loss": 0.6 - 0.02 * e, "val_auroc": a}
            for e, a in enumerate(aurocs)]


def test_best_epoch_last_is_called_under_trained():
    d = diagnose_training(_hist([0.70, 0.75, 0.78, 0.80, 0.81]))
    assert d["under_trained"] and d["best_epoch"] == 4
    assert d["message"].startswith("Under-trained: the best validation epoch is the last one run (epoch 4)")
    d = diagnose_training(_hist([0.70, 0.81, 0.80, 0.79, 0.79]))
    assert not d["under_trained"] and d["best_epoch"] == 1 and "Under-trained" not in d["message"]
    assert not diagnose_training(_hist([0.7]))["under_trained"]  # one epoch: nothing to judge


def _separable(n, pos_mean, rng):
    y = np.r_[np.ones(n), np.zeros(n)].astype(int)
    z = np.r_[rng.normal(pos_mean, 1.0, n), rng.normal(-2.0, 1.0, n)]
    return z.reshape(-1, 1), y


def test_test_sensitivity_far_below_validation_is_warned(tmp_path):
    rng = np.random.default_rng(0)
    vz, vy = _separable(300, 2.0, rng)
    shifted_z, shifted_y = _separable(300, -0.5, rng)  # positives look much more like negatives on test
    r = evaluate_predictions("binary", ["pneumonia"], shifted_z, shifted_y, vz, vy, n_bootstrap=0)
    gap = [w for w in r.warnings if "well below" in w]
    assert len(gap) == 1 and gap[0].startswith("pneumonia: test sensitivity")
    c = r.per_class[0]
    assert c["threshold_choice"]["val_sensitivity"] - c["at_threshold"]["sensitivity"] >= 0.10
    html = write_report(r, tmp_path, title="shift")["html"].read_text()
    assert "well below" in html

    same_z, same_y = _separable(300, 2.0, rng)  # the same population: no warning
    r = evaluate_predictions("binary", ["pneumonia"], same_z, same_y, vz, vy, n_bootstrap=0)
    assert not [w for w in r.warnings if "well below" in w]


def test_select_errors_takes_the_most_confident_mistakes():
    logits = np.array([[3.0], [1.0], [-2.0], [-0.1], [2.5], [-3.0], [0.5]])
    targets = np.array([0, 0, 1, 1, 1, 0, 0])
    cases = select_errors("binary", ["pneumonia"], logits, targets, 1.0, [0.5], per_kind=2)
    fps = [c.index for c in cases if c.kind == "false positive"]
    fns = [c.index for c in cases if c.kind == "false negative"]
    assert fps == [0, 1]  # negatives at p >= 0.5, most confident first (index 6 is the third)
    assert fns == [2, 3]  # positives below 0.5, most confident (lowest p) first
    assert all(c.class_name == "pneumonia" for c in cases)
    assert abs(cases[0].probability - 1 / (1 + np.exp(-3.0))) < 1e-12

    # multiclass: one-vs-rest per class, classes with the most positives first
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    cases = select_errors("multiclass", ["a", "b", "c"], logits, np.array([1, 1, 0, 0]), 1.0, [0.5] * 3)
    assert {(c.class_name, c.kind, c.index) for c in cases} == {
        ("a", "false positive", 0), ("a", "false negative", 2), ("b", "false negative", 0),
        ("c", "false positive", 2)}


def test_thumbnails_are_small_pixels_only_and_skip_burned_in(data_dir, tmp_path):
    from radiolens.io.formats import read_image

    source = data_dir / "siim_acr_pneumothorax" / "dicom" / SIIM_FILE
    clean, burned = tmp_path / "a.dcm", tmp_path / "b.dcm"
    ds = pydicom.dcmread(source)
    ds.BurnedInAnnotation = "NO"
    ds.save_as(clean)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(burned)
    jpegs = sorted((data_dir / "kermany_pediatric_pneumonia").rglob("*.jpeg"))[:2]
    paths = [clean, burned, *jpegs]
    logits = np.array([[4.0], [4.0], [-4.0], [3.0]])
    targets = np.array([0, 0, 1, 0])
    out = report_examples("binary", ["pneumonia"], logits, targets, 1.0, [0.5], paths)
    # the burned-in DICOM is one of the two most confident false positives but is never shown
    assert [e["kind"] for e in out] == ["false positive", "false positive", "false negative"]
    for e in out:
        img = Image.open(BytesIO(base64.b64decode(e["uri"].split(",", 1)[1])))
        assert max(img.size) <= THUMB_PX and img.mode == "L"
        assert set(e) == {"class_name", "kind", "probability", "threshold", "uri"}
    first = Image.open(BytesIO(base64.b64decode(out[0]["uri"].split(",", 1)[1])))
    expected = read_image(clean).first_frame()
    assert abs(first.size[0] / first.size[1] - expected.shape[1] / expected.shape[0]) < 0.02  # aspect kept
    # rows that do not match the evaluated split give nothing rather than wrong pictures
    assert report_examples("binary", ["pneumonia"], logits, targets, 1.0, [0.5], paths[:3]) == []
    assert thumbnails([], paths) == []


def test_every_report_template_extends_the_one_base():
    for package, name in (("radiolens.evaluate", "report.html"), ("radiolens.evaluate", "model_card.html"),
                          ("radiolens.monitor", "monitor_report.html")):
        text = resources.files(package).joinpath("templates", name).read_text("utf-8")
        assert text.startswith('{% extends "base.html" %}'), name
        assert "<style" not in text and "<html" not in text, name  # the look lives in base.html only


def test_report_names_the_classes_in_confusion_axes(monkeypatch):
    from radiolens.evaluate import plots

    seen = []
    real = plots._matrix
    monkeypatch.setattr(plots, "_matrix", lambda ax, cm, rows, cols, title: (seen.append(rows),
                                                                             real(ax, cm, rows, cols, title)))
    plots.per_class_confusion_figure([{"name": "pneumonia", "threshold": 0.4,
                                       "confusion_matrix": [[5, 1], [2, 7]]}])
    assert seen == [["not pneumonia", "pneumonia"]]

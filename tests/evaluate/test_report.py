import json
import re

from evaluate_synthetic import binary, multiclass, multilabel

from radiolens.evaluate import evaluate_predictions, reliability_bins, reliability_diagram, write_report


def _assert_self_contained(html: str) -> None:
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html


def test_binary_report_is_self_contained_and_matches_json(tmp_path):
    tz, ty = binary(150, seed=0)
    vz, vy = binary(150, seed=1)
    hist = [{"epoch": e, "train_loss": 0.7 / (e + 1), "val_loss": 0.5 + 0.01 * (e - 3) ** 2, "val_auroc": 0.8}
            for e in range(10)]
    r = evaluate_predictions("binary", ["pneumonia"], tz, ty, vz, vy, history=hist, n_bootstrap=100)
    paths = write_report(r, tmp_path / "rep", title="Demo <b>report</b>", model_info={"arch": "small_cnn"})
    html = paths["html"].read_text()
    _assert_self_contained(html)
    assert "Demo &lt;b&gt;report&lt;/b&gt;" in html  # autoescaped
    assert f"{r.per_class[0]['auroc']['estimate']:.3f}" in html
    assert "Over-fitting from epoch" in html and "small_cnn" in html
    assert html.count("data:image/png;base64,") == 5  # ROC, PR, confusion, reliability, training
    data = json.loads(paths["json"].read_text())
    assert data["per_class"][0]["auroc"] == r.to_dict()["per_class"][0]["auroc"]
    assert data["title"] == "Demo <b>report</b>" and data["model_info"] == {"arch": "small_cnn"}


def test_multiclass_and_multilabel_reports(tmp_path):
    tz, ty = multiclass(120, 3, seed=0)
    vz, vy = multiclass(120, 3, seed=1)
    r = evaluate_predictions("multiclass", ["normal", "bacterial", "viral"], tz, ty, vz, vy, n_bootstrap=50)
    html = write_report(r, tmp_path / "mc")["html"].read_text()
    _assert_self_contained(html)
    assert "Argmax decision (rows: true class)" in html and "No training history" in html

    tz, tY = multilabel(120, 3, seed=0)
    vz, vY = multilabel(120, 3, seed=1)
    tY[:, 1] = 0
    r = evaluate_predictions("multilabel", ["a", "<script>x</script>", "c"], tz, tY, vz, vY, n_bootstrap=50)
    html = write_report(r, tmp_path / "ml")["html"].read_text()
    _assert_self_contained(html)
    assert "<script>" not in html and "undefined (no positive cases in this set)" in html


def test_reliability_diagram_building_block():
    import numpy as np

    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    fig = reliability_diagram({"model": reliability_bins(y, p)}, title="x")
    assert len(fig.axes) == 2

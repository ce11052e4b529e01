"""The evaluation library on real logits: quick logistic regressions on real chest X-ray pixels
(PneumoniaMNIST binary, NIH ChestX-ray14 multi-label with rare findings), checked against scikit-learn."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from radiolens.evaluate import evaluate_predictions, write_report

pytestmark = pytest.mark.realdata

FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def test_pneumoniamnist_logistic_regression(data_dir, tmp_path):
    d = np.load(data_dir / "medmnist" / "pneumoniamnist.npz")
    X = {s: d[f"{s}_images"].reshape(len(d[f"{s}_images"]), -1) / 255.0 for s in ("train", "val", "test")}
    y = {s: d[f"{s}_labels"].reshape(-1).astype(int) for s in ("train", "val", "test")}
    scaler = StandardScaler().fit(X["train"])
    clf = LogisticRegression(C=0.01, max_iter=2000).fit(scaler.transform(X["train"]), y["train"])
    z = {s: clf.decision_function(scaler.transform(X[s]))[:, None] for s in ("val", "test")}

    r = evaluate_predictions("binary", ["pneumonia"], z["test"], y["test"], z["val"], y["val"],
                             operating_point="sensitivity:0.95", n_bootstrap=300, seed=0)
    c = r.per_class[0]
    p = expit(z["test"][:, 0] / r.temperature)
    assert c["auroc"]["estimate"] == pytest.approx(roc_auc_score(y["test"], p), abs=1e-12)
    assert c["auroc"]["lower"] < c["auroc"]["estimate"] < c["auroc"]["upper"]
    assert c["auroc"]["estimate"] > 0.8  # a pixel-level linear model is far from chance on this task
    assert c["threshold_choice"]["val_sensitivity"] >= 0.95
    assert c["n_positive"] == int(y["test"].sum()) and c["n_negative"] == int((1 - y["test"]).sum())
    assert 0 < r.temperature < 20
    paths = write_report(r, tmp_path, title="PneumoniaMNIST logistic regression")
    assert paths["html"].stat().st_size > 50_000
    assert json.loads(paths["json"].read_text())["n_test"] == len(y["test"])


def test_nih_multilabel_rare_findings(data_dir, tmp_path):
    folder = data_dir / "nih_chestxray14"
    m = pd.read_csv(folder / "manifest.csv")
    Y = np.stack([m.finding_labels.str.split("|").apply(lambda s, f=f: f in s).to_numpy(int) for f in FINDINGS], 1)
    X = np.stack([np.asarray(Image.open(folder / p).convert("L").resize((16, 16)), dtype=np.float32).ravel() / 255
                  for p in m.path])
    split = m.split.to_numpy()
    Xs = StandardScaler().fit(X[split == "train"]).transform(X)
    z = {s: np.zeros(((split == s).sum(), len(FINDINGS))) for s in ("val", "test")}
    for k in range(len(FINDINGS)):
        yk = Y[split == "train", k]
        if yk.sum() < 2:
            continue  # no training positive (Hernia in this split): logit 0 for every case
        clf = LogisticRegression(C=0.01, max_iter=2000, class_weight="balanced").fit(Xs[split == "train"], yk)
        for s in z:
            z[s][:, k] = clf.decision_function(Xs[split == s])
    Yt, Yv = Y[split == "test"], Y[split == "val"]

    r = evaluate_predictions("multilabel", FINDINGS, z["test"], Yt, z["val"], Yv, n_bootstrap=200)
    p = expit(z["test"] / r.temperature)
    for k, c in enumerate(r.per_class):
        if Yt[:, k].sum() in (0, len(Yt)):
            assert c["auroc"]["estimate"] is None and "undefined" in c["auroc"]["reason"]
        else:
            assert c["auroc"]["estimate"] == pytest.approx(roc_auc_score(Yt[:, k], p[:, k]), abs=1e-12)
        if Yv[:, k].sum() == 0:
            assert c["threshold"] == 0.5 and c["threshold_choice"]["fallback"]
    defined = [k for k in range(len(FINDINGS)) if 0 < Yt[:, k].sum() < len(Yt)]
    assert len(defined) < len(FINDINGS)  # the shared split really has a finding absent from test
    assert r.summary["macro_auroc"]["estimate"] == pytest.approx(
        np.mean([roc_auc_score(Yt[:, k], p[:, k]) for k in defined]), abs=1e-12)
    html = write_report(r, tmp_path, title="NIH multilabel")["html"].read_text()
    assert "undefined (no positive cases in this set)" in html

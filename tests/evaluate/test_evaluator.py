import json

import numpy as np
import pytest
from evaluate_synthetic import binary, multiclass, multilabel
from scipy.special import expit, softmax
from sklearn.metrics import average_precision_score, roc_auc_score

from radiolens.evaluate import choose_threshold, evaluate_predictions, fit_temperature


def test_binary_end_to_end_against_sklearn():
    tz, ty = binary(300, seed=0)
    vz, vy = binary(250, seed=1)
    r = evaluate_predictions("binary", ["pneumonia"], tz, ty, vz, vy, n_bootstrap=200, seed=0)
    t = fit_temperature(vz, vy, "binary")
    assert r.temperature == pytest.approx(t)
    p = expit(tz[:, 0] / t)
    c = r.per_class[0]
    assert c["auroc"]["estimate"] == pytest.approx(roc_auc_score(ty, p), abs=1e-12)
    assert c["average_precision"]["estimate"] == pytest.approx(average_precision_score(ty, p), abs=1e-12)
    assert c["auroc"]["lower"] < c["auroc"]["estimate"] < c["auroc"]["upper"]
    # the threshold is the Youden point of the *validation* probabilities, applied to test
    expected_thr = choose_threshold(vy, expit(vz[:, 0] / t), "youden")
    assert r.thresholds == [pytest.approx(expected_thr)]
    pred = p >= expected_thr
    assert c["at_threshold"]["sensitivity"] == pytest.approx(pred[ty == 1].mean())
    assert c["at_threshold"]["specificity"] == pytest.approx((~pred[ty == 0]).mean())
    h = r.summary["headline"]
    assert h["accuracy"] == pytest.approx((pred == ty).mean())
    assert "balanced_accuracy" in h and "sensitivity" in h  # accuracy never alone
    assert r.warnings == []


def test_thresholds_do_not_depend_on_test_labels():
    tz, ty = binary(200, seed=2)
    vz, vy = binary(200, seed=3)
    a = evaluate_predictions("binary", ["x"], tz, ty, vz, vy, n_bootstrap=0)
    b = evaluate_predictions("binary", ["x"], tz, 1 - ty, vz, vy, n_bootstrap=0)
    assert a.thresholds == b.thresholds and a.temperature == b.temperature


def test_binary_accepts_one_dimensional_logits():
    tz, ty = binary(100, seed=4)
    r = evaluate_predictions("binary", ["x"], tz[:, 0], ty, n_bootstrap=0)
    assert r.thresholds == [0.5] and r.temperature == 1.0
    assert any("No validation set" in w for w in r.warnings)


def test_sensitivity_operating_point_reaches_target_on_validation():
    tz, ty = binary(300, seed=5)
    vz, vy = binary(300, seed=6)
    r = evaluate_predictions("binary", ["x"], tz, ty, vz, vy, operating_point="sensitivity:0.95", n_bootstrap=0)
    assert r.per_class[0]["threshold_choice"]["val_sensitivity"] >= 0.95


def test_multiclass_end_to_end():
    names = ["normal", "bacterial", "viral"]
    tz, ty = multiclass(400, 3, seed=0)
    vz, vy = multiclass(300, 3, seed=1)
    r = evaluate_predictions("multiclass", names, tz, ty, vz, vy, n_bootstrap=100)
    probs = softmax(tz / r.temperature, axis=1)
    onehot = np.eye(3)[ty]
    for k, c in enumerate(r.per_class):
        assert c["auroc"]["estimate"] == pytest.approx(roc_auc_score(onehot[:, k], probs[:, k]), abs=1e-12)
    assert r.summary["macro_auroc"]["estimate"] == pytest.approx(
        roc_auc_score(ty, probs, multi_class="ovr", average="macro"), abs=1e-12)
    assert r.summary["micro_auroc"]["estimate"] == pytest.approx(roc_auc_score(onehot, probs, average="micro"),
                                                                 abs=1e-12)
    cm = np.array(r.summary["argmax"]["confusion_matrix"])
    assert cm.sum() == 400 and np.trace(cm) == (probs.argmax(1) == ty).sum()
    assert len(r.thresholds) == 3
    assert r.calibration["test"]["brier_after"] == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, 1)))


def test_multilabel_with_a_class_absent_from_test_and_validation():
    names = ["effusion", "nodule", "hernia"]
    tz, tY = multilabel(200, 3, seed=0, prevalence=[0.4, 0.1, 0.02])
    vz, vY = multilabel(150, 3, seed=1, prevalence=[0.4, 0.1, 0.02])
    tY[:, 2] = 0  # no hernia in test
    vY[:, 2] = 0  # nor in validation
    r = evaluate_predictions("multilabel", names, tz, tY, vz, vY, n_bootstrap=100)
    hernia = r.per_class_by_name("hernia")
    assert hernia["auroc"]["estimate"] is None and "no positive" in hernia["auroc"]["reason"]
    assert hernia["threshold"] == 0.5
    assert any("hernia: AUROC undefined" in w for w in r.warnings)
    assert any("hernia: validation has no positive" in w for w in r.warnings)
    p = expit(tz / r.temperature)
    expected_macro = np.mean([roc_auc_score(tY[:, k], p[:, k]) for k in (0, 1)])
    assert r.summary["macro_auroc"]["estimate"] == pytest.approx(expected_macro, abs=1e-12)
    assert r.summary["n_classes_auroc_defined"] == 2
    json.dumps(r.to_dict(), allow_nan=False)  # undefined values are None, not NaN


def test_to_dict_is_json_safe_and_complete():
    tz, ty = binary(120, seed=7)
    vz, vy = binary(120, seed=8)
    hist = [{"epoch": e, "train_loss": 0.7 - 0.05 * e, "val_loss": 0.7 - 0.03 * e, "val_auroc": 0.6 + 0.03 * e,
             "lr": np.float32(1e-3)} for e in range(5)]
    r = evaluate_predictions("binary", ["x"], tz, ty, vz, vy, history=hist, n_bootstrap=50)
    d = json.loads(r.to_json())
    assert d["schema"] == "radiolens-evaluation/1"
    assert d["training"]["diagnosis"]["verdict"] == "not_converged"
    assert set(d["calibration"]["test"]) == {"ece_before", "ece_after", "brier_before", "brier_after"}
    assert d["curves"]["x"]["roc"]["fpr"][0] == 0.0
    bm = r.bundle_metrics()
    assert bm["per_class"]["x"]["auroc"] == d["per_class"][0]["auroc"]["estimate"]
    json.dumps(bm, allow_nan=False)


def test_frozen_temperature_and_thresholds_are_used_as_given():
    tz, ty = binary(200, seed=9)
    vz, vy = binary(200, seed=10)
    r = evaluate_predictions("binary", ["x"], tz, ty, vz, vy, n_bootstrap=0, temperature=2.0, thresholds=[0.3])
    assert r.temperature == 2.0 and r.thresholds == [0.3]
    assert r.calibration["fitted_on"] == "given" and r.operating_point == "given thresholds"
    pred = expit(tz[:, 0] / 2.0) >= 0.3
    assert r.per_class[0]["at_threshold"]["tp"] == int((pred & (ty == 1)).sum())
    assert r.calibration["val_nll_after"] is not None  # validation still reported, just not fitted on


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": float("nan")}, {"thresholds": [0.5, 0.5]},
                                    {"thresholds": [1.5]}, {"thresholds": ["a"]}])
def test_bad_frozen_values(kwargs):
    from radiolens.evaluate import EvaluationInputError

    tz, ty = binary(50, seed=0)
    with pytest.raises(EvaluationInputError):
        evaluate_predictions("binary", ["x"], tz, ty, n_bootstrap=0, **kwargs)


def test_single_class_test_set_does_not_crash():
    tz, _ = binary(60, seed=11)
    vz, vy = binary(60, seed=12)
    r = evaluate_predictions("binary", ["x"], tz, np.zeros(60, int), vz, vy, n_bootstrap=20)
    h = r.summary["headline"]
    assert h["auroc"]["estimate"] is None and h["balanced_accuracy"] is None
    assert r.per_class[0]["at_threshold"]["sensitivity"] is None
    json.dumps(r.to_dict(), allow_nan=False)


def test_single_class_validation_skips_temperature():
    tz, ty = binary(80, seed=13)
    vz, _ = binary(80, seed=14)
    r = evaluate_predictions("binary", ["x"], tz, ty, vz, np.zeros(80, int), n_bootstrap=0)
    assert r.temperature == 1.0 and r.calibration["fitted_on"] is None
    assert any("temperature scaling skipped" in w for w in r.warnings)


def test_history_with_torch_and_numpy_values_serialises():
    import torch

    tz, ty = binary(60, seed=15)
    hist = [{"epoch": e, "train_loss": torch.tensor(0.5 - 0.05 * e), "val_loss": np.float64(0.6 - 0.04 * e),
             "ckpt": __import__("pathlib").Path("/tmp/x.ckpt")} for e in range(4)]
    r = evaluate_predictions("binary", ["x"], tz, ty, history=hist, n_bootstrap=0)
    d = json.loads(r.to_json())
    assert d["training"]["history"][1]["train_loss"] == pytest.approx(0.45)
    assert d["training"]["history"][0]["ckpt"] == "/tmp/x.ckpt"

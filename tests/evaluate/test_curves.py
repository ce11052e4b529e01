from radiolens.evaluate import diagnose_training


def _hist(train, val, auroc=None):
    return [{"epoch": i, "train_loss": t, "val_loss": v, **({"val_auroc": auroc[i]} if auroc else {})}
            for i, (t, v) in enumerate(zip(train, val, strict=True))]


def test_overfitting_names_the_epoch():
    train = [0.7, 0.5, 0.4, 0.3, 0.2, 0.12, 0.08, 0.05]
    val = [0.72, 0.55, 0.48, 0.47, 0.5, 0.56, 0.62, 0.70]
    d = diagnose_training(_hist(train, val))
    assert d["verdict"] == "overfitting" and d["overfit_from_epoch"] == 3
    assert "epoch 3" in d["message"] and "Over-fitting" in d["message"]


def test_flat_training_loss_is_underfitting():
    d = diagnose_training(_hist([0.69, 0.69, 0.688, 0.687, 0.686], [0.70, 0.70, 0.699, 0.698, 0.698]))
    assert d["verdict"] == "underfitting" and "barely moved" in d["message"]


def test_chance_auroc_is_underfitting():
    d = diagnose_training(_hist([0.9, 0.6, 0.4], [0.9, 0.85, 0.86], auroc=[0.5, 0.52, 0.55]))
    assert d["verdict"] == "underfitting" and "chance" in d["message"]


def test_still_improving():
    d = diagnose_training(_hist([0.7, 0.5, 0.4, 0.35], [0.7, 0.55, 0.5, 0.45], auroc=[0.7, 0.8, 0.85, 0.88]))
    assert d["verdict"] == "not_converged" and "more epochs" in d["message"]


def test_good_fit_plateau():
    d = diagnose_training(_hist([0.7, 0.5, 0.4, 0.36, 0.35], [0.7, 0.52, 0.45, 0.44, 0.445],
                                auroc=[0.7, 0.85, 0.9, 0.91, 0.905]))
    assert d["verdict"] == "good_fit" and d["best_epoch"] == 3


def test_missing_or_short_history():
    assert diagnose_training(None)["verdict"] == "unknown"
    assert diagnose_training([{"epoch": 0, "train_loss": 0.5, "val_loss": 0.6}])["verdict"] == "unknown"


def test_ignores_missing_and_nan_values():
    hist = _hist([0.7, 0.5, 0.4, 0.3, 0.2, 0.1], [0.7, 0.5, 0.45, 0.6, float("nan"), 0.8])
    hist.append({"epoch": 6, "lr": 1e-4})
    d = diagnose_training(hist)
    assert d["verdict"] == "overfitting" and d["overfit_from_epoch"] == 2


def test_noisy_plateau_is_not_called_overfitting():
    import numpy as np

    rng = np.random.default_rng(0)
    n = 40
    train = list(0.12 + 0.3 * np.exp(-np.arange(n) / 4) + rng.normal(0, 0.01, n))
    val = list(0.13 + 0.3 * np.exp(-np.arange(n) / 4) + rng.normal(0, 0.03, n))
    val[-1] = val[-2] = 0.19  # a two-epoch spike of the size of the noise
    d = diagnose_training(_hist(train, val))
    assert d["verdict"] != "overfitting"
    assert any("moving average" in line for line in d["details"])


def test_val_rising_while_train_stays_low_is_overfitting():
    train = [0.7, 0.4, 0.25, 0.15, 0.1, 0.09, 0.1, 0.09, 0.095, 0.09, 0.1, 0.09]
    val = [0.7, 0.45, 0.33, 0.3, 0.31, 0.34, 0.38, 0.42, 0.45, 0.5, 0.53, 0.57]
    d = diagnose_training(_hist(train, val))
    assert d["verdict"] == "overfitting" and d["overfit_from_epoch"] in (2, 3, 4)


def test_both_losses_rising_is_unstable_not_overfitting():
    train = [0.7, 0.5, 0.35, 0.3, 0.28, 0.35, 0.45, 0.55, 0.65, 0.7, 0.75, 0.8]
    val = [0.7, 0.52, 0.4, 0.36, 0.35, 0.42, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85]
    d = diagnose_training(_hist(train, val))
    assert d["verdict"] == "unstable" and "learning rate" in d["message"]

"""Small, real PneumoniaMNIST trainings (a few hundred images, 1-2 epochs) on the CPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from radiolens.models.bundle import ModelBundle
from radiolens.train.config import config_from_dict
from radiolens.train.pipeline import train_model


def test_two_epochs_learn_pneumonia(pneumonia_small, tmp_path, tiny_config):
    r = train_model(config_from_dict(tiny_config(pneumonia_small)), tmp_path)
    assert len(r.history) == 2 and {"train_loss", "val_loss", "val_auroc", "lr", "epoch"} <= set(r.history[0])
    test_auroc = roc_auc_score(r.test.targets, r.test.logits[:, 0])
    assert test_auroc > 0.8, test_auroc  # chance is 0.5
    assert r.test.logits.shape == (150, 1) and r.val.logits.shape == (150, 1)
    # the returned model is the checkpoint with the best validation AUROC
    best = max(h["val_auroc"] for h in r.history)
    assert roc_auc_score(r.val.targets, r.val.logits[:, 0]) == np.float64(best) or abs(
        roc_auc_score(r.val.targets, r.val.logits[:, 0]) - best) < 1e-4
    assert r.bundle.info.task == "binary" and r.bundle.info.class_names == ["pneumonia"]
    assert 0 < r.bundle.info.mean < 1 and r.bundle.info.std > 0
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    r.bundle.save(tmp_path / "m.pt")  # round trip through the bundle file
    loaded = ModelBundle.load(tmp_path / "m.pt")
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(loaded.model(x), r.bundle.model(x))


def test_same_seed_same_weights(pneumonia_tiny, tmp_path, tiny_config):
    cfg = tiny_config(pneumonia_tiny, arch="lenet5", epochs=1)
    a = train_model(config_from_dict(cfg), tmp_path / "a").bundle.model.state_dict()
    b = train_model(config_from_dict(cfg), tmp_path / "b").bundle.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg["seed"] = 1
    c = train_model(config_from_dict(cfg), tmp_path / "c").bundle.model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_head_only_stage_leaves_the_body_untouched(pneumonia_tiny, tmp_path, tiny_config):
    cfg = tiny_config(pneumonia_tiny, epochs=1, head_epochs=1, unfreeze_blocks=1)
    torch.manual_seed(0)
    r = train_model(config_from_dict(cfg), tmp_path)
    import lightning as L

    from radiolens.models.registry import create_model

    L.seed_everything(0, verbose=False)
    init = create_model("small_cnn", 1).state_dict()  # same seed -> the initial weights of the run
    trained = r.bundle.model.state_dict()
    assert torch.equal(init["features.0.0.weight"], trained["features.0.0.weight"])  # frozen body
    assert torch.equal(init["features.0.1.running_mean"], trained["features.0.1.running_mean"])  # BN kept
    assert not torch.equal(init["classifier.2.weight"], trained["classifier.2.weight"])  # head trained


def test_multiclass_and_multilabel_paths_run(pneumonia_tiny, tmp_path, tiny_config):
    frame = pd.read_csv(pneumonia_tiny, dtype={"patient_id": str})
    # 3-class subtype and a 2-label target derived from the real patient ids' Kermany file names
    frame["subtype"] = np.where(frame.label == "normal", "normal",
                                np.where(frame.index % 2 == 0, "bacterial", "viral"))
    frame["pneumonia"] = (frame.label == "pneumonia").astype(int)
    frame["normal"] = (frame.label == "normal").astype(int)
    path = pneumonia_tiny.parent / "derived.csv"
    frame.to_csv(path, index=False)
    cfg = tiny_config(path, arch="lenet5", epochs=1)
    cfg["data"]["label"] = {"task": "multiclass", "columns": ["subtype"], "classes": ["normal", "bacterial", "viral"]}
    r = train_model(config_from_dict(cfg), tmp_path / "mc")
    assert r.test.logits.shape == (80, 3) and r.bundle.info.class_names == ["normal", "bacterial", "viral"]
    cfg["data"]["label"] = {"task": "multilabel", "columns": ["pneumonia", "normal"]}
    cfg["optim"]["loss"] = "focal"
    r = train_model(config_from_dict(cfg), tmp_path / "ml")
    assert r.test.logits.shape == (80, 2) and r.test.targets.shape == (80, 2)

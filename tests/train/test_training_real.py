"""Small, real trainings on the CPU (a few hundred images, 1-3 epochs): PneumoniaMNIST binary, Kermany
3-class normal/bacterial/viral, NIH ChestX-ray14 multi-label, all with the data sets' own labels."""

from __future__ import annotations

from pathlib import Path

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


def test_three_class_learns_real_pneumonia_types(kermany_3class_small, tmp_path, tiny_config):
    """Kermany's own normal / bacteria / virus labels (from the file names), 600 training images at 32 px."""
    cfg = tiny_config(kermany_3class_small, epochs=3)
    cfg["model"]["input_size"] = 32
    cfg["data"]["label"] = {"task": "multiclass", "columns": ["pneumonia_type"],
                            "classes": ["normal", "bacterial", "viral"],
                            "aliases": {"none": "normal", "bacteria": "bacterial", "virus": "viral"}}
    r = train_model(config_from_dict(cfg), tmp_path)
    assert r.bundle.info.class_names == ["normal", "bacterial", "viral"] and r.test.logits.shape == (150, 3)
    raw = pd.read_csv(kermany_3class_small, dtype=str).query("split == 'test'")["pneumonia_type"]
    expected = raw.map({"none": 0, "bacteria": 1, "virus": 2}).to_numpy()
    np.testing.assert_array_equal(r.test.targets, expected)  # targets are the real labels, in class order
    assert len(set(expected.tolist())) == 3
    prob = torch.softmax(torch.as_tensor(r.test.logits), 1).numpy()
    macro = roc_auc_score(expected, prob, multi_class="ovr")
    per = [roc_auc_score(expected == k, prob[:, k]) for k in range(3)]
    assert macro > 0.75, (macro, per)  # chance is 0.5
    assert min(per) > 0.6, per  # including bacterial vs viral, the hard distinction


def test_multilabel_learns_real_nih_findings(nih_multilabel, data_dir, tmp_path, tiny_config):
    """NIH ChestX-ray14 finding labels (multi-label, focal loss) on 700 training images at 32 px."""
    findings = ["Effusion", "Infiltration"]  # the two findings with the most positives in the subset
    cfg = tiny_config(nih_multilabel, epochs=3, loss="focal")
    cfg["model"]["input_size"] = 32
    cfg["data"]["label"] = {"task": "multilabel", "columns": findings}
    r = train_model(config_from_dict(cfg), tmp_path)
    frame = pd.read_csv(nih_multilabel, dtype={"patient_id": str})
    test = frame[frame.split == "test"]
    assert r.test.logits.shape == (len(test), 2)
    np.testing.assert_array_equal(r.test.targets, test[findings].to_numpy())
    # the 0/1 columns are the image's own NIH finding_labels
    table = pd.read_csv(data_dir / "nih_chestxray14" / "manifest.csv", dtype=str).set_index("image_index")
    for _, row in test.head(20).iterrows():
        labels = table.loc[Path(row.path).name, "finding_labels"].split("|")
        assert [int(f in labels) for f in findings] == row[findings].astype(int).tolist()
    aurocs = [roc_auc_score(r.test.targets[:, j], r.test.logits[:, j]) for j in range(2)]
    assert r.test.targets.sum(axis=0).min() >= 10  # enough test positives for the AUROC to mean something
    assert np.mean(aurocs) > 0.6, aurocs  # above chance (0.5); small data, so a modest margin

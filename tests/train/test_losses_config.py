from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radiolens.errors import ConfigError
from radiolens.train.config import config_from_dict, load_config
from radiolens.train.losses import (
    BCELoss,
    CELoss,
    SigmoidFocalLoss,
    SoftmaxFocalLoss,
    class_weights,
    make_loss,
    positive_weights,
)


def test_pos_weight_is_negatives_over_positives():
    y = np.array([1, 0, 0, 0, 1, 0])
    assert positive_weights(y).tolist() == [2.0]
    ml = np.array([[1, 0], [1, 0], [0, 1], [1, 0]])
    torch.testing.assert_close(positive_weights(ml), torch.tensor([1 / 3, 3.0]))


def test_class_weights_balanced_is_ones_and_rare_weighs_more():
    assert class_weights(np.array([0, 1, 2, 0, 1, 2]), 3).tolist() == [1.0, 1.0, 1.0]
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w[1] > w[0] and float((w * torch.tensor([3.0, 1.0])).sum()) == pytest.approx(4.0)


def test_bce_with_pos_weight_matches_torch():
    logits, y = torch.randn(8, 1), torch.randint(0, 2, (8,))
    pw = torch.tensor([3.0])
    expected = F.binary_cross_entropy_with_logits(logits, y.float()[:, None], pos_weight=pw)
    torch.testing.assert_close(BCELoss(pw)(logits, y), expected)


def test_softmax_focal_with_gamma_zero_is_weighted_ce():
    logits, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    w = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(SoftmaxFocalLoss(0.0, w)(logits, y), F.cross_entropy(logits, y, weight=w))


def test_focal_downweights_easy_examples():
    easy, hard = torch.tensor([[6.0]]), torch.tensor([[-1.0]])
    y = torch.tensor([1])
    focal, bce = SigmoidFocalLoss(gamma=2.0), BCELoss()
    assert focal(easy, y) / bce(easy, y) < focal(hard, y) / bce(hard, y)


def test_make_loss_per_task():
    assert isinstance(make_loss("binary", "auto", np.array([0, 1, 1]), 1), BCELoss)
    assert isinstance(make_loss("multiclass", "auto", np.array([0, 1, 2]), 3), CELoss)
    assert isinstance(make_loss("multiclass", "focal", np.array([0, 1, 2]), 3), SoftmaxFocalLoss)
    with pytest.raises(ConfigError):
        make_loss("multiclass", "bce", np.array([0, 1]), 2)


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  manifest: m.csv\n  label: {task: binary, columns: [label]}\noptim: {epochs: 4}\n")
    cfg = load_config(path, {"optim.lr": 0.01, "model.arch": "lenet5"})
    assert cfg.optim.epochs == 4 and cfg.optim.lr == 0.01 and cfg.model.arch == "lenet5"
    assert cfg.data.manifest == str(tmp_path / "m.csv")  # relative to the config file
    assert not cfg.augment.vflip


@pytest.mark.parametrize("raw, match", [
    ({"data": {"manifest": "m.csv", "label": {"task": "binary", "columns": ["a"]}}, "optim": {"epochs": 0}},
     "optim.epochs"),
    ({"data": {"manifest": "m.csv", "label": {"task": "binary", "columns": ["a"]}}, "model": {"arch": "vit"}},
     "unknown arch"),
    ({"data": {"label": {"task": "binary", "columns": ["a"]}}}, "exactly one of"),
    ({"data": {"manifest": "m.csv", "label": {"task": "binary", "columns": ["a", "b"]}}}, "exactly one label"),
    ({"data": {"manifest": "m.csv", "label": {"task": "binary", "columns": ["a"]}}, "epochz": 3}, "epochz"),
])
def test_bad_configs_are_config_errors(raw, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)

"""The service's MC-dropout spread: the dropout a model was trained with survives saving/loading, and timm
heads whose dropout is functional (resnet18, efficientnet_b0: ``F.dropout(training=...)``, no nn.Dropout
module) still get a spread, while BatchNorm statistics stay frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiolens.io.image import ImageMeta, RadioImage
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model
from radiolens.serve.runtime.inference import Predictor


def _image(seed: int = 0) -> RadioImage:
    px = np.random.default_rng(seed).random((64, 64)).astype(np.float32)
    return RadioImage(px, ImageMeta(source_format="png"))


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "small_cnn"])
def test_spread_with_dropout_and_none_without(arch, tmp_path):
    torch.manual_seed(0)
    info = BundleInfo(arch=arch, task="binary", class_names=["x"], input_size=(64, 64), dropout=0.5)
    bundle = ModelBundle(info, create_model(arch, 1, dropout=0.5))
    bundle.save(tmp_path / "m.pt")
    loaded = ModelBundle.load(tmp_path / "m.pt")
    assert loaded.info.dropout == 0.5
    bn_before = {k: v.clone() for k, v in loaded.model.state_dict().items() if "running" in k}
    inf = Predictor(loaded, mc_dropout_passes=8).run(_image(), heatmap=False)
    assert inf.spread is not None and inf.spread > 0
    bn_after = {k: v for k, v in loaded.model.state_dict().items() if "running" in k}
    assert all(torch.equal(bn_before[k], bn_after[k]) for k in bn_before)  # the shared model is untouched
    # the plain (non-MC) probability is deterministic: the shared model stayed in eval mode
    p = Predictor(loaded, mc_dropout_passes=0)
    assert p.run(_image(), heatmap=False).probabilities == pytest.approx(p.run(_image(), heatmap=False).probabilities)

    info0 = BundleInfo(arch=arch, task="binary", class_names=["x"], input_size=(64, 64), dropout=0.0)
    none = ModelBundle(info0, create_model(arch, 1, dropout=0.0))
    assert Predictor(none, mc_dropout_passes=8).run(_image(), heatmap=False).spread == 0.0


def test_triage_rule_sees_every_output_of_a_multilabel_model():
    from radiolens.explain.triage import TriageRule

    torch.manual_seed(0)
    rule = TriageRule(thresholds=[0.3, 0.6], class_names=["effusion", "nodule"], margin=0.05, max_spread=0.1)
    info = BundleInfo(arch="small_cnn", task="multilabel", class_names=["effusion", "nodule"], input_size=(64, 64),
                      thresholds=[0.3, 0.6], triage=rule.model_dump())
    p = Predictor(ModelBundle(info, create_model("small_cnn", 2)), mc_dropout_passes=0)
    assert p.triage_source == "bundle_triage_rule"
    flag, reason, source = p.review(np.array([0.9, 0.62]))
    assert flag and source == "bundle_triage_rule" and "nodule" in reason and "effusion" not in reason
    flag, reason, source = p.review(np.array([0.9, 0.95]), np.array([0.01, 0.3]))
    assert flag and "nodule: model uncertain" in reason and source == "bundle_triage_rule"
    assert p.review(np.array([0.9, 0.95]), np.array([0.01, 0.02]))[0] is False
    # no rule stored: the near-threshold fallback, named as such (not as an invalid rule)
    plain = Predictor(ModelBundle(BundleInfo(arch="small_cnn", task="binary", class_names=["x"],
                                             input_size=(64, 64)), create_model("small_cnn", 1)))
    assert plain.triage_source == "near_threshold_fallback"

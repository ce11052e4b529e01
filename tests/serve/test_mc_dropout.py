"""The service's MC-dropout spread: the dropout a model was trained with survives saving/loading, and timm
heads whose dropout is functional (resnet18, efficientnet_b0: ``F.dropout(training=...)``, no nn.Dropout
module) still get a spread, while BatchNorm statistics stay frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiolens.io.image import ImageMeta, RadioImage
from radiolens.models.backends import TorchBackend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model
from radiolens.pipeline import Predictor, Triage, prepare


def _image(seed: int = 0) -> RadioImage:
    px = np.random.default_rng(seed).random((64, 64)).astype(np.float32)
    return RadioImage(px, ImageMeta(source_format="png"))


def _run(bundle: ModelBundle, passes: int):
    return Predictor(TorchBackend(bundle), mc_dropout_passes=passes, gate=False).predict(prepare(bundle.info,
                                                                                                 _image()))


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "small_cnn"])
def test_spread_with_dropout_and_none_without(arch, tmp_path):
    torch.manual_seed(0)
    info = BundleInfo(arch=arch, task="binary", class_names=["x"], input_size=(64, 64), dropout=0.5)
    bundle = ModelBundle(info, create_model(arch, 1, dropout=0.5))
    bundle.save(tmp_path / "m.pt")
    loaded = ModelBundle.load(tmp_path / "m.pt")
    assert loaded.info.dropout == 0.5
    bn_before = {k: v.clone() for k, v in loaded.model.state_dict().items() if "running" in k}
    rec = _run(loaded, 8)
    assert rec.review.spread is not None and rec.review.spread > 0
    bn_after = {k: v for k, v in loaded.model.state_dict().items() if "running" in k}
    assert all(torch.equal(bn_before[k], bn_after[k]) for k in bn_before)  # the shared model is untouched
    # the plain (non-MC) probability is deterministic: the shared model stayed in eval mode
    assert _run(loaded, 0).probabilities == pytest.approx(_run(loaded, 0).probabilities)

    info0 = BundleInfo(arch=arch, task="binary", class_names=["x"], input_size=(64, 64), dropout=0.0)
    none = ModelBundle(info0, create_model(arch, 1, dropout=0.0))
    assert _run(none, 8).review.spread == 0.0


def test_triage_rule_sees_every_output_of_a_multilabel_model():
    from radiolens.explain.triage import TriageRule

    torch.manual_seed(0)
    rule = TriageRule(thresholds=[0.3, 0.6], class_names=["effusion", "nodule"], margin=0.05, max_spread=0.1)
    info = BundleInfo(arch="small_cnn", task="multilabel", class_names=["effusion", "nodule"], input_size=(64, 64),
                      thresholds=[0.3, 0.6], triage=rule.model_dump())
    p = Triage(ModelBundle(info, create_model("small_cnn", 2)).info)
    assert p.rule_name == "bundle_triage_rule"
    r = p.review(np.array([0.9, 0.62]))
    assert r.flag and r.rule == "bundle_triage_rule" and "nodule" in r.reason and "effusion" not in r.reason
    r = p.review(np.array([0.9, 0.95]), np.array([0.01, 0.3]))
    assert r.flag and "nodule: model uncertain" in r.reason and r.rule == "bundle_triage_rule"
    assert p.review(np.array([0.9, 0.95]), np.array([0.01, 0.02])).flag is False
    # no rule stored: the near-threshold fallback, named as such (not as an invalid rule)
    plain = Triage(BundleInfo(arch="small_cnn", task="binary", class_names=["x"], input_size=(64, 64)))
    assert plain.rule_name == "near_threshold_fallback"

"""THE decision and triage (``pipeline.decision``): binary, multi-label and multi-class labels and positives,
the bundle's fitted rule versus the two-sided near-threshold fallback, a broken or invalid stored rule, and the
MC-dropout spread reaching the rule."""

from __future__ import annotations

import numpy as np
import pytest

from radiolens.explain.triage import TriageRule
from radiolens.models.bundle import BundleInfo
from radiolens.pipeline.decision import (
    FAILED_RULE,
    FALLBACK_RULE,
    FITTED_RULE,
    INVALID_RULE,
    NO_FINDING,
    Triage,
    decide,
    not_assessed_review,
    review_index,
)


def _info(task: str, names: list[str], thresholds: list[float] | None = None, **kw) -> BundleInfo:
    return BundleInfo(arch="small_cnn", task=task, class_names=names, input_size=(32, 32),
                      thresholds=thresholds or [], **kw)


def test_binary_label_and_positive():
    info = _info("binary", ["pneumonia"], [0.4], negative_name="normal")
    d = decide(info, np.array([0.41]))
    assert d.label == "pneumonia" and d.positive_classes == ["pneumonia"] and d.positives.tolist() == [True]
    d = decide(info, np.array([0.39]))
    assert d.label == "normal" and d.positive_classes == [] and d.target_index == 0


def test_multilabel_label_joins_positives_and_says_no_finding():
    info = _info("multilabel", ["effusion", "nodule", "mass"], [0.3, 0.6, 0.5])
    d = decide(info, np.array([0.35, 0.9, 0.2]))
    assert d.label == "effusion, nodule" and d.positive_classes == ["effusion", "nodule"]
    assert d.target_index == 1  # the most probable positive output is explained
    d = decide(info, np.array([0.1, 0.5, 0.45]))
    assert d.label == NO_FINDING and d.positive_classes == [] and d.positives.tolist() == [False] * 3


def test_multiclass_decides_the_argmax():
    info = _info("multiclass", ["normal", "bacteria", "virus"])
    d = decide(info, np.array([0.2, 0.3, 0.5]))
    assert d.label == "virus" and d.positive_classes == ["virus"] and d.positives.tolist() == [False, False, True]
    assert d.target_index == 2 and review_index(info, np.array([0.2, 0.3, 0.5])) == 2


def test_fallback_is_two_sided_and_positive_alone_is_not_a_flag():
    info = _info("binary", ["pneumonia"], [0.5])
    t = Triage(info, margin=0.1)
    assert t.rule is None and t.rule_name == FALLBACK_RULE
    below, above, far = t.review(np.array([0.45])), t.review(np.array([0.55])), t.review(np.array([0.95]))
    assert below.flag and above.flag and below.rule == above.rule == FALLBACK_RULE
    assert "within 0.10 of the operating threshold 0.50" in above.reason
    assert not far.flag and decide(info, np.array([0.95])).positive_classes == ["pneumonia"]


def test_fallback_multilabel_names_the_nearest_output_and_multiclass_uses_top_two():
    ml = Triage(_info("multilabel", ["effusion", "nodule"], [0.3, 0.6]), margin=0.05)
    r = ml.review(np.array([0.9, 0.62]))
    assert r.flag and r.reason.startswith("nodule probability 0.62")
    mc = Triage(_info("multiclass", ["a", "b", "c"]), margin=0.1)
    assert mc.review(np.array([0.45, 0.40, 0.15])).flag
    assert not mc.review(np.array([0.7, 0.2, 0.1])).flag


def test_fitted_rule_is_used_with_the_spread():
    rule = TriageRule(thresholds=[0.3, 0.6], class_names=["effusion", "nodule"], margin=0.05, max_spread=0.1)
    info = _info("multilabel", ["effusion", "nodule"], [0.3, 0.6], triage=rule.model_dump())
    t = Triage(info, margin=0.4)  # the configured margin is not used when a rule is fitted
    assert t.rule_name == FITTED_RULE
    calm = t.review(np.array([0.9, 0.95]))
    assert not calm.flag and calm.spread is None and calm.reason == rule.flag(np.array([0.9, 0.95]))[1]
    shaky = t.review(np.array([0.9, 0.95]), np.array([0.01, 0.3]))
    assert shaky.flag and "nodule: model uncertain" in shaky.reason and shaky.rule == FITTED_RULE
    # the spread reported is that of the reviewed output (the one closest to its threshold)
    assert shaky.spread == pytest.approx(0.3)
    # one spread value for a one-output model is broadcast
    one = Triage(_info("binary", ["x"], [0.5], triage=TriageRule(thresholds=[0.5], class_names=["x"], margin=0.01,
                                                                   max_spread=0.05).model_dump()))
    assert one.review(np.array([0.9]), 0.2).flag and not one.review(np.array([0.9]), 0.01).flag


def test_invalid_and_broken_rules_fall_back_and_say_so():
    invalid = Triage(_info("binary", ["x"], [0.5], triage={"margin": "wide"}), margin=0.1)
    assert invalid.rule is None and invalid.rule_name == INVALID_RULE
    r = invalid.review(np.array([0.52]))
    assert r.flag and r.rule == INVALID_RULE

    rule = TriageRule(thresholds=[0.5, 0.5], class_names=["a", "b"], margin=0.05)  # two outputs for a one-output model
    broken = Triage(_info("binary", ["x"], [0.5], triage=rule.model_dump()), margin=0.1)
    assert broken.rule_name == FITTED_RULE
    r = broken.review(np.array([0.55]))
    assert r.flag and r.rule == FAILED_RULE and "within 0.10" in r.reason
    assert not broken.review(np.array([0.9])).flag


def test_not_assessed_is_always_for_a_human():
    r = not_assessed_review("modality CT")
    assert r.flag and r.rule == "input_gate" and r.reason == "not assessed by the model: modality CT"

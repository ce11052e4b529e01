import numpy as np
import pytest

from radiolens.errors import InputError
from radiolens.evaluate import (
    EvaluationInputError,
    LabelValueError,
    LengthMismatchError,
    NonFiniteError,
    OperatingPointError,
    ShapeError,
    evaluate_predictions,
)
from radiolens.evaluate.inputs import parse_operating_point


def _binary(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1)), rng.integers(0, 2, n)


def test_errors_are_input_errors():
    for cls in (EvaluationInputError, ShapeError, LengthMismatchError, NonFiniteError, LabelValueError,
                OperatingPointError):
        assert issubclass(cls, InputError)


def test_wrong_logit_width_for_binary():
    z, y = _binary()
    with pytest.raises(ShapeError, match=r"expected \(N, 1\)"):
        evaluate_predictions("binary", ["pneumonia"], np.hstack([z, z]), y, n_bootstrap=0)


def test_binary_needs_exactly_one_class_name():
    z, y = _binary()
    with pytest.raises(EvaluationInputError, match="exactly one name"):
        evaluate_predictions("binary", ["normal", "pneumonia"], z, y, n_bootstrap=0)


def test_nan_logits_are_refused_with_count():
    z, y = _binary()
    z[3, 0] = np.nan
    z[7, 0] = np.inf
    with pytest.raises(NonFiniteError, match="2 case"):
        evaluate_predictions("binary", ["pneumonia"], z, y, n_bootstrap=0)


def test_nan_in_validation_names_the_set():
    z, y = _binary()
    vz, vy = _binary(seed=1)
    vz[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="validation"):
        evaluate_predictions("binary", ["pneumonia"], z, y, vz, vy, n_bootstrap=0)


def test_mismatched_lengths():
    z, y = _binary()
    with pytest.raises(LengthMismatchError, match="40 logit rows but 39 targets"):
        evaluate_predictions("binary", ["pneumonia"], z, y[:-1], n_bootstrap=0)


def test_binary_targets_must_be_zero_one():
    z, y = _binary()
    y[0] = 2
    with pytest.raises(LabelValueError):
        evaluate_predictions("binary", ["pneumonia"], z, y, n_bootstrap=0)


def test_multiclass_target_out_of_range():
    rng = np.random.default_rng(0)
    with pytest.raises(LabelValueError, match="0..2"):
        evaluate_predictions("multiclass", ["a", "b", "c"], rng.normal(size=(10, 3)), np.arange(10) % 4,
                             n_bootstrap=0)


def test_multilabel_targets_must_be_2d():
    rng = np.random.default_rng(0)
    with pytest.raises(ShapeError, match="multilabel"):
        evaluate_predictions("multilabel", ["a", "b"], rng.normal(size=(10, 2)), np.zeros(10, int), n_bootstrap=0)


def test_unknown_task_and_empty_input():
    z, y = _binary()
    with pytest.raises(EvaluationInputError, match="unknown task"):
        evaluate_predictions("regression", ["x"], z, y)
    with pytest.raises(ShapeError, match="empty"):
        evaluate_predictions("binary", ["x"], np.zeros((0, 1)), np.zeros(0, int))


def test_val_logits_without_targets():
    z, y = _binary()
    with pytest.raises(EvaluationInputError, match="both"):
        evaluate_predictions("binary", ["pneumonia"], z, y, val_logits=z, n_bootstrap=0)


def test_non_integer_targets():
    z, y = _binary()
    with pytest.raises(LabelValueError, match="whole numbers"):
        evaluate_predictions("binary", ["pneumonia"], z, y + 0.5, n_bootstrap=0)


@pytest.mark.parametrize("rule", ["sensitivity:1.5", "sensitivity:abc", "f1", "specificity:0", ""])
def test_bad_operating_point(rule):
    with pytest.raises(OperatingPointError):
        parse_operating_point(rule)


def test_operating_point_rules_parse():
    assert parse_operating_point("youden") == ("youden", None)
    assert parse_operating_point("Sensitivity:0.90") == ("sensitivity", 0.9)
    assert parse_operating_point("specificity:0.95") == ("specificity", 0.95)


@pytest.mark.parametrize("kwargs", [{"n_bootstrap": -1}, {"n_bootstrap": "many"}, {"seed": None}])
def test_bad_bootstrap_settings(kwargs):
    z, y = _binary()
    with pytest.raises(EvaluationInputError):
        evaluate_predictions("binary", ["x"], z, y, **kwargs)

"""Every enum-like CLI option and training-config field is checked before any expensive work.

A fixed-choice option is declared as a ``Literal`` so Click refuses a bad value while parsing (exit 2, one usage
line, no traceback) before the command body loads a model or reads an image; ``--operating-point`` is parsed by
its callback at the same moment; the training config's enum-like fields are typed and validated when the YAML is
loaded, before any manifest, image or model is touched. The CLI's value sets repeat library constants (importing
those would pull torch into every CLI start), so the first test pins each to its library counterpart.
"""

from __future__ import annotations

import re
import typing

import pytest
import yaml
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.errors import ConfigError
from radiolens.train.config import config_from_dict

runner = CliRunner()


def _flat(text: str) -> str:
    """Click/rich error output with the panel's box characters and line wrapping removed."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def test_cli_value_sets_equal_the_library_ones():
    import uvicorn.config

    from radiolens._cli import common
    from radiolens._cli.explain import USER_METHODS
    from radiolens.data.builders import MANIFEST_KINDS
    from radiolens.data.manifest import Task
    from radiolens.explain.cam import METHODS
    from radiolens.io.deid_ocr import PixelTextPolicy, TextDetectorUse
    from radiolens.models.backends import BackendKind
    from radiolens.models.export import Exporter
    from radiolens.models.quantize import CalibrationMethod
    from radiolens.predict.config import Engine
    from radiolens.serve.config import ServeBackend, ServeSettings
    from radiolens.serve.http.schemas import KeyIn
    from radiolens.serve.store.auth import Role
    from radiolens.train.config import OptimConfig, TrainerConfig

    def args(annotation) -> tuple:
        return typing.get_args(annotation)

    assert common.TASKS == args(Task)
    assert common.MANIFEST_KINDS == MANIFEST_KINDS
    assert common.LOSSES == args(OptimConfig.model_fields["loss"].annotation)
    assert common.SCHEDULERS == args(OptimConfig.model_fields["scheduler"].annotation)
    assert common.STRATEGIES == args(TrainerConfig.model_fields["strategy"].annotation)
    assert common.EXPORTERS == args(Exporter)
    assert common.CALIBRATION_METHODS == args(CalibrationMethod)
    assert common.BACKENDS == args(BackendKind)
    assert common.SERVE_BACKENDS == args(ServeBackend)
    assert common.ENGINES == args(Engine)
    assert common.PIXEL_TEXT_POLICIES == args(PixelTextPolicy)
    assert common.TEXT_DETECTOR_USES == args(TextDetectorUse)
    assert common.ROLES == args(KeyIn.model_fields["role"].annotation) == tuple(r.value for r in Role)
    assert set(common.LOG_LEVELS) == set(uvicorn.config.LOG_LEVELS)
    assert set(USER_METHODS) == set(METHODS) - {"random"}
    assert set(args(ServeSettings.model_fields["cam_method"].annotation)) == set(USER_METHODS)


def test_service_settings_refuse_an_unknown_cam_method_at_start(tmp_path):
    """The service's CAM method was a free string that failed only at the first heatmap."""
    from pydantic import ValidationError

    from radiolens.serve.config import ServeSettings

    with pytest.raises(ValidationError, match="cam_method"):
        ServeSettings(model_path=tmp_path / "m.pt", cam_method="grad-cam")
    assert ServeSettings(model_path=tmp_path / "m.pt", cam_method="gradcam++").cam_method == "gradcam++"


# (argv, the option Click must name). Every path here does not exist: had the command body run, the error would
# be about a missing file, not the option, so the message proves the value was refused first.
BAD_OPTIONS = [
    (["explain", "missing.png", "--model", "missing.pt", "--out", "o", "--method", "gradcamm"], "--method"),
    (["train", "--config", "missing.yaml", "--out", "o", "--loss", "hinge"], "--loss"),
    (["train", "--config", "missing.yaml", "--out", "o", "--scheduler", "step"], "--scheduler"),
    (["train", "--config", "missing.yaml", "--out", "o", "--task", "regression"], "--task"),
    (["train", "--config", "missing.yaml", "--out", "o", "--strategy", "fsdp"], "--strategy"),
    (["train", "--config", "missing.yaml", "--out", "o", "--devices", "0"], "--devices"),
    (["train", "--config", "missing.yaml", "--out", "o", "--operating-point", "f1"], "--operating-point"),
    (["train", "--config", "missing.yaml", "--out", "o", "--operating-point", "sensitivity:1.5"],
     "--operating-point"),
    (["evaluate", "--model", "missing.pt", "--manifest", "missing.csv", "--out", "o", "--operating-point",
      "specificity:abc"], "--operating-point"),
    (["make-manifest", "dicomdir", "missing", "--out", "o.csv"], "kind"),
    (["split", "missing.csv", "--out", "o.csv", "-l", "label", "--task", "regression"], "--task"),
    (["export", "--model", "missing.pt", "--out", "o.onnx", "--format", "tflite"], "--format"),
    (["export", "--model", "missing.pt", "--out", "o.onnx", "--exporter", "torchscript"], "--exporter"),
    (["quantize", "--model", "missing.onnx", "--out", "o.onnx", "--calibration", "missing", "--method", "mse"],
     "--method"),
    (["predict", "missing", "--model", "missing.pt", "--out", "o.csv", "--backend", "tensorrt"], "--backend"),
    (["predict", "missing", "--model", "missing.pt", "--out", "o.csv", "--engine", "spark"], "--engine"),
    (["serve", "--model", "missing.pt", "--backend", "tensorrt"], "--backend"),
    (["serve", "--model", "missing.pt", "--log-level", "verbose"], "--log-level"),
    (["serve", "--model", "missing.pt", "--pixel-text", "blur"], "--pixel-text"),
    (["deid", "missing", "out", "--pixel-text", "blur"], "--pixel-text"),
    (["users", "create", "--role", "superuser"], "--role"),
    (["audit", "export", "--format", "xml"], "--format"),
]


@pytest.mark.parametrize(("argv", "option"), BAD_OPTIONS, ids=[" ".join(a[:1] + [o]) for a, o in BAD_OPTIONS])
def test_a_bad_choice_is_a_usage_error_before_any_work(argv, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, argv, env={"COLUMNS": "200"})
    text = _flat(res.output)
    assert res.exit_code == 2, text
    assert f"Invalid value for '{option}'" in text or f"Invalid value for {option}" in text, text
    assert "Traceback" not in text and res.exception is None or isinstance(res.exception, SystemExit)
    assert not (tmp_path / "o").exists()


def _config(tmp_path, **eval_or_data) -> dict:
    return {"name": "t", "data": {"manifest": str(tmp_path / "missing.csv"),
                                  "label": {"task": "binary", "columns": ["label"]}, **eval_or_data.get("data", {})},
            "eval": eval_or_data.get("eval", {}), "mlflow": False}


@pytest.mark.parametrize(("section", "value", "where"), [
    ("eval", {"operating_point": "max_f1"}, "eval.operating_point"),
    ("eval", {"operating_point": "sensitivity:0"}, "eval.operating_point"),
    ("data", {"medmnist_size": 32}, "data.medmnist_size"),
])
def test_bad_enum_like_config_field_fails_at_load(tmp_path, section, value, where):
    with pytest.raises(ConfigError, match=re.escape(where)):
        config_from_dict(_config(tmp_path, **{section: value}))


def test_unknown_medmnist_flag_fails_at_load():
    raw = {"data": {"medmnist": "pneumonia_mnist", "label": {"task": "binary", "columns": ["label"]}}}
    with pytest.raises(ConfigError, match="unknown MedMNIST flag 'pneumonia_mnist'"):
        config_from_dict(raw)


def test_valid_operating_points_still_load(tmp_path):
    for rule in ("youden", "Sensitivity:0.90", " specificity:0.95 "):
        cfg = config_from_dict(_config(tmp_path, eval={"operating_point": rule}))
        assert cfg.eval.operating_point == rule.strip()


def test_train_with_a_bad_operating_point_in_the_config_never_starts_training(tmp_path, monkeypatch):
    """Regression: ``eval.operating_point: max_f1`` was accepted, the model trained, and only the evaluation after
    training failed. Now the config is refused when read: one line, exit 2, no training, no output folder."""
    import radiolens.train.pipeline as pipeline

    def must_not_run(*args, **kwargs):
        raise AssertionError("training started with an invalid config")

    monkeypatch.setattr(pipeline, "train_model", must_not_run)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, eval={"operating_point": "max_f1"})))
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: bad.yaml: eval.operating_point:") and "max_f1" in res.output
    assert "Traceback" not in res.output and not out.exists()

"""`radiolens models`, the train flags for label / staged fine-tuning / augmentation / ImageNet weights,
and the help text every command prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.errors import WeightsUnavailableError
from radiolens.models.bundle import ModelBundle
from radiolens.models.registry import available_models, create_model, get_architecture

runner = CliRunner()
RADIOLENS = str(Path(sys.executable).parent / "radiolens")


def _offline_env(tmp_path: Path) -> dict:
    """No network, no weight caches: HF_HUB_OFFLINE is huggingface_hub's own switch; the proxy on a closed
    local port makes any other download (torchvision's urllib) fail at once instead of hanging."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "th"),
            "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def test_models_lists_the_registry():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split()[:4] == ["name", "source", "input", "pretrained"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert sorted(rows) == available_models()
    for name in available_models():
        spec = get_architecture(name)
        assert rows[name][1] == spec.source and rows[name][2] == str(spec.default_input_size)
        assert (rows[name][4] == "none") == (spec.source == "custom")


def _commands(group: click.Group, prefix: list[str]):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, [*prefix, name])
        else:
            yield [*prefix, name]


def test_help_has_no_type_placeholders_on_flags_or_braces_in_usage():
    group = typer.main.get_command(app)
    commands = list(_commands(group, []))
    assert ["models"] in commands and ["train"] in commands and ["deid"] in commands
    for cmd in [[], *commands]:
        res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "160"})
        assert res.exit_code == 0, (cmd, res.output)
        assert "<bool>" not in res.output, cmd
        usage = next(ln for ln in res.output.splitlines() if "Usage:" in ln)
        assert "{" not in usage and "}" not in usage, (cmd, usage)
    deid = runner.invoke(app, ["deid", "--help"], env={"COLUMNS": "160"}).output
    assert "radiolens deid [OPTIONS] IN... OUT" in deid


def test_imagenet_weights_offline_is_one_typed_line_before_any_decoding(pneumonia_tiny, tmp_path, tiny_config):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(pneumonia_tiny)))
    out = tmp_path / "o"
    res = subprocess.run([RADIOLENS, "train", "--config", str(cfg), "--out", str(out), "--arch", "resnet18",
                          "--weights", "imagenet", "--no-mlflow"], env=_offline_env(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("error: ImageNet weights for resnet18 could not be downloaded")
    assert "--weights PATH" in lines[0]
    assert not (out / "checkpoints").exists()


def test_imagenet_weights_offline_torchvision_and_custom(tmp_path, monkeypatch):
    for key, value in _offline_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(WeightsUnavailableError, match="ImageNet weights for alexnet could not be downloaded"):
        create_model("alexnet", 1, weights="imagenet")
    assert WeightsUnavailableError.code == "weights_unavailable"
    from radiolens.errors import ConfigError

    with pytest.raises(ConfigError, match="small_cnn has no pretrained weights"):
        create_model("small_cnn", 1, weights="imagenet")


def test_label_flags_build_the_label_spec(pneumonia_tiny, tmp_path, tiny_config):
    from radiolens.train.config import label_overrides, load_config

    raw = tiny_config(pneumonia_tiny)
    raw["data"]["label"].update(negative="normal", positive_name="pneumonia")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    over, clear = label_overrides("multiclass", ["label"], None, None, "normal, pneumonia")
    label = load_config(path, over, tuple(clear)).data.label
    assert label.task == "multiclass" and label.classes == ["normal", "pneumonia"]
    assert label.negative is None and label.positive_name is None  # binary-only keys dropped
    over, clear = label_overrides(None, None, "pneumonia", ["normal"], None)
    label = load_config(path, over, tuple(clear)).data.label
    assert label.task == "binary" and label.negative == ["normal"]


def test_train_flags_reach_the_run(pneumonia_tiny, tmp_path, tiny_config):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(pneumonia_tiny, arch="lenet5")))
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--task", "multiclass",
                              "-l", "label", "--classes", "normal,pneumonia", "--epochs", "3", "--head-epochs", "1",
                              "--unfreeze-blocks", "1", "--unfreeze-all-from", "2", "--max-minutes", "30",
                              "--no-augment", "--no-mlflow", "--n-bootstrap", "20"])
    assert res.exit_code == 0, res.output
    info = ModelBundle.load(out / "model.pt").info
    assert info.task == "multiclass" and info.class_names == ["normal", "pneumonia"]
    assert info.training["optim"]["head_epochs"] == 1 and info.training["optim"]["unfreeze_blocks"] == 1
    assert info.training["optim"]["unfreeze_all_from"] == 2 and info.training["optim"]["max_minutes"] == 30
    assert info.training["augment"]["enabled"] is False
    assert info.training["label"]["columns"] == ["label"] and info.training["epochs_run"] == 3
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "bad"), "--task", "nonsense"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "Invalid value for '--task'" in res.output and "'nonsense'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "bad").exists()


def _bare_config(tmp_path: Path) -> Path:
    """A config whose manifest does not exist: anything that reads data would fail on it."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "data": {"manifest": str(tmp_path / "absent.csv"),
                                                         "label": {"task": "binary", "columns": ["label"]}},
                                   "optim": {"epochs": 5, "lr": 0.001}}))
    return cfg


def test_set_overrides_and_print_config_read_no_data(tmp_path):
    cfg = _bare_config(tmp_path)
    res = runner.invoke(app, ["train", "-c", str(cfg), "--epochs", "7", "--set", "optim.lr=3e-4",
                              "--set", "augment.enabled=false", "--set", "model.arch=resnet18",
                              "--set", "optim.epochs=9", "--print-config"])
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.stdout)
    assert shown["optim"]["lr"] == 3e-4 and shown["augment"]["enabled"] is False
    assert shown["model"]["arch"] == "resnet18"
    assert shown["optim"]["epochs"] == 9  # --set is applied after the named options
    assert shown["data"]["manifest"].endswith("absent.csv")  # printed, never opened


@pytest.mark.parametrize(("item", "message"), [
    ("optim.lrr=1", "optim.lrr"),
    ("optim.lr=fast", "optim.lr"),
    ("optim.lr", "expected KEY=VALUE"),
    ("optim..lr=1", "expected KEY=VALUE"),
    ("seed.x=1", "seed: Input should be a valid integer"),
])
def test_bad_set_is_one_line_before_any_data(tmp_path, item, message):
    res = runner.invoke(app, ["train", "-c", str(_bare_config(tmp_path)), "-o", str(tmp_path / "out"),
                              "--set", item])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_train_without_out_is_refused_unless_printing(tmp_path):
    res = runner.invoke(app, ["train", "-c", str(_bare_config(tmp_path))])
    assert res.exit_code == 2 and "--out is required" in res.output

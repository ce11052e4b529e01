"""Training on several processes (Lightning DDP): the config and CLI wiring, the data shards, and a real
two-process CPU run (gloo) against a one-process run with the same global batch.

Why the two runs are compared within a tolerance and not bitwise: the two processes each average the loss
over their half of the batch and gloo's all-reduce then averages the two gradients, while the one process
averages over the whole batch at once; the same sums in another order round differently in float32 (~1e-7
relative per step), and those differences carry through every later step. The data order itself is the same
(each process takes every second sample of the one-process order, so step k of both runs sees the same
samples), LeNet-5 has no BatchNorm (CPU DDP cannot synchronise BatchNorm statistics, see docs/training.md) and
the config has no augmentation or dropout, so nothing else differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.errors import ConfigError
from radiolens.train.config import config_from_dict

runner = CliRunner()


def _raw(manifest: Path, **trainer) -> dict:
    return {"name": "ddp", "data": {"manifest": str(manifest), "label": {"task": "binary", "columns": ["label"],
                                                                        "positive": "pneumonia"}},
            "optim": {"batch_size": 32}, "mlflow": False, "trainer": trainer}


@pytest.mark.parametrize(("trainer", "message"), [
    ({"strategy": "ddp", "devices": 1}, "strategy ddp needs devices * num_nodes >= 2"),
    ({"strategy": "auto", "devices": 2}, "need trainer.strategy: ddp"),
    ({"strategy": "ddp", "devices": 3}, "optim.batch_size (32) is the global batch and must divide evenly"),
    ({"strategy": "fsdp", "devices": 2}, "trainer.strategy"),
    ({"strategy": "ddp", "devices": 0}, "trainer.devices"),
])
def test_bad_process_layouts_are_refused_when_the_config_is_read(tmp_path, trainer, message, monkeypatch):
    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        config_from_dict(_raw(tmp_path / "m.csv", **trainer))


def test_good_layouts_load_and_a_torchrun_launch_may_run_one_process(tmp_path, monkeypatch):
    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    cfg = config_from_dict(_raw(tmp_path / "m.csv", strategy="ddp", devices=2, num_nodes=2))
    assert cfg.trainer.world_size == 4 and cfg.optim.batch_size // cfg.trainer.world_size == 8
    assert config_from_dict(_raw(tmp_path / "m.csv")).trainer.strategy == "auto"  # the default: one process
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # what torchrun --nproc-per-node 1 sets
    assert config_from_dict(_raw(tmp_path / "m.csv", strategy="ddp", devices=1)).trainer.devices == 1


def test_a_launcher_with_other_numbers_is_refused_before_any_data(tmp_path, monkeypatch):
    from radiolens.train.pipeline import train_model

    for key, value in {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                       "GROUP_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    cfg = config_from_dict(_raw(tmp_path / "missing.csv", strategy="ddp", devices=2))
    with pytest.raises(ConfigError, match=r"torchrun started 4 processes but trainer.devices x trainer.num_nodes"):
        train_model(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_torchrun_group_without_ddp_is_refused(tmp_path, monkeypatch):
    """Two torchrun processes with the default strategy would train two models into one folder."""
    from radiolens.train.pipeline import train_model

    for key, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="torchrun started 2 processes; train them as one group with --strategy"):
        train_model(config_from_dict(_raw(tmp_path / "missing.csv")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("env", "devices", "rank"), [
    ({}, 2, 0),  # the command as typed: Lightning's launcher makes it rank 0
    ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, 2, 1),  # a child of Lightning's launcher
    ({"LOCAL_RANK": "1", "NODE_RANK": "1", "WORLD_SIZE": "4"}, 2, 3),  # its second node
    ({"RANK": "5", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, 4, 5),  # torchrun
])
def test_the_rank_is_known_before_the_trainer_and_agrees_with_lightning(monkeypatch, env, devices, rank):
    """Rank 0 alone may create the output folder, and it must know before the trainer (built after the data)."""
    import lightning as L

    from radiolens.train.distributed import launch_rank

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME", "LSB_JOBID"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch_rank("auto", devices) == 0
    assert launch_rank("ddp", devices) == rank
    trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=devices, num_nodes=max(1, rank // devices + 1),
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert trainer.global_rank == rank


def test_cli_options_reach_the_config(tmp_path, monkeypatch):
    """--strategy/--devices/--num-nodes are config overrides: a one-process ddp is refused at load (exit 2, one
    line, no output folder); valid values arrive in cfg.trainer unchanged."""
    import radiolens.train.job as job

    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp_path / "m.csv")))
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(path), "--out", str(out), "--strategy", "ddp"])
    assert res.exit_code == 2 and res.output.startswith("error: c.yaml: trainer:"), res.output
    assert "devices * num_nodes >= 2" in res.output and not out.exists()

    seen = {}

    def record(cfg, out_dir, echo=print):
        seen["trainer"] = cfg.trainer
        return None  # what a DDP process other than rank 0 returns: the CLI prints nothing

    monkeypatch.setattr(job, "run_training_job", record)
    res = runner.invoke(app, ["train", "--config", str(path), "--out", str(out), "--strategy", "ddp",
                              "--devices", "2", "--num-nodes", "2"])
    assert res.exit_code == 0 and res.output == "", res.output
    t = seen["trainer"]
    assert (t.strategy, t.devices, t.num_nodes, t.world_size) == ("ddp", 2, 2, 4)


def test_shards_split_each_one_process_batch_and_validation_once():
    """Step k of a 2-process run holds exactly the samples of step k of the one-process run (the same
    generator stream, every second index), over several epochs; validation shards are disjoint and complete."""
    from radiolens.train.pipeline import _loader

    n, batch = 103, 16  # odd: the last step is padded by one repeated index, as DistributedSampler does
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    ids = torch.arange(n, dtype=torch.float32)  # the "target" is the sample's index
    one = _loader(images, ids, 0.5, 0.2, batch, shuffle=True, seed=7)
    shards = [_loader(images, ids, 0.5, 0.2, batch // 2, shuffle=True, seed=7, shard=(r, 2)) for r in (0, 1)]
    for epoch in range(3):
        for s in shards:
            s.sampler.set_epoch(epoch)
        steps = [[y.tolist() for _, y in loader] for loader in (one, *shards)]
        assert len(steps[1]) == len(steps[2]) == len(steps[0])
        for k, full in enumerate(steps[0]):
            union = steps[1][k] + steps[2][k]
            if k < len(steps[0]) - 1:
                assert sorted(union) == sorted(full), (epoch, k)
            else:  # 103 = 2 * 52 - 1: the padding repeats the first index of the epoch's order
                assert sorted(union) == sorted([*full, steps[0][0][0]]), (epoch, k)
    val = [_loader(images, ids, 0.5, 0.2, 32, shard=(r, 2)) for r in (0, 1)]
    seen = [y for loader in val for _, b in loader for y in b.tolist()]
    assert sorted(seen) == list(range(n))  # every validation image exactly once, none padded in


#: How the two processes start: Lightning's own launcher (the command starts once and Lightning re-runs its command
#: line for rank 1) or torchrun (both started by torch.distributed.run; Lightning detects its environment).
LAUNCHERS = {"lightning": [sys.executable, "-m", "radiolens.cli"],
             "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "radiolens.cli"]}


def _radiolens(launcher: str, args: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run([*LAUNCHERS[launcher], *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(pneumonia_small, tmp_path, launcher):
    from mlflow import MlflowClient

    from radiolens.models.bundle import ModelBundle
    from radiolens.train.job import run_training_job

    raw = {"name": "ddp-parity", "data": {"manifest": str(pneumonia_small),
                                          "label": {"task": "binary", "columns": ["label"], "positive": "pneumonia"}},
           "model": {"arch": "lenet5", "input_size": 28},
           "optim": {"epochs": 3, "batch_size": 32, "lr": 0.003, "early_stopping_patience": 3},
           "augment": {"enabled": False}, "eval": {"n_bootstrap": 50}, "progress_bar": False, "num_threads": 1}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}  # 2 processes x 1 thread
    (tmp_path / "tmp").mkdir()
    ddp_out = tmp_path / "ddp"
    res = _radiolens(launcher, ["train", "--config", str(path), "--out", str(ddp_out), "--strategy", "ddp",
                                "--devices", "2"], env)
    assert res.stdout.count("model:") == 1  # rank 1 reports nothing

    one = run_training_job(config_from_dict({**raw, "mlflow": False}), tmp_path / "one", echo=lambda m: None)
    a, b = ModelBundle.load(one.model), ModelBundle.load(ddp_out / "model.pt")
    ta, tb = a.info.training, b.info.training
    assert tb["distributed"] == {"strategy": "ddp", "world_size": 2, "global_batch_size": 32,
                                 "per_process_batch_size": 16}
    assert ta["distributed"]["world_size"] == 1
    assert ta["n_train"] == tb["n_train"] == 400 and ta["n_val"] == tb["n_val"] == 150
    # validation AUROC over the whole validation split each epoch (a shard's would differ by far more)
    assert len(ta["history"]) == len(tb["history"]) == 3 and ta["best_epoch"] == tb["best_epoch"]
    for ha, hb in zip(ta["history"], tb["history"], strict=True):
        assert abs(ha["val_auroc"] - hb["val_auroc"]) <= 1e-4, (ha, hb)
        assert abs(ha["train_loss"] - hb["train_loss"]) <= 1e-4 * max(1.0, ha["train_loss"]), (ha, hb)
    assert max(h["val_auroc"] for h in tb["history"]) > 0.8  # it learned (chance is 0.5)
    # saved weights: relative L2 distance (measured ~2e-7 after 39 steps; bound 1e-4)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    va = torch.cat([v.flatten().double() for v in sa.values()])
    vb = torch.cat([v.flatten().double() for v in sb.values()])
    rel = float((va - vb).norm() / va.norm())
    assert 0 <= rel < 1e-4, rel
    sa_json = json.loads((ddp_out / "summary.json").read_text())
    assert np.isclose(sa_json["headline"]["auroc"], one.headline["auroc"], atol=1e-3)

    # rank 0 alone wrote: one bundle, one report, one MLflow run; rank 1's scratch folders are gone
    assert sorted(p.name for p in ddp_out.iterdir()) == sorted(
        ["checkpoints", "manifest_used.csv", "mlartifacts", "mlflow.db", "model.pt", "report", "summary.json",
         "training_curves.png"])
    client = MlflowClient(tracking_uri=f"sqlite:///{ddp_out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp-parity").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["trainer.devices"] == "2" and "test_auroc" in runs[0].data.metrics
    assert len(client.get_metric_history(runs[0].info.run_id, "val_auroc")) == 3  # logged once per epoch
    assert not list((tmp_path / "tmp").glob("radiolens-rank*"))  # rank 1's scratch folder was removed

"""Hyper-parameter search with Optuna: each trial is a full training run scored on VALIDATION AUROC only.

The test split is never looked at while tuning (test logits are not even computed), so the final model's
test report stays an honest estimate. Trials run sequentially: on a CPU box there is nothing to gain from
parallel trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from radiolens import progress
from radiolens.train.config import TrainConfig, config_from_dict


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: tuple[float, float] = (1e-4, 1e-2)  # log-uniform
    weight_decay: tuple[float, float] = (1e-6, 1e-2)  # log-uniform
    batch_size: list[int] = Field(default_factory=lambda: [32, 64])
    dropout: tuple[float, float] | None = (0.0, 0.5)


def tune(cfg: TrainConfig, out_dir: str | Path, n_trials: int = 10, space: SearchSpace | None = None,
         seed: int = 0) -> dict:
    """Run ``n_trials`` trainings; returns the best params and writes ``best_config.yaml`` + ``trials.csv``."""
    import optuna

    from radiolens.train.pipeline import train_model

    space = space or SearchSpace()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = cfg.model_dump()
    base["data"]["test_split"] = None  # tuning never touches the test split
    base["mlflow"] = False
    # trials train in this one process: Lightning's DDP launcher re-runs the whole command for each fit, which
    # would restart the study in every child; best_config.yaml keeps the config's own trainer section
    base["trainer"] = {"strategy": "auto", "devices": 1, "num_nodes": 1}

    def objective(trial: optuna.Trial) -> float:
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
        overrides = {
            "optim.lr": trial.suggest_float("lr", *space.lr, log=True),
            "optim.weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True),
            "optim.batch_size": trial.suggest_categorical("batch_size", space.batch_size),
        }
        if space.dropout is not None:
            overrides["model.dropout"] = trial.suggest_float("dropout", *space.dropout)
        trial_cfg = config_from_dict(raw, overrides, "tune")
        result = train_model(trial_cfg, out_dir / f"trial_{trial.number:03d}")
        scores = [h["val_auroc"] for h in result.history if np.isfinite(h["val_auroc"])]
        trial.set_user_attr("best_epoch", result.best_epoch)
        return max(scores) if scores else 0.5

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials, show_progress_bar=progress.enabled())
    study.trials_dataframe().to_csv(out_dir / "trials.csv", index=False)
    best = study.best_trial
    final = cfg.model_dump(mode="json")
    final["optim"].update(lr=best.params["lr"], weight_decay=best.params["weight_decay"],
                          batch_size=best.params["batch_size"])
    if "dropout" in best.params:
        final["model"]["dropout"] = best.params["dropout"]
    (out_dir / "best_config.yaml").write_text(yaml.safe_dump(final, sort_keys=False))
    return {"best_val_auroc": best.value, "params": best.params, "n_trials": len(study.trials),
            "best_config": str(out_dir / "best_config.yaml")}

"""The typed training configuration (YAML on disk), validated before any data is touched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from radiolens.data.manifest import LabelSpec
from radiolens.data.transforms import AugmentConfig
from radiolens.errors import ConfigError
from radiolens.models.operating_point import OperatingPointError, parse_operating_point
from radiolens.models.registry import available_models


class DataConfig(BaseModel):
    """Where the manifest comes from. ``manifest`` is the universal entry; ``medmnist`` builds one first."""

    model_config = ConfigDict(extra="forbid")

    manifest: str | None = None
    medmnist: str | None = None  # a MedMNIST flag, e.g. "pneumoniamnist": built into <out>/data/
    medmnist_root: str | None = None  # default: $RADIOLENS_DATA_DIR/medmnist, else ~/.medmnist (download)
    medmnist_size: Literal[28, 64, 128, 224] = 28  # the image sizes MedMNIST publishes
    label: LabelSpec
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = "test"
    # carve a patient-level test split of this fraction out of ``train_split`` when the manifest has none
    carve_test_from_train: float | None = Field(None, gt=0, lt=0.5)
    split_seed: int = 0
    # k-fold: train on a manifest with a fold column (``radiolens split --folds K``): ``fold`` -> test,
    # the next fold -> val, the rest -> train
    fold: int | None = Field(None, ge=0)
    fold_column: str = "fold"
    cache_dir: str | None = None  # decoded-image cache shared between runs (default: none)
    # who the images are of, from the data set's documentation (radiolens.models.population.Population):
    # stored in the bundle, shown beside every result, and checked against each image's age and view
    population: dict[str, Any] = Field(default_factory=dict)

    @field_validator("population")
    @classmethod
    def _population(cls, v: dict[str, Any]) -> dict[str, Any]:
        from radiolens.models.population import Population

        try:
            Population.from_dict(v)
        except Exception as exc:  # ModelError: a malformed record; pydantic reports it as a config error
            raise ValueError(str(exc)) from None
        return v

    @field_validator("medmnist")
    @classmethod
    def _known_flag(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from medmnist import INFO

        if v not in INFO:
            raise ValueError(f"unknown MedMNIST flag '{v}' (e.g. pneumoniamnist, chestmnist)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.manifest is None) == (self.medmnist is None):
            raise ValueError("give exactly one of data.manifest or data.medmnist")
        return self


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: str = "small_cnn"
    input_size: int | None = None  # default: the registry's size for the arch
    # pretrained RGB weights (folded into the 1-channel first conv): a local file, or "imagenet" to download
    # through timm / torchvision when online (a typed WeightsUnavailableError offline)
    weights: str | None = None
    dropout: float | None = Field(None, ge=0, lt=1)

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        if self.arch not in available_models():
            raise ValueError(f"unknown arch '{self.arch}'; choose one of: {', '.join(available_models())}")
        return self


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["auto", "bce", "ce", "focal"] = "auto"  # auto: BCE(pos_weight) / weighted CE
    class_weighting: bool = True  # pos_weight for BCE, inverse-frequency weights for CE
    focal_gamma: float = Field(2.0, ge=0)
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    early_stopping_patience: int = Field(5, ge=1)
    # staged fine-tuning: ``head_epochs`` with only the classifier trainable, then the last
    # ``unfreeze_blocks`` blocks (None = all) at ``lr * finetune_lr_factor``, and from epoch
    # ``unfreeze_all_from`` (if set) every block
    head_epochs: int = Field(0, ge=0)
    unfreeze_blocks: int | None = Field(None, ge=0)
    unfreeze_all_from: int | None = Field(None, ge=0)
    finetune_lr_factor: float = Field(0.1, gt=0, le=1)
    #: A wall-time budget for fitting (minutes; Lightning's ``max_time``): training stops at the first batch
    #: past it and the best validated checkpoint is kept. Makes recipes comparable at equal time.
    max_minutes: float | None = Field(None, gt=0)
    #: Weight averaging (Lightning's ``WeightAveraging`` over torch's ``AveragedModel``, parameters and
    #: BatchNorm buffers): ``ema`` keeps an exponential moving average (``ema_decay`` per optimizer step),
    #: ``swa`` an equal average of the weights after every step from epoch ``swa_from_epoch``. Validation,
    #: checkpoint selection and the saved model all use the averaged weights.
    weight_averaging: Literal["none", "ema", "swa"] = "none"
    ema_decay: float = Field(0.995, gt=0, lt=1)
    swa_from_epoch: int = Field(0, ge=0)
    #: MixUp (Zhang et al. 2018): each training batch is blended with a shuffled copy of itself with a weight
    #: drawn from Beta(alpha, alpha), and the loss is the same blend of the two targets' losses. 0 = off.
    mixup_alpha: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _stages(self) -> OptimConfig:
        if self.unfreeze_all_from is not None and self.unfreeze_all_from < self.head_epochs:
            raise ValueError("optim.unfreeze_all_from must not come before the end of optim.head_epochs")
        if self.weight_averaging == "swa" and self.swa_from_epoch >= self.epochs:
            raise ValueError(f"optim.swa_from_epoch ({self.swa_from_epoch}) must be below optim.epochs "
                             f"({self.epochs}): SWA would average nothing")
        return self


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operating_point: str = "youden"  # youden | sensitivity:<target> | specificity:<target>, target in (0, 1]
    n_bootstrap: int = Field(1000, ge=0)

    @field_validator("operating_point")
    @classmethod
    def _rule(cls, v: str) -> str:
        try:
            parse_operating_point(v)
        except OperatingPointError as exc:  # checked here, when the config is read, not after training
            raise ValueError(str(exc)) from None
        return v.strip()


def external_launcher() -> str | None:
    """The launcher that started this process as one rank of a group, read from its environment: ``torchrun``
    (``WORLD_SIZE`` plus ``TORCHELASTIC_RUN_ID`` / ``LOCAL_WORLD_SIZE``), ``slurm`` (``srun`` sets
    ``SLURM_PROCID``), else None. Read from the environment, without importing Lightning, so a config is checked
    in milliseconds; Lightning's cluster environments detect the same variables when the trainer starts."""
    if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        return "slurm"
    if "WORLD_SIZE" in os.environ and ("TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ):
        return "torchrun"
    return None


class TrainerConfig(BaseModel):
    """How many processes train one model. ``strategy: ddp`` runs Lightning's DistributedDataParallel with
    ``devices`` processes on each of ``num_nodes`` machines (gloo on CPU, NCCL on GPU); ``optim.batch_size`` is
    the *global* batch, split evenly over the processes, so a config means the same optimisation at any size."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["auto", "ddp"] = "auto"
    devices: int = Field(1, ge=1)  #: processes per node (one per GPU on GPU machines)
    num_nodes: int = Field(1, ge=1)
    #: GPU only: BatchNorm statistics over the global batch (torch's SyncBatchNorm has no CPU implementation, so
    #: on CPU every process normalises with the statistics of its own share of the batch)
    sync_batchnorm: bool = True

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @model_validator(mode="after")
    def _processes(self) -> TrainerConfig:
        if self.strategy == "auto" and self.world_size > 1:
            raise ValueError(f"devices={self.devices}, num_nodes={self.num_nodes} need trainer.strategy: ddp "
                             "(strategy auto trains in one process)")
        if self.strategy == "ddp" and self.world_size < 2 and external_launcher() is None:
            raise ValueError("strategy ddp needs devices * num_nodes >= 2 (or a torchrun / srun launch)")
        return self


class TrainConfig(BaseModel):
    """Everything one training run needs; ``radiolens train --config FILE`` reads this from YAML."""

    model_config = ConfigDict(extra="forbid")

    name: str = "radiolens-model"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = 0
    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    mlflow: bool = True  # track to <out>/mlruns (a local file store) by default
    mlflow_uri: str | None = None
    progress_bar: bool = True
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="after")
    def _batch_splits(self) -> TrainConfig:
        world = self.trainer.world_size
        if self.optim.batch_size % world:
            raise ValueError(f"optim.batch_size ({self.optim.batch_size}) is the global batch and must divide "
                             f"evenly over the {world} processes (trainer.devices x trainer.num_nodes)")
        return self


def load_config(path: str | Path, overrides: dict | None = None, clear: tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config; ``overrides`` are dotted keys (``{"optim.epochs": 3}``) applied on top (None values
    are ignored); ``clear`` dotted keys are set to null (e.g. ``data.medmnist`` when a manifest replaces it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path.name}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: the top level must be a mapping")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for key in ("manifest", "medmnist_root", "cache_dir"):  # ${RADIOLENS_DATA_DIR} etc. in paths
        if isinstance(data.get(key), str):
            data[key] = os.path.expandvars(data[key])
            if "$" in data[key]:
                raise ConfigError(f"{path.name}: data.{key}: unset environment variable in '{data[key]}'")
    if data.get("manifest"):  # relative manifest paths resolve against the config's folder
        m = Path(raw["data"]["manifest"]).expanduser()
        if not m.is_absolute():
            raw["data"]["manifest"] = str((path.parent / m).resolve())
    return config_from_dict(raw, overrides, path.name, clear)


def config_from_dict(raw: dict, overrides: dict | None = None, source: str = "config",
                     clear: tuple[str, ...] = ()) -> TrainConfig:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    items = [(k, v) for k, v in (overrides or {}).items() if v is not None] + [(k, None) for k in clear]
    for dotted, value in items:
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{p}' is not a section")
        node[leaf] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        raise ConfigError(f"{source}: {where}: {first['msg']} ({exc.error_count()} error(s))") from exc


def parse_set_overrides(items: list[str] | None) -> dict:
    """``["optim.lr=3e-4", "augment.enabled=false"]`` (``radiolens train --set``) -> dotted overrides for
    :func:`load_config`. Values are read as YAML scalars or flow collections (``[a, b]``), then the whole config
    is validated by its pydantic model, so an unknown key or a value of the wrong type is refused before any
    data is read."""
    out: dict = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=3e-4")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: the value is not a YAML scalar or list") from exc
        if value is None:
            raise ConfigError(f"--set {key}: empty value (write null-able keys in the config file)")
        out[key] = value
    return out


def config_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (``radiolens train --print-config``): what a run with these options uses."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def label_overrides(task: str | None, columns: list[str] | None, positive: str | None,
                    negative: list[str] | None, classes: str | None) -> tuple[dict, list[str]]:
    """Dotted overrides of ``data.label`` (for :func:`load_config`) from the label options of a run, plus the
    keys to clear when the task changes: a binary config's ``negative`` / ``positive_name`` mean nothing to a
    multi-class run, and a multi-class ``classes`` list nothing to a binary one. ``classes`` is ``"A,B,C"``."""
    out: dict = {"data.label.columns": list(columns) if columns else None, "data.label.positive": positive,
                 "data.label.negative": list(negative) if negative else None,
                 "data.label.classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None}
    clear: list[str] = []
    if task is not None:
        out["data.label.task"] = task
        if task != "binary":
            clear += [k for k in ("data.label.negative", "data.label.positive_name") if out.get(k) is None]
        if task != "multiclass" and classes is None:
            clear.append("data.label.classes")
    return out, clear

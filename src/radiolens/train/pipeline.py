"""One training run: manifest -> checks -> decoded tensors -> Lightning fit -> best weights -> bundle.

Every check on the data (files, labels, classes per split, patient leakage) runs before the first image
is decoded, so a bad manifest fails in seconds with one clear message. Evaluation statistics are not
computed here: the run returns validation and test logits, and :func:`radiolens.train.job.run_training_job`
hands them to :func:`radiolens.evaluate.evaluate_predictions`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from radiolens.data.builders import from_medmnist
from radiolens.data.dataset import ImageTensorDataset, intensity_stats, manifest_images
from radiolens.data.manifest import Manifest, load_manifest
from radiolens.data.splits import assign_splits, check_ready_for_training, fold_split
from radiolens.data.transforms import build_augmentation
from radiolens.errors import ConfigError
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.logits import stack_logits
from radiolens.models.registry import create_model, get_architecture
from radiolens.settings import data_dir
from radiolens.train.config import TrainConfig, external_launcher
from radiolens.train.distributed import launch_rank, shard_sampler
from radiolens.train.losses import make_loss
from radiolens.train.module import ClassifierModule, StagedFinetuning, weight_averaging

log = logging.getLogger(__name__)


@dataclass
class SplitOutputs:
    logits: np.ndarray
    targets: np.ndarray


@dataclass
class TrainResult:
    bundle: ModelBundle
    manifest: Manifest
    val: SplitOutputs
    test: SplitOutputs | None
    history: list[dict]
    best_epoch: int
    timings: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_uri: str | None = None


def resolve_manifest(cfg: TrainConfig, out_dir: Path) -> Manifest:
    """The run's manifest: the given CSV, or one built from MedMNIST; carve a test split when asked."""
    d = cfg.data
    if d.medmnist is not None:
        root = d.medmnist_root
        if root is None:
            base = data_dir(required=False)
            root = str(base / "medmnist") if base is not None and (base / "medmnist").is_dir() else None
        manifest = from_medmnist(d.medmnist, root, out_dir / "data", size=d.medmnist_size, seed=d.split_seed)
    else:
        manifest = load_manifest(d.manifest)
    if d.fold is not None:
        if d.train_split != "train" or d.val_split != "val" or d.test_split not in ("test", None):
            raise ConfigError("data.fold writes train/val/test splits; leave the split names at their defaults")
        manifest = fold_split(manifest, d.fold, d.fold_column)
    if d.carve_test_from_train is not None:
        test = d.test_split or "test"
        if test in manifest.split_names():
            raise ConfigError(f"data.carve_test_from_train: the manifest already has a '{test}' split")
        manifest = assign_splits(manifest, d.label, val=0.0, test=d.carve_test_from_train, seed=d.split_seed,
                                 only=d.train_split, names=(d.train_split, d.val_split, test))
    return manifest


def _loader(images, targets, mean, std, batch_size, augment=None, shuffle=False, seed=0,
            shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """``shard`` = (rank, world): this process's part of the data in a ``world``-process run (see
    :mod:`radiolens.train.distributed`); (0, 1) is the one-process loader, unchanged."""
    gen = torch.Generator().manual_seed(seed)
    dataset = ImageTensorDataset(images, targets, mean, std, augment)
    rank, world = shard
    if world == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen if shuffle else None,
                          num_workers=0)
    sampler = shard_sampler(dataset, rank, world, shuffle, gen)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=gen if shuffle else None,
                      num_workers=0)


def _trainer(cfg: TrainConfig, out_dir: Path, use_gpu: bool):
    """The Lightning trainer and its checkpoint callback (``logger=False``: rank 0 attaches the MLflow logger)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    o, t = cfg.optim, cfg.trainer
    averaging = weight_averaging(o)
    # a weights-only checkpoint skips the callbacks' checkpoint hooks, which is where the averaged weights are
    # written; with averaging the full checkpoint is kept so "best" holds the weights that were validated
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor="val_auroc", mode="max",
                           save_top_k=1, save_weights_only=averaging is None, enable_version_counter=False)
    callbacks = [ckpt, EarlyStopping(monitor="val_auroc", mode="max", patience=o.early_stopping_patience)]
    if averaging is not None:
        callbacks.append(averaging)
    staged = o.head_epochs > 0 or o.unfreeze_blocks is not None or o.unfreeze_all_from is not None
    if staged:
        callbacks.append(StagedFinetuning(arch=cfg.model.arch, head_epochs=o.head_epochs,
                                          unfreeze_blocks=o.unfreeze_blocks, unfreeze_all_from=o.unfreeze_all_from))
    distributed: dict = {"devices": 1}
    if t.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # staged fine-tuning freezes parameters after DDP has registered them: DDP must expect unused ones
        distributed = {"strategy": DDPStrategy(find_unused_parameters=staged), "devices": t.devices,
                       "num_nodes": t.num_nodes, "sync_batchnorm": use_gpu and t.sync_batchnorm,
                       "use_distributed_sampler": False}  # the shards are built here (distributed.shard_sampler)
    trainer = L.Trainer(
        max_epochs=o.epochs, max_time=timedelta(minutes=o.max_minutes) if o.max_minutes else None,
        accelerator="gpu" if use_gpu else "cpu",
        precision="16-mixed" if use_gpu else "32-true", deterministic="warn" if use_gpu else True,
        callbacks=callbacks, logger=False, enable_progress_bar=cfg.progress_bar, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=10, default_root_dir=str(out_dir), **distributed,
    )
    return trainer, ckpt


def _check_launcher(cfg: TrainConfig, world: int) -> None:
    """A torchrun / srun launch must agree with the config's process layout before any data is read: a torchrun
    group running ``strategy: auto`` would train N independent models into one folder, and a size mismatch would
    otherwise surface as Lightning's error after the data is decoded."""
    launcher = external_launcher()
    if launcher is None:
        return
    size = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 0)
    if cfg.trainer.strategy != "ddp":
        # under SLURM, a batch script may run one process inside a larger allocation: only torchrun is certain
        if launcher == "torchrun" and size > 1:
            raise ConfigError(f"torchrun started {size} processes; train them as one group with --strategy ddp "
                              f"--devices <processes per node> (trainer.strategy: ddp)")
        return
    if size and size != world:
        raise ConfigError(f"{launcher} started {size} processes but trainer.devices x trainer.num_nodes = "
                          f"{cfg.trainer.devices} x {cfg.trainer.num_nodes}; give the launcher's numbers")


def train_model(cfg: TrainConfig, out_dir: str | Path, echo=None) -> TrainResult | None:
    """``echo(message)`` receives notes the user should see before training starts (default: the log).

    Under ``trainer.strategy: ddp`` every process runs this function (Lightning re-launches the command, or
    torchrun / srun start them); only global rank 0 writes into ``out_dir`` and returns the result, the other
    processes train their share and return None."""
    import lightning as L

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
        if cfg.trainer.strategy == "ddp":  # else Lightning's launcher resets threads to cores / processes
            os.environ.setdefault("OMP_NUM_THREADS", str(cfg.num_threads))
    use_gpu = cfg.accelerator != "cpu" and torch.cuda.is_available()
    _check_launcher(cfg, cfg.trainer.world_size)
    rank = launch_rank(cfg.trainer.strategy, cfg.trainer.devices)
    is_zero = rank == 0
    if is_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
    # the other ranks build what they need (a MedMNIST manifest's PNGs) in a folder of their own, removed
    # once the images are decoded
    scratch = None if is_zero else Path(tempfile.mkdtemp(prefix=f"radiolens-rank{rank}-"))
    try:
        d = cfg.data
        manifest = resolve_manifest(cfg, out_dir if scratch is None else scratch)
        roles = {"train": d.train_split, "val": d.val_split}
        if d.test_split:
            roles["test"] = d.test_split
        class_names = check_ready_for_training(manifest, d.label, roles)
        if d.label.task == "multiclass" and d.label.classes is None and is_zero:
            (echo or log.info)(f"classes learned from the manifest (output order): {', '.join(class_names)}; "
                               "set data.label.classes to fix them")
        if is_zero:
            manifest.save(out_dir / "manifest_used.csv")  # absolute paths: usable from anywhere

        arch = cfg.model.arch
        size = cfg.model.input_size or get_architecture(arch).default_input_size
        # the model first: a weights problem (offline 'imagenet', a missing file) fails before decoding starts;
        # nothing below draws random numbers before training, so the seeded initial weights are unchanged (and
        # equal on every rank; DDP also broadcasts rank 0's weights when it wraps the model)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        model = create_model(arch, len(class_names), weights=cfg.model.weights, dropout=cfg.model.dropout)
        cache = d.cache_dir
        parts = {role: manifest.subset(name) for role, name in roles.items()}
        images = {role: manifest_images(m, (size, size), cache, cfg.progress_bar and is_zero, write_cache=is_zero)
                  for role, m in parts.items()}
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    targets = {role: m.targets(d.label)[0] for role, m in parts.items()}
    t_data, cpu_data = time.perf_counter(), time.process_time()
    mean, std = intensity_stats(images["train"])

    # class weights from the whole training split (every rank holds all of it, so they are equal on every rank)
    loss = make_loss(d.label.task, cfg.optim.loss, targets["train"], len(class_names),
                     cfg.optim.class_weighting, cfg.optim.focal_gamma)
    module = ClassifierModule(model, arch, d.label.task, loss, cfg.optim)
    trainer, ckpt = _trainer(cfg, out_dir, use_gpu)
    world = trainer.world_size
    if trainer.global_rank != rank:  # launch_rank follows Lightning's rule; a new launcher would show up here
        raise RuntimeError(f"rank {rank} predicted from the environment, Lightning says {trainer.global_rank}")
    if world > 1:  # augmentation, dropout and MixUp draw differently on each rank; the shuffle does not
        L.seed_everything(cfg.seed + rank, workers=True, verbose=False)
    bs = cfg.optim.batch_size // world  # optim.batch_size is the global batch (the config refuses a remainder)
    train_loader = _loader(images["train"], targets["train"], mean, std, bs, build_augmentation(cfg.augment),
                           shuffle=True, seed=cfg.seed, shard=(rank, world))
    val_loader = _loader(images["val"], targets["val"], mean, std, max(bs, 128), shard=(rank, world))

    o = cfg.optim
    run_id, uri = None, None
    if cfg.mlflow and is_zero:
        from lightning.pytorch.loggers import MLFlowLogger

        # a SQLite store under the output folder (MLflow 3 retired the plain file store), artifacts beside it
        uri = cfg.mlflow_uri or f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"
        logger = MLFlowLogger(experiment_name=cfg.name, tracking_uri=uri, run_name=f"{arch}-{d.label.task}",
                              artifact_location=(out_dir / "mlartifacts").resolve().as_uri())
        logger.log_hyperparams(_flat_params(cfg, size, len(parts["train"])))
        run_id = logger.run_id
        trainer.logger = logger
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        trainer.fit(module, train_loader, val_loader)
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    if not is_zero:
        return None

    best = ckpt.best_model_path
    if best and os.path.isfile(best):
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    model = module.model.cpu().eval()
    best_epoch = _best_epoch(module.history)
    val = SplitOutputs(*stack_logits(model, _loader(images["val"], targets["val"], mean, std, 256)))
    test = None
    if "test" in images:
        test = SplitOutputs(*stack_logits(model, _loader(images["test"], targets["test"], mean, std, 256)))
    info = BundleInfo(
        arch=arch, task=d.label.task, class_names=class_names, input_size=(size, size), mean=mean, std=std,
        negative_name=d.label.negative_name, name=cfg.name, dropout=cfg.model.dropout,
        population=dict(d.population),
        training={"epochs_run": len(module.history), "best_epoch": best_epoch, "seed": cfg.seed,
                  "n_train": len(parts["train"]), "n_val": len(parts["val"]),
                  "n_test": len(parts["test"]) if "test" in parts else 0,
                  "classes_learned_from_data": d.label.task == "multiclass" and d.label.classes is None,
                  "loss": type(loss).__name__, "augment": cfg.augment.model_dump(),
                  "optim": cfg.optim.model_dump(), "mlflow_run_id": run_id,
                  "distributed": {"strategy": cfg.trainer.strategy, "world_size": world,
                                  "global_batch_size": o.batch_size, "per_process_batch_size": bs}},
    )
    # CPU seconds (all threads) next to wall seconds: on a shared machine the wall time says more about the
    # neighbours than about the job; fit_cpu_s / threads is the wall time on otherwise idle cores
    timings = {"data_s": t_data - t0, "fit_s": t_fit - t_data, "fit_cpu_s": cpu_fit - cpu_data,
               "total_s": time.perf_counter() - t0}
    return TrainResult(ModelBundle(info, model), manifest, val, test, module.history, best_epoch, timings,
                       run_id, uri)


def _best_epoch(history: list[dict]) -> int:
    scores = [h["val_auroc"] if np.isfinite(h["val_auroc"]) else -1 for h in history]
    return int(history[int(np.argmax(scores))]["epoch"]) if history else 0


def _flat_params(cfg: TrainConfig, size: int, n_train: int) -> dict:
    flat: dict = {"input_size": size, "n_train": n_train}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = node if isinstance(node, int | float | str | bool) or node is None else str(node)

    walk("", cfg.model_dump())
    return flat

"""The LightningModule: one classifier, one loss, validation AUROC as the signal that matters.

Early stopping and checkpointing watch ``val_auroc`` (not the loss): with class weighting, label noise
and calibration drift the loss can rise while ranking (what a triage threshold uses) still improves.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from torch import nn
from torchmetrics.functional.classification import binary_auroc, multiclass_auroc, multilabel_auroc

from radiolens.models.registry import parameter_blocks, set_trainable_blocks
from radiolens.train.config import OptimConfig
from radiolens.train.distributed import gather_concat


def auroc(task: str, logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro AUROC; for multi-label, over the labels that have both classes in ``targets`` (NaN if none)."""
    if task == "binary":
        t = targets.long().view(-1)
        if t.min() == t.max():
            return float("nan")
        return float(binary_auroc(torch.sigmoid(logits.view(-1).float()), t))
    if task == "multiclass":
        return float(multiclass_auroc(torch.softmax(logits.float(), 1), targets.long(), logits.shape[1],
                                      average="macro"))
    t = targets.long()
    valid = (t.sum(0) > 0) & (t.sum(0) < len(t))
    if not valid.any():
        return float("nan")
    per = multilabel_auroc(torch.sigmoid(logits.float()), t, logits.shape[1], average=None)
    return float(per[valid].mean())


class ClassifierModule(L.LightningModule):
    def __init__(self, model: nn.Module, arch: str, task: str, loss: nn.Module, optim: OptimConfig):
        super().__init__()
        self.model, self.arch, self.task, self.loss_fn, self.optim = model, arch, task, loss, optim
        self.history: list[dict] = []
        self._train_loss_sum = 0.0
        self._train_n = 0
        self._val_logits: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self._val_loss_sum = 0.0
        self._val_n = 0
        self._last_val: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        alpha = self.optim.mixup_alpha
        if alpha > 0 and len(x) > 1:
            # MixUp written out: timm's Mixup wants one-hot targets over >= 2 classes, and radiolens' binary head
            # has one logit (BCE) and multi-class targets are class indices; blending the two losses serves all
            # three tasks and every loss (BCE, CE, focal) unchanged.
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(len(x), device=x.device)
            logits = self.model(lam * x + (1 - lam) * x[perm])
            loss = lam * self.loss_fn(logits, y) + (1 - lam) * self.loss_fn(logits, y[perm])
        else:
            loss = self.loss_fn(self.model(x), y)
        self._train_loss_sum += float(loss.detach()) * len(x)
        self._train_n += len(x)
        self.log("train_loss_step", loss, prog_bar=True, logger=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self._val_loss_sum += float(self.loss_fn(logits, y)) * len(x)
        self._val_n += len(x)
        self._val_logits.append(logits.detach().float().cpu())
        self._val_targets.append(y.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_logits:
            return
        logits, targets = torch.cat(self._val_logits), torch.cat(self._val_targets)
        loss_sum, n = self._global_sums(self._val_loss_sum, self._val_n)
        # under DDP each process scored a shard: the AUROC that stops training is the whole split's, computed
        # from the same gathered tensors on every process (so every rank stops at the same epoch)
        logits, targets = gather_concat(logits, self.device), gather_concat(targets, self.device)
        score = auroc(self.task, logits, targets)
        val_loss = loss_sum / max(1, n)
        self._val_logits, self._val_targets, self._val_loss_sum, self._val_n = [], [], 0.0, 0
        # NaN would make checkpointing pick nothing; a constant 0.5 ("chance") keeps it well defined.
        # sync_dist: the values are already equal on every rank; the mean of equal values leaves them equal and
        # is what Lightning expects of epoch-level values in a distributed run
        self.log("val_auroc", 0.5 if math.isnan(score) else score, prog_bar=True, sync_dist=True)
        self.log("val_loss", val_loss, prog_bar=True, sync_dist=True)
        self._last_val = {"val_loss": val_loss, "val_auroc": score}

    def on_train_epoch_end(self) -> None:
        loss_sum, n = self._global_sums(self._train_loss_sum, self._train_n)
        train_loss = loss_sum / max(1, n)
        self._train_loss_sum, self._train_n = 0.0, 0
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else float("nan")
        self.log("train_loss", train_loss, sync_dist=True)
        self.log("lr", lr, sync_dist=True)
        self.history.append({"epoch": int(self.current_epoch) + 1, "train_loss": train_loss,
                             "val_loss": self._last_val.get("val_loss", float("nan")),
                             "val_auroc": self._last_val.get("val_auroc", float("nan")), "lr": lr})

    def _global_sums(self, loss_sum: float, n: int) -> tuple[float, int]:
        """A loss sum and sample count summed over every process (unchanged in a one-process run)."""
        if self.trainer.world_size == 1:
            return loss_sum, n
        both = torch.tensor([loss_sum, float(n)], dtype=torch.float64, device=self.device)
        both = self.trainer.strategy.reduce(both, reduce_op="sum")
        return float(both[0]), int(both[1])

    def configure_optimizers(self):
        o = self.optim
        blocks = parameter_blocks(self.model, self.arch)
        head = set(blocks[-1])
        staged = o.head_epochs > 0 or o.unfreeze_blocks is not None or o.unfreeze_all_from is not None
        params = dict(self.model.named_parameters())
        groups = [{"params": [params[n] for n in blocks[-1]], "lr": o.lr, "name": "head"}]
        body = [params[n] for b in blocks[:-1] for n in b if n not in head]
        if body:
            groups.append({"params": body, "lr": o.lr * (o.finetune_lr_factor if staged else 1.0), "name": "body"})
        opt = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
        if o.scheduler == "none":
            return opt
        if o.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_auroc",
                                                       "interval": "epoch"}}
        total = max(1, o.epochs - o.warmup_epochs)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=o.lr * 0.01)
        if o.warmup_epochs:
            warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=o.warmup_epochs)
            cosine = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cosine], milestones=[o.warmup_epochs])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}


class StagedFinetuning(Callback):
    """Head-only for ``head_epochs``, then the last ``unfreeze_blocks`` blocks (None: all) train too, and from
    epoch ``unfreeze_all_from`` (when set) every block: the classic three stages of transfer learning.

    Every parameter sits in the optimizer from the start (frozen ones simply get no gradient, which AdamW
    skips), so LR schedules see one fixed set of parameter groups. Frozen BatchNorm layers are kept in eval
    mode so their running statistics (e.g. from pretraining) are not overwritten either.
    """

    def __init__(self, arch: str, head_epochs: int, unfreeze_blocks: int | None, unfreeze_all_from: int | None = None):
        self.arch, self.head_epochs, self.unfreeze_blocks = arch, head_epochs, unfreeze_blocks
        self.unfreeze_all_from = unfreeze_all_from

    def blocks_at(self, epoch: int) -> int | None:
        """How many of the last blocks train in ``epoch`` (0: the head only; None: all)."""
        if epoch < self.head_epochs:
            return 0
        if self.unfreeze_all_from is not None and epoch >= self.unfreeze_all_from:
            return None
        return self.unfreeze_blocks

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        model = pl_module.model
        last_n = self.blocks_at(trainer.current_epoch)
        trainable = set(set_trainable_blocks(model, self.arch, last_n))
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                own = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
                if own and not any(p in trainable for p in own):
                    module.eval()



class AveragedWeights(WeightAveraging):
    """EMA or SWA of the weights (Lightning's ``WeightAveraging``), guarded for SWA's late start.

    Before the first update an ``AveragedModel`` holds the *initial* weights; Lightning would still validate
    and finally keep those. Here validation, checkpoints and the end of training use the average only once it
    has averaged at least one step, so a run stopped (``max_minutes``) before ``swa_from_epoch`` keeps its
    trained weights instead of silently reverting to its initialisation.
    """

    def __init__(self, mode: str, ema_decay: float = 0.995, swa_from_epoch: int = 0):
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        kwargs = {"multi_avg_fn": get_ema_multi_avg_fn(ema_decay)} if mode == "ema" else {}
        super().__init__(**kwargs)
        self.mode, self.swa_from_epoch = mode, swa_from_epoch
        self._epoch = 0
        self._swapped = False

    def _ready(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def should_update(self, step_idx=None, epoch_idx=None) -> bool:
        return step_idx is not None and (self.mode == "ema" or self._epoch >= self.swa_from_epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch = trainer.current_epoch

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._swapped = self._ready()
        if self._swapped:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self._ready():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._ready():
            self._copy_average_to_current(pl_module)


def weight_averaging(optim: OptimConfig) -> AveragedWeights | None:
    """The callback for ``optim.weight_averaging`` (None when off)."""
    if optim.weight_averaging == "none":
        return None
    return AveragedWeights(optim.weight_averaging, optim.ema_decay, optim.swa_from_epoch)

"""What several training processes (Lightning DDP) share and split: data shards, validation gathering, launchers.

The design keeps a DDP run equivalent to a one-process run with the same global batch:

- **Training order.** Every process draws the same permutation as the one-process loader does (a
  ``RandomSampler`` on a generator seeded with ``cfg.seed``, handed to the ``DataLoader`` as well so the
  per-epoch draws happen in the same order) and takes every ``world``-th index of it. Step ``k`` of the group
  therefore sees exactly the samples of step ``k`` of the one-process run, split over the processes. Lightning's
  ``DistributedSamplerWrapper`` does the sharding (padding the last step by repeating a few indices when the
  split does not divide evenly, as ``DistributedSampler`` does).
- **Validation.** Each process scores a disjoint shard (``UnrepeatedDistributedSampler``: no padding, so no
  image counts twice), then the logits and targets are gathered from every process
  (``torchmetrics.utilities.distributed.gather_all_tensors``, which handles shards of unequal length) and the
  AUROC is computed over the whole validation split. Every process computes it from the same gathered tensors,
  so early stopping and checkpoint selection agree on every rank.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, RandomSampler, Sampler


def shard_sampler(dataset: Dataset, rank: int, world: int, shuffle: bool,
                  generator: torch.Generator | None = None) -> Sampler:
    """The sampler of one process out of ``world``. ``shuffle``: this process's share of the one-process shuffled
    order drawn from ``generator`` (pass the same generator to the ``DataLoader``); otherwise an unpadded,
    disjoint shard in dataset order (for validation: every sample scored exactly once across the group)."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    if shuffle:
        return DistributedSamplerWrapper(RandomSampler(dataset, generator=generator), num_replicas=world,
                                         rank=rank, shuffle=False)
    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)


def gather_concat(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` from every process, concatenated along dim 0 in rank order (on the CPU). The exchange runs on
    ``device`` because NCCL only moves GPU tensors; gloo takes CPU tensors. A no-op outside a process group."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    from torchmetrics.utilities.distributed import gather_all_tensors

    parts = gather_all_tensors(tensor.to(device))
    return torch.cat([p.cpu() for p in parts])


def launch_rank(strategy: str, devices: int) -> int:
    """This process's global rank, known before the trainer exists, so a process other than rank 0 writes nothing
    into the output folder from the start. The rule is Lightning's (``_AcceleratorConnector``): the first cluster
    environment detected among torchrun, SLURM, LSF and MPI gives the rank; otherwise Lightning's own launcher's
    ``NODE_RANK * devices + LOCAL_RANK``. The pipeline checks it against ``trainer.global_rank`` once the trainer
    is built."""
    if strategy != "ddp":
        return 0
    from lightning.fabric.plugins.environments import (
        LightningEnvironment,
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    for env_type in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
        if env_type.detect():
            return int(env_type().global_rank())
    env = LightningEnvironment()
    return env.node_rank() * devices + env.local_rank()

"""Batch-scoring settings, validated once at the edge (CLI or caller) rather than deep in the loop."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Where batch scoring runs: "local" (this process and its decoding workers) or "ray" (a Ray cluster,
#: ``predict.ray_engine``). Both write the same rows into the same resumable results.
Engine = Literal["local", "ray"]


def _default_workers(cores: int | None = None) -> int:
    """0 (decode in the main process, between forward passes) on machines of at most 2 cores, else up to 4.

    With no spare core, decoding workers can only take turns with the inference threads on the same cores, and
    a multi-threaded forward pass stalls at each barrier while one of its threads is descheduled. Measured on
    2 cores (ONNX Runtime fp32 resnet18 @ 224 px, batch 32, images/s end to end; docs/inference.md):

    | inputs                                   | 0 workers, 2 thr | 1 worker, 2 thr | 2 workers, 1 thr |
    |------------------------------------------|------------------|-----------------|------------------|
    | 192 Kermany JPEGs + every 8th a SIIM CR  | 103-105          | 87-93           | 50-57            |
    | 96 NIH 1024^2 PNGs (7 ms decode each)    | 65-67            | 61-64           | 50               |
    | 96 PNG/CR/16-bit J2K (the J2K 380 ms)    | 15               | 14-15           | 15               |

    A process pool that decodes a batch on both cores *between* forward passes (no contention) was tried too:
    86 / 61 / 16.5 img/s on the same three sets, its inter-process copies costing more than the parallel
    decoding saves, except where one decoder (OpenJPEG, already multi-threaded) dominates. Above 2 cores the
    workers get cores of their own (not measured on this project's 2-core machine).
    """
    cores = cores or os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores)


def default_inference_threads(workers: int) -> int:
    """Inference threads when not given: a core left to each decoding worker (all cores with none).

    Measured on 2 cores with 2 workers (631 Kermany images, resnet18 @ 64 px): 1 inference thread instead of 2
    was 7x faster eager and 1.2x faster on ONNX Runtime, because spinning inference threads starve the decoders.
    """
    return max(1, (os.cpu_count() or 1) - workers)


class PredictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(32, ge=1, le=4096)
    # Decoding processes running ahead of inference; 0 decodes in the main process between forward passes
    # (the default on <= 2 cores, see _default_workers).
    workers: int = Field(default_factory=_default_workers, ge=0, le=64)
    prefetch_batches: int = Field(2, ge=1, le=16)  # per worker: bounds memory held by decoded images
    # A case is "flagged" when referred for human review (radiolens.pipeline.decision): by the bundle's fitted
    # TriageRule when it has one, else when within this margin of a threshold (either side). Heatmaps, when
    # asked, are drawn for flagged and positive cases.
    near_threshold_margin: float = Field(0.1, ge=0.0, le=1.0)
    # MC-dropout passes per image whose spread the triage rule sees (as the service's mc_dropout_passes);
    # 0/1 = off. Needs the PyTorch model; each pass is a forward pass, so it is off by default.
    mc_dropout_passes: int = Field(0, ge=0, le=64)
    progress: bool = True
    # Re-runs score again the files whose earlier row is an error (a fixed file, a transient failure); the
    # error row is replaced. False keeps error rows as final.
    retry_errors: bool = True
    # Start the output afresh instead of resuming (also the only way to reuse an output of another model).
    overwrite: bool = False

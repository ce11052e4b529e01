"""Batch scoring on a Ray cluster (``radiolens predict --engine ray``): the local engine's work, spread out.

Ray Data streams the archive through two stages, the way batch inference is usually run on Ray:

1. decoding on CPU tasks: ``predict.dataset.ImageItems`` (``io.formats.read_image`` + ``pipeline.prepare``),
   exactly what the local engine's decoding workers run, one task per batch, on any node with a free CPU;
2. inference in a pool of long-lived actors, each holding one model (ONNX Runtime or PyTorch, on a GPU when
   ``gpus_per_actor`` > 0): ``Scorer.score_batch``, the same pipeline call and row builder as the local loop.

Everything else stays on the driver (the machine that runs the command): discovery, the resume plan
(``Scorer.plan``, shared with the local engine) and every write to the results store. Rows come back to the
driver, which appends each finished batch as a Parquet part (or CSV lines) and merges at the end, so:

- a re-run skips finished files and retries error rows, whichever engine wrote them;
- a killed driver loses at most the batches not yet written; the next run resumes;
- an inference actor that dies (node lost, out of memory) is restarted by Ray and its batch run again
  (``max_restarts``/``max_task_retries``); since only the driver writes, and it writes a path at most once per
  run (the merge keeps one row per path too), a batch run twice is still written once.

Rows travel from the actors as pickled dicts, so NaN probabilities, empty decisions and booleans arrive as the
local engine builds them, and both engines write identical rows (``tests/predict/test_ray_engine.py``). The
order of rows follows completion, not the input order.

Ray is an optional extra (``radiolens[distributed]``), imported only when this engine runs. Every node needs
radiolens and the model file at the same path (or on shared storage); see docs/scale.md.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from radiolens.errors import ConfigError, MissingExtraError
from radiolens.models.info import BundleInfo
from radiolens.predict.dataset import ImageItems
from radiolens.predict.scoring import ScoreSummary, tally
from radiolens.predict.sources import ScoreItem
from radiolens.predict.spec import ScorerSpec

log = logging.getLogger("radiolens.predict")

__all__ = ["RayOptions", "ScoringActor", "decode_batch", "score_with_ray"]

#: How often Ray restarts a dead inference actor, and re-runs the batch it held, before the run fails.
ACTOR_RETRIES = 3


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run. ``address``: an existing cluster ("auto", "ray://head:10001", "head:6379");
    None joins the cluster this process is already connected to, else starts a local one on this machine."""

    address: str | None = None
    num_actors: int = 1  #: inference actors (model copies)
    gpus_per_actor: float = 0.0  #: > 0: actors run the forward pass on a GPU ("cuda")
    cpus_per_actor: float = 1.0  #: CPUs reserved per actor; its inference threads = max(1, floor of this)
    cpus_per_decode_task: float = 1.0  #: CPUs reserved per decoding task

    def __post_init__(self) -> None:
        if self.num_actors < 1:
            raise ConfigError("--num-actors must be at least 1")
        if self.gpus_per_actor < 0 or self.cpus_per_actor <= 0 or self.cpus_per_decode_task <= 0:
            raise ConfigError("--gpus-per-actor must be >= 0 and CPU shares > 0")


def import_ray() -> Any:
    """``ray`` with Ray Data, or :class:`MissingExtraError` naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        if (getattr(exc, "name", "") or "").split(".")[0] != "ray":
            raise
        raise MissingExtraError("ray", "distributed scoring (--engine ray)", extra="distributed") from None
    return ray


def decode_batch(batch: Any, info: BundleInfo) -> Any:
    """CPU stage of one batch (a pandas frame of ``index``, ``key``, ``path``) -> ``index``, ``key`` and the
    pickled ``predict.dataset.Decoded`` record of each file (an unreadable file is an error record)."""
    import pandas as pd

    items = ImageItems([ScoreItem(k, Path(p)) for k, p in zip(batch["key"], batch["path"], strict=True)], info)
    records = [replace(items[j], index=int(i)) for j, i in enumerate(batch["index"])]
    return pd.DataFrame({"index": batch["index"].to_numpy(), "key": batch["key"].to_numpy(),
                         "record": [pickle.dumps(r, protocol=5) for r in records]})


class ScoringActor:
    """Model stage: one scorer, built once per actor from the spec; each call scores one decoded batch."""

    def __init__(self, spec: ScorerSpec):
        self.scorer = spec.build()

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        records = [pickle.loads(b) for b in batch["record"]]
        keys = {int(i): str(k) for i, k in zip(batch["index"], batch["key"], strict=True)}
        rows = self.scorer.score_batch(keys, records)
        return pd.DataFrame({"key": [r["path"] for r in rows], "row": [pickle.dumps(r, protocol=5) for r in rows]})


def _connect(ray: Any, options: RayOptions) -> bool:
    """Join or start a cluster; True when this call started the connection (and so must end it)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if options.address is not None:
        kwargs["address"] = options.address
    elif not os.environ.get("RAY_ADDRESS"):  # Ray joins RAY_ADDRESS by itself; else a local cluster starts
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {options.address}: {exc}") from None
    return True


def score_with_ray(spec: ScorerSpec, items: list[ScoreItem], out: str | Path, options: RayOptions | None = None,
                   actor_class: type = ScoringActor) -> ScoreSummary:
    """Score ``items`` into the results at ``out`` on a Ray cluster; same rows and summary as ``Scorer.run``.

    ``actor_class``: the inference actor (a subclass of :class:`ScoringActor` can add per-node set-up)."""
    from tqdm import tqdm

    options = options or RayOptions()
    ray = import_ray()
    t0 = time.perf_counter()
    cfg = spec.config
    if cfg.mc_dropout_passes > 1 and options.gpus_per_actor > 0:
        raise ConfigError("MC-dropout runs on the CPU copy of the PyTorch model: use it without --gpus-per-actor")
    # The driver builds the scorer once too: the results' columns and the provenance check need the model's
    # label and sha256, and a model that cannot load fails here, before a cluster is asked for anything.
    local = spec.with_(threads=1).build()
    plan = local.plan(items, out)
    total = tally([])
    if plan.todo:
        started = _connect(ray, options)
        try:
            total = _stream(ray, spec, local.info, plan, options, actor_class, tqdm)
        finally:
            if started:
                ray.shutdown()
    plan.store.finalize()
    return local.summary(items, plan, total, time.perf_counter() - t0)


def _stream(ray: Any, spec: ScorerSpec, info: BundleInfo, plan: Any, options: RayOptions, actor_class: type,
            tqdm: Any) -> dict[str, int]:
    cfg = spec.config
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver's own bar counts written rows
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not an INFO line per plan and operator
    todo = plan.todo
    blocks = max(1, math.ceil(len(todo) / cfg.batch_size))  # one decoding task per batch
    ds = ray.data.from_items([{"index": i, "key": it.key, "path": str(it.path)} for i, it in enumerate(todo)],
                             override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"info": info}, batch_size=cfg.batch_size, batch_format="pandas",
                        num_cpus=options.cpus_per_decode_task)
    gpu = options.gpus_per_actor > 0
    actor_spec = spec.with_(threads=max(1, int(options.cpus_per_actor)), device="cuda" if gpu else "cpu")
    with warnings.catch_warnings():
        # Bounded retries (Ray Data's own default is unbounded: a batch that kills its actor every time would run
        # for ever) can only be passed as plain remote arguments, which Ray 2.60 flags as deprecated for 2.64;
        # the `distributed` extra pins 2.60.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        ds = ds.map_batches(actor_class, fn_constructor_kwargs={"spec": actor_spec}, batch_size=cfg.batch_size,
                            batch_format="pandas",
                            compute=ray.data.ActorPoolStrategy(size=min(options.num_actors, blocks)),
                            num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor if gpu else None,
                            max_restarts=ACTOR_RETRIES, max_task_retries=ACTOR_RETRIES)
    total = tally([])
    written: set[str] = set()
    with tqdm(total=len(todo), unit="img", desc="scoring (ray)", disable=not cfg.progress, smoothing=0.1) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            rows = [r for r in (pickle.loads(b) for b in batch["row"]) if r["path"] not in written]
            plan.store.append(rows)  # the driver is the only writer: a batch run twice is written once
            written.update(r["path"] for r in rows)
            total = tally(rows, total)
            bar.update(len(rows))
            bar.set_postfix(errors=total["errors"], refresh=False)
    return total

"""Scoring an archive: decode in worker processes, infer in batches, write each batch to disk at once.

The prediction itself is the pipeline's (:mod:`radiolens.pipeline`), the same path the service answers
with: its CPU stage (decode + prepare) runs in the decoding workers, its model stage (one batched forward
pass, gate, decision, triage) in the main process, and every row is written from a ``PredictionRecord``.
With ``workers`` > 0, worker processes (``predict.dataset``) decode and preprocess the next batches meanwhile, so
decoding (pydicom, JPEG) overlaps with inference; with 0 (the default on <= 2 cores, where there is no core to overlap
on: see ``predict.config``) the main process decodes each batch between forward passes.

With the input gate (header rules, plus the learned out-of-distribution score when the bundle carries a
monitoring profile) an image the gate refuses gets status ``out_of_distribution``: no probabilities,
prediction "not assessed", flagged for review with the reasons. Such rows are final, not retried.

``flagged`` is the record's review flag ("refer for human review", see ``pipeline.decision``); a positive
decision is in the ``decision_<class>`` columns. Heatmaps (when asked) are written for rows that are
positive or flagged.

Failures stay per file: an unreadable file, a forward pass that raises (the batch is retried image by image,
so only the images that fail on their own become error rows) and a heatmap that cannot be computed are all
error rows, and the run goes on. Error rows are retried by the next run.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from radiolens.errors import ConfigError, ModelError
from radiolens.models.backends import Backend
from radiolens.models.info import BundleInfo
from radiolens.monitor.gate import OK
from radiolens.pipeline.predictor import Failure, InferenceFailedError, Predictor
from radiolens.pipeline.record import PredictionRecord
from radiolens.predict.config import PredictConfig
from radiolens.predict.dataset import Decoded, ImageItems, decoded_batches, prepared
from radiolens.predict.heatmaps import write_heatmap
from radiolens.predict.results import ResultStore
from radiolens.predict.sources import ScoreItem

log = logging.getLogger("radiolens.predict")

__all__ = ["HeatmapFailedError", "InferenceFailedError", "RunPlan", "ScoreSummary", "Scorer", "record_row",
           "result_columns", "tally"]


class HeatmapFailedError(ModelError):
    """Scores are valid but the requested heatmap could not be computed (error-row code, retried on re-run)."""

    code = "heatmap_failed"


@dataclass
class ScoreSummary:
    total: int
    skipped_already_done: int
    scored: int
    errors: int
    flagged: int  # rows referred for human review (the not-assessed ones included)
    heatmaps: int
    seconds: float
    retried_errors: int = 0  # earlier error rows scored again in this run
    flag_rule: str = ""
    not_assessed: int = 0  # refused by the input gate (status out_of_distribution); not in ``scored``
    gate: str = "off"  # off | header rules | header rules + learned score

    @property
    def images_per_s(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s}


def result_columns(info: BundleInfo) -> list[str]:
    return (["path", "sop_uid_hash", "status", "error_code", "error_message"]
            + [f"p_{name}" for name in info.class_names]
            + [f"decision_{name}" for name in info.class_names]
            + ["prediction", "positive_classes", "flagged", "flag_reason", "review_rule", "review_spread",
               "ood_score", "heatmap", "model", "model_sha256"])


def empty_row(info: BundleInfo, key: str, status: str, model: str, model_sha256: str, **fields) -> dict:
    """A row with every column of ``result_columns``: NaN probabilities, no decision, nothing flagged."""
    row = {"path": key, "sop_uid_hash": "", "status": status, "error_code": "", "error_message": "",
           "prediction": "", "positive_classes": "", "flagged": False, "flag_reason": "", "review_rule": "",
           "review_spread": "", "ood_score": "", "heatmap": "", "model": model, "model_sha256": model_sha256}
    row.update({f"p_{n}": float("nan") for n in info.class_names})
    row.update({f"decision_{n}": None for n in info.class_names})
    row.update(fields)
    return row


def record_row(info: BundleInfo, key: str, record: PredictionRecord, model: str, model_sha256: str,
               **fields) -> dict:
    """The batch row of one record: the same probabilities, decisions, label, review and gate the service's
    JSON carries (``PredictionRecord.to_dict``), in columns. Non-probability columns are text (the Parquet
    schema types them string; CSV has no types)."""
    r = record.review
    row = empty_row(info, key, record.status, model, model_sha256, prediction=record.label,
                    positive_classes=json.dumps(list(record.positive_classes)) if record.assessed else "",
                    flagged=bool(r.flag), flag_reason=r.reason, review_rule=r.rule,
                    review_spread="" if r.spread is None else str(round(float(r.spread), 6)),
                    ood_score="" if record.gate.ood_score is None else str(round(float(record.gate.ood_score), 4)),
                    **fields)
    for s in record.scores:
        row[f"p_{s.name}"] = float(s.probability)
        row[f"decision_{s.name}"] = bool(s.positive)
    return row


def tally(rows: list[dict], into: dict[str, int] | None = None) -> dict[str, int]:
    """What rows count for the summary, read from the rows themselves (so an engine that only sees rows coming
    back from elsewhere counts them as the local loop does): ``scored`` = status ok (a failed heatmap made its
    row an error), ``refused`` = not assessed by the input gate, ``flagged`` = referred for review (error rows
    never are), ``heatmaps`` = heatmap files written."""
    n = dict(into) if into else dict(scored=0, errors=0, flagged=0, heatmaps=0, refused=0)
    for r in rows:
        status = r["status"]
        n["errors"] += status == "error"
        n["scored"] += status == OK
        n["refused"] += status not in ("error", OK)
        n["flagged"] += bool(r["flagged"])
        n["heatmaps"] += bool(r["heatmap"])
    return n


@dataclass
class RunPlan:
    """An opened results store and what is left to score in it."""

    store: ResultStore
    todo: list[ScoreItem]
    done: set[str]  # paths already finished before this run
    retried: int  # earlier error rows dropped to be scored again


class Scorer:
    def __init__(self, backend: Backend, config: PredictConfig | None = None,
                 cam_model: Any = None, heatmap_dir: str | Path | None = None,
                 gate: bool = True):
        self.backend = backend
        self.info: BundleInfo = backend.info
        self.config = config or PredictConfig()
        self.cam_model = cam_model
        self.heatmap_dir = Path(heatmap_dir) if heatmap_dir else None
        if self.config.mc_dropout_passes > 1 and cam_model is None and not hasattr(backend, "bundle"):
            raise ConfigError("MC-dropout needs the PyTorch model: with an .onnx model also give the .pt bundle "
                              "(--cam-model), or set --mc-dropout-passes 0")
        self.predictor = Predictor(backend, torch_model=cam_model, gate=gate,
                                   near_threshold_margin=self.config.near_threshold_margin,
                                   mc_dropout_passes=self.config.mc_dropout_passes)
        self.gate, self.gate_mode = self.predictor.gate, self.predictor.gate_mode
        self.model_label = self.predictor.provenance.label
        self.flag_rule = self.predictor.triage.rule_name

    # ------------------------------------------------------------------ rows
    def _wants_heatmap(self, record: PredictionRecord) -> bool:
        """Heatmaps were asked for and the case is positive (a finding: for multi-class, a predicted class
        other than the negative one) or referred for review."""
        if self.heatmap_dir is None or self.predictor.heatmap_method is None:
            return False
        finding = [c for c in record.positive_classes
                   if not (self.info.task == "multiclass" and c == self.info.negative_name)]
        return bool(finding) or record.review.flag

    def _error_row(self, key: str, rec: Decoded, code: str, message: str) -> dict:
        return empty_row(self.info, key, "error", self.model_label, self.backend.sha256,
                         sop_uid_hash=rec.sop_uid_hash, error_code=code, error_message=message)

    def score_batch(self, keys: Mapping[int, str] | Sequence[str], records: list[Decoded]) -> list[dict]:
        """Rows of one decoded batch in its order (errors in place); ``keys[record.index]`` is each row's path.

        Every engine (the local loop below, the Ray actors of ``predict.ray_engine``) turns a decoded batch into
        rows here, so a row does not depend on where it was computed."""
        ok = [r for r in records if r.tensor is not None]
        inputs = [prepared(r) for r in ok]
        results = dict(zip((r.index for r in ok), self.predictor.run(inputs), strict=True))
        ready = dict(zip((r.index for r in ok), inputs, strict=True))
        rows = []
        for rec in records:
            key = keys[rec.index]
            out = results.get(rec.index)
            if out is None:
                rows.append(self._error_row(key, rec, rec.error_code, rec.error_message))
                continue
            if isinstance(out, Failure):
                rows.append(self._error_row(key, rec, out.error_code, out.error_message))
                continue
            row = record_row(self.info, key, out, self.model_label, self.backend.sha256,
                             sop_uid_hash=rec.sop_uid_hash)
            if out.assessed and self._wants_heatmap(out):
                try:  # heatmaps for positive or flagged cases only: each costs a forward (Grad-CAM: + backward) pass
                    heat = self.predictor.cam(ready[rec.index], out.target_index)
                    row["heatmap"] = write_heatmap(heat, self.info, rec.tensor, self.heatmap_dir, key)
                except Exception as exc:  # scores stay in the row; status error so a re-run retries it
                    log.warning("heatmap failed (%s)", type(exc).__name__)
                    row.update(status="error", error_code=HeatmapFailedError.code,
                               error_message=f"scores are valid; heatmap failed ({type(exc).__name__})")
            rows.append(row)
        return rows

    def plan(self, items: list[ScoreItem], out: str | Path) -> RunPlan:
        """Open (or resume) the results at ``out`` and list what is left to score: finished paths are skipped,
        earlier error rows dropped for a retry (``retry_errors``), a path listed twice scored once. Every engine
        starts here, so resuming works the same whichever engine wrote the earlier rows."""
        cfg = self.config
        store = ResultStore(out, result_columns(self.info), overwrite=cfg.overwrite)
        store.check_provenance(self.model_label, self.backend.sha256)
        done = store.done_keys(include_errors=not cfg.retry_errors)
        retried = 0
        if cfg.retry_errors:
            retried = store.drop((store.done_keys() - done) & {it.key for it in items})
        todo, seen = [], set(done)
        for it in items:  # skip finished paths, and score a path listed twice (e.g. in a manifest) only once
            if it.key not in seen:
                seen.add(it.key)
                todo.append(it)
        return RunPlan(store, todo, done, retried)

    def summary(self, items: list[ScoreItem], plan: RunPlan, counts: dict[str, int], seconds: float) -> ScoreSummary:
        return ScoreSummary(total=len(items), skipped_already_done=sum(it.key in plan.done for it in items),
                            scored=counts["scored"], errors=counts["errors"], flagged=counts["flagged"],
                            heatmaps=counts["heatmaps"], seconds=seconds, retried_errors=plan.retried,
                            flag_rule=self.flag_rule, not_assessed=counts["refused"], gate=self.gate_mode)

    def run(self, items: list[ScoreItem], out: str | Path) -> ScoreSummary:
        from tqdm import tqdm

        t0 = time.perf_counter()
        cfg = self.config
        plan = self.plan(items, out)
        todo = plan.todo
        # Decode workers are forked. Collect garbage first: an unreachable object inherited by a worker (e.g. an
        # ONNX Runtime session a caller dropped) can be freed there by the child's garbage collector, and its
        # destructor waits for thread-pool threads that do not exist after fork: the worker hangs for ever.
        # (Without workers nothing is forked; the collection cost 0.13 s, 7 % of a 192-image run at 224 px.)
        if cfg.workers:
            gc.collect()
        loader = decoded_batches(ImageItems(todo, self.info), cfg.batch_size, cfg.workers, cfg.prefetch_batches)
        keys = [it.key for it in todo]
        total = tally([])
        with tqdm(total=len(todo), unit="img", desc="scoring", disable=not cfg.progress, smoothing=0.1) as bar:
            for records in loader:
                rows = self.score_batch(keys, records)
                plan.store.append(rows)  # flushed + fsync'ed: a crash after this line loses nothing of this batch
                total = tally(rows, total)
                bar.update(len(records))
                bar.set_postfix(errors=total["errors"], refresh=False)
        plan.store.finalize()
        return self.summary(items, plan, total, time.perf_counter() - t0)

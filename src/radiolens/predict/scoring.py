"""Scoring an archive: decode in worker processes, infer in batches, write each batch to disk at once.

The main process runs the model and writes results. With ``workers`` > 0, DataLoader workers decode and
preprocess the next batches meanwhile, so decoding (pydicom, JPEG) overlaps with inference; with 0 (the
default on <= 2 cores, where there is no core to overlap on: see ``predict.config``) the main process decodes
each batch between forward passes.

With an input gate (the service's: header rules, plus the learned out-of-distribution score when the bundle
carries a monitoring profile) an image the gate refuses gets status ``out_of_distribution``: no probabilities,
prediction "not assessed", flagged for review with the reasons. Such rows are final, not retried.

Failures stay per file: an unreadable file, a forward pass that raises (the batch is retried image by image,
so only the images that fail on their own become error rows) and a heatmap that cannot be computed are all
error rows, and the run goes on. Error rows are retried by the next run.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch.utils.data

from radiolens.errors import ModelError
from radiolens.models.backends import Backend, probabilities
from radiolens.models.bundle import BundleInfo
from radiolens.monitor.gate import OUT_OF_DISTRIBUTION, InputGate
from radiolens.predict.config import PredictConfig
from radiolens.predict.dataset import Decoded, ImageItems, collate, stack_ok
from radiolens.predict.heatmaps import write_heatmap
from radiolens.predict.results import ResultStore
from radiolens.predict.sources import ScoreItem

log = logging.getLogger("radiolens.predict")


class InferenceFailedError(ModelError):
    """The forward pass raised on this image (error-row code; the run continues)."""

    code = "inference_failed"


class HeatmapFailedError(ModelError):
    """Scores are valid but the requested heatmap could not be computed (error-row code, retried on re-run)."""

    code = "heatmap_failed"


@dataclass
class ScoreSummary:
    total: int
    skipped_already_done: int
    scored: int
    errors: int
    flagged: int
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
            + ["prediction", "flagged", "flag_reason", "ood_score", "heatmap", "model", "model_sha256"])


def batch_gate(backend: Backend, enabled: bool = True) -> tuple[InputGate | None, str]:
    """The service's input gate for this backend's model, and how much of it applies: header rules always,
    the learned score when the model has a monitoring profile (``radiolens monitor baseline``) and the
    backend can produce the embedding it scores."""
    if not enabled:
        return None, "off"
    from radiolens.monitor.config import GateConfig
    from radiolens.monitor.profile import MonitoringProfile

    raw = backend.info.monitoring
    profile = MonitoringProfile.from_dict(raw) if raw else None
    if profile is None:
        return InputGate(GateConfig()), "header rules (no monitoring profile in the model)"
    if not getattr(backend, "has_embedding", False):
        return InputGate(profile.gate), "header rules (this backend gives no embedding for the learned score)"
    return profile.input_gate(), "header rules + learned score"


def load_triage_rule(info: BundleInfo):
    """(TriageRule or None, rule name). A malformed stored rule falls back to the margin, and says so (as serve)."""
    if not info.triage:
        return None, "near_threshold_margin"
    from radiolens.explain.triage import TriageRule

    try:
        return TriageRule(**info.triage), "bundle_triage_rule"
    except Exception:
        log.warning("the bundle's triage rule is invalid; flagging by the near-threshold margin instead")
        return None, "near_threshold_margin(bundle triage invalid)"


def _positives(info: BundleInfo, probs: np.ndarray) -> tuple[str, list[int]]:
    """Label text and the outputs that are positive (multi-class: predicted class unless the negative one)."""
    if info.task == "multiclass":
        k = int(np.argmax(probs))
        return info.class_names[k], ([] if info.class_names[k] == info.negative_name else [k])
    thr = np.asarray(info.thresholds, dtype=np.float64)
    positive = [i for i, p in enumerate(probs) if p >= thr[i]]
    if info.task == "binary":
        return (info.class_names[0] if positive else info.negative_name), positive
    return ";".join(info.class_names[i] for i in positive), positive


def _review_index(info: BundleInfo, probs: np.ndarray) -> int:
    """The output that matters most for review (as serve's Predictor.review_index)."""
    if info.task == "multiclass":
        return int(np.argmax(probs))
    return int(np.argmin(np.abs(probs - np.asarray(info.thresholds))))


class Scorer:
    def __init__(self, backend: Backend, config: PredictConfig | None = None,
                 cam_model: torch.nn.Module | None = None, heatmap_dir: str | Path | None = None,
                 gate: bool = True):
        self.backend = backend
        self.gate, self.gate_mode = batch_gate(backend, gate)
        self._want_embedding = self.gate is not None and self.gate.density is not None
        self.info: BundleInfo = backend.info
        self.config = config or PredictConfig()
        self.cam_model = cam_model
        self.heatmap_dir = Path(heatmap_dir) if heatmap_dir else None
        model_name = f"{self.info.name}@{getattr(backend, 'kind', '?')}"
        precision = getattr(backend, "precision", "")
        self.model_label = f"{model_name}-{precision}" if precision else model_name
        self.triage_rule, self.flag_rule = load_triage_rule(self.info)

    # ------------------------------------------------------------------ decisions
    def flag(self, probs: np.ndarray) -> tuple[str, list[int], str]:
        """(label, outputs to explain, reason); an empty output list means not flagged.

        Flagged = positive, or referred for review: by the bundle's fitted TriageRule when present (the same
        rule serve applies), else within ``near_threshold_margin`` below a threshold.
        """
        info, margin = self.info, self.config.near_threshold_margin
        label, positive = _positives(info, probs)
        if positive:
            thr = info.thresholds
            return label, positive, "positive: " + "; ".join(
                f"{info.class_names[i]} {probs[i]:.2f}" + (f" >= threshold {thr[i]:.2f}"
                                                          if info.task != "multiclass" else "") for i in positive)
        if self.triage_rule is not None:
            try:
                rule = self.triage_rule
                p = probs if len(probs) == rule.n_outputs else probs[[_review_index(info, probs)]]
                refer, reason = rule.flag(p)
                return label, ([_review_index(info, probs)] if refer else []), (reason if refer else "")
            except Exception as exc:  # a broken rule must not stop the run: fall back, as serve does
                log.error("triage rule failed (%s); using the near-threshold margin", type(exc).__name__)
        if info.task == "multiclass":
            return label, [], ""
        thr = np.asarray(info.thresholds, dtype=np.float64)
        near = [i for i, p in enumerate(probs) if thr[i] - margin <= p < thr[i]]
        return label, near, ("near threshold: " + "; ".join(
            f"{info.class_names[i]} {probs[i]:.2f} within {margin:.2f} below {thr[i]:.2f}" for i in near)
            if near else "")

    # ------------------------------------------------------------------ inference
    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, embeddings or None) of one batch."""
        if self._want_embedding:
            logits, emb = self.backend.logits_and_embedding(batch)  # type: ignore[attr-defined]
        else:
            logits, emb = self.backend.predict_logits(batch), None
        return probabilities(self.info, logits), (None if emb is None else np.asarray(emb))

    def _infer(self, batch: np.ndarray, ok: list[Decoded]) -> tuple[list[Decoded], np.ndarray | None,
                                                                     np.ndarray | None, list[Decoded]]:
        """(records with probabilities, their probabilities, their embeddings, records the model failed on)."""
        try:
            return ok, *self._forward(batch), []
        except Exception as exc:
            log.warning("forward pass failed on a batch of %d (%s); retrying image by image", len(ok),
                        type(exc).__name__)
            if len(ok) == 1:
                return [], None, None, [self._failed(ok[0], InferenceFailedError.code, exc)]
        good, probs, embs, failed = [], [], [], []
        for rec, x in zip(ok, batch, strict=True):
            try:
                p, e = self._forward(x[None])
                probs.append(p[0])
                embs.append(None if e is None else e[0])
                good.append(rec)
            except Exception as exc:
                failed.append(self._failed(rec, InferenceFailedError.code, exc))
        emb = np.stack(embs) if embs and all(e is not None for e in embs) else None
        return good, (np.stack(probs) if probs else None), emb, failed

    @staticmethod
    def _failed(rec: Decoded, code: str, exc: Exception) -> Decoded:
        # The exception type only: messages of library errors can quote paths or header values.
        return Decoded(rec.index, None, code, f"{code.replace('_', ' ')} ({type(exc).__name__})",
                       rec.sop_uid_hash)

    def _row(self, key: str, rec: Decoded, status: str, probs: np.ndarray | None = None, **fields) -> dict:
        """One results row with every column of ``result_columns``; NaN probabilities when ``probs`` is None."""
        row = {"path": key, "sop_uid_hash": rec.sop_uid_hash, "status": status, "error_code": "",
               "error_message": "", "prediction": "", "flagged": False, "flag_reason": "", "ood_score": "",
               "heatmap": "", "model": self.model_label, "model_sha256": self.backend.sha256, **fields}
        values = [float("nan")] * len(self.info.class_names) if probs is None else [float(v) for v in probs]
        row.update({f"p_{n}": v for n, v in zip(self.info.class_names, values, strict=True)})
        return row

    def _rows(self, items: list[ScoreItem], ok: list[Decoded], probs: np.ndarray | None, embs: np.ndarray | None,
              failed: list[Decoded]) -> tuple[list[dict], int, int, int, int]:
        rows: list[tuple[int, dict]] = []
        flagged = heatmaps = heat_errors = refused = 0
        for j, (rec, p) in enumerate(zip(ok, probs if probs is not None else [], strict=True)):
            key = items[rec.index].key
            score = ""
            if self.gate is not None and rec.meta is not None:
                verdict = self.gate.check(rec.meta, rec.height, rec.width, None if embs is None else embs[j:j + 1])
                # text, as every non-probability column (the Parquet schema types it string; CSV has no types)
                score = "" if verdict.ood_score is None else str(round(float(verdict.ood_score), 4))
                if not verdict.passed:  # as the service: no probabilities for an image the model is not for
                    refused += 1
                    flagged += 1
                    rows.append((rec.index, self._row(key, rec, OUT_OF_DISTRIBUTION, prediction="not assessed",
                                                      flagged=True, flag_reason="not assessed: " + verdict.reason(),
                                                      ood_score=score)))
                    continue
            label, targets, reason = self.flag(p)
            is_flagged = bool(targets)
            row = self._row(key, rec, "ok", p, prediction=label, flagged=is_flagged, flag_reason=reason,
                            ood_score=score)
            if is_flagged:
                flagged += 1
                if self.cam_model is not None and self.heatmap_dir is not None:
                    target = max(targets, key=lambda i: p[i])
                    try:
                        row["heatmap"] = write_heatmap(self.cam_model, self.info, rec.tensor, target,
                                                       self.heatmap_dir, key)
                        heatmaps += 1
                    except Exception as exc:  # scores stay in the row; status error so a re-run retries it
                        log.warning("heatmap failed (%s)", type(exc).__name__)
                        row.update(status="error", error_code=HeatmapFailedError.code,
                                   error_message=f"scores are valid; heatmap failed ({type(exc).__name__})")
                        heat_errors += 1
            rows.append((rec.index, row))
        for rec in failed:
            rows.append((rec.index, self._row(items[rec.index].key, rec, "error", error_code=rec.error_code,
                                              error_message=rec.error_message)))
        rows.sort(key=lambda pair: pair[0])  # input order, errors in place
        return [row for _, row in rows], flagged, heatmaps, heat_errors, refused

    def run(self, items: list[ScoreItem], out: str | Path) -> ScoreSummary:
        from tqdm import tqdm

        t0 = time.perf_counter()
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
        # Decode workers are forked. Collect garbage first: an unreachable object inherited by a worker (e.g. an
        # ONNX Runtime session a caller dropped) can be freed there by the child's garbage collector, and its
        # destructor waits for thread-pool threads that do not exist after fork: the worker hangs for ever.
        # (Without workers nothing is forked; the collection cost 0.13 s, 7 % of a 192-image run at 224 px.)
        if cfg.workers:
            gc.collect()
        loader = torch.utils.data.DataLoader(
            ImageItems(todo, self.info), batch_size=cfg.batch_size, shuffle=False, collate_fn=collate,
            num_workers=cfg.workers if len(todo) > cfg.batch_size else min(cfg.workers, 1),
            prefetch_factor=cfg.prefetch_batches if cfg.workers else None)
        scored = errors = flagged = heatmaps = not_assessed = 0
        with tqdm(total=len(todo), unit="img", desc="scoring", disable=not cfg.progress, smoothing=0.1) as bar:
            for records in loader if todo else []:
                batch, ok = stack_ok(records)
                failed = [r for r in records if r.tensor is None]
                probs = embs = None
                if batch is not None:
                    ok, probs, embs, model_failed = self._infer(batch, ok)
                    failed += model_failed
                rows, f, h, heat_errors, refused = self._rows(todo, ok, probs, embs, failed)
                store.append(rows)  # flushed + fsync'ed: a crash after this line loses nothing of this batch
                scored += len(ok) - heat_errors - refused
                not_assessed += refused
                errors += len(failed) + heat_errors
                flagged, heatmaps = flagged + f, heatmaps + h
                bar.update(len(records))
                bar.set_postfix(errors=errors, refresh=False)
        store.finalize()
        return ScoreSummary(total=len(items), skipped_already_done=sum(it.key in done for it in items), scored=scored,
                            errors=errors, flagged=flagged, heatmaps=heatmaps, seconds=time.perf_counter() - t0,
                            retried_errors=retried, flag_rule=self.flag_rule, not_assessed=not_assessed,
                            gate=self.gate_mode)

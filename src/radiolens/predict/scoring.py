"""Scoring an archive: decode in worker processes, infer in batches, write each batch to disk at once.

The main process only runs the model and writes results; DataLoader workers decode and preprocess the next
batches meanwhile, so decoding (pydicom, JPEG) overlaps with inference instead of adding to it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch.utils.data

from radiolens.models.backends import Backend, probabilities
from radiolens.models.bundle import BundleInfo
from radiolens.predict.config import PredictConfig
from radiolens.predict.dataset import Decoded, ImageItems, collate, stack_ok
from radiolens.predict.heatmaps import write_heatmap
from radiolens.predict.results import ResultStore
from radiolens.predict.sources import ScoreItem


@dataclass
class ScoreSummary:
    total: int
    skipped_already_done: int
    scored: int
    errors: int
    flagged: int
    heatmaps: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s}


def result_columns(info: BundleInfo) -> list[str]:
    return (["path", "sop_uid_hash", "status", "error_code", "error_message"]
            + [f"p_{name}" for name in info.class_names]
            + ["prediction", "flagged", "heatmap", "model", "model_sha256"])


def _prediction(info: BundleInfo, probs: np.ndarray, margin: float) -> tuple[str, list[int]]:
    """Label text and the outputs worth a heatmap (empty list = not flagged).

    Binary / multi-label: outputs at or above their threshold, else those within ``margin`` below it.
    Multi-class: the predicted class unless it is the bundle's negative (normal) class.
    """
    if info.task == "multiclass":
        k = int(np.argmax(probs))
        return info.class_names[k], ([] if info.class_names[k] == info.negative_name else [k])
    thr = np.asarray(info.thresholds, dtype=np.float64)
    positive = [i for i, p in enumerate(probs) if p >= thr[i]]
    near = [i for i, p in enumerate(probs) if thr[i] - margin <= p < thr[i]]
    if info.task == "binary":
        label = info.class_names[0] if positive else info.negative_name
    else:
        label = ";".join(info.class_names[i] for i in positive)
    return label, positive or near


class Scorer:
    def __init__(self, backend: Backend, config: PredictConfig | None = None,
                 cam_model: torch.nn.Module | None = None, heatmap_dir: str | Path | None = None):
        self.backend = backend
        self.info: BundleInfo = backend.info
        self.config = config or PredictConfig()
        self.cam_model = cam_model
        self.heatmap_dir = Path(heatmap_dir) if heatmap_dir else None
        model_name = f"{self.info.name}@{getattr(backend, 'kind', '?')}"
        precision = getattr(backend, "precision", "")
        self.model_label = f"{model_name}-{precision}" if precision else model_name

    def _rows(self, items: list[ScoreItem], ok: list[Decoded], probs: np.ndarray | None,
              failed: list[Decoded]) -> tuple[list[dict], int, int]:
        rows: list[tuple[int, dict]] = []
        flagged = heatmaps = 0
        base = {"model": self.model_label, "model_sha256": self.backend.sha256}
        for rec, p in zip(ok, probs if probs is not None else [], strict=True):
            key = items[rec.index].key
            label, targets = _prediction(self.info, p, self.config.near_threshold_margin)
            is_flagged = bool(targets)
            heat = ""
            if is_flagged:
                flagged += 1
                if self.cam_model is not None and self.heatmap_dir is not None:
                    target = max(targets, key=lambda i: p[i])
                    heat = write_heatmap(self.cam_model, self.info, rec.tensor, target, self.heatmap_dir, key)
                    heatmaps += 1
            row = {"path": key, "sop_uid_hash": rec.sop_uid_hash, "status": "ok", "error_code": "",
                   "error_message": "", "prediction": label, "flagged": is_flagged, "heatmap": heat, **base}
            row.update({f"p_{n}": float(v) for n, v in zip(self.info.class_names, p, strict=True)})
            rows.append((rec.index, row))
        for rec in failed:
            row = {"path": items[rec.index].key, "sop_uid_hash": "", "status": "error",
                   "error_code": rec.error_code, "error_message": rec.error_message, "prediction": "",
                   "flagged": False, "heatmap": "", **base}
            row.update({f"p_{n}": float("nan") for n in self.info.class_names})
            rows.append((rec.index, row))
        rows.sort(key=lambda pair: pair[0])  # input order, errors in place
        return [row for _, row in rows], flagged, heatmaps

    def run(self, items: list[ScoreItem], out: str | Path) -> ScoreSummary:
        from tqdm import tqdm

        t0 = time.perf_counter()
        store = ResultStore(out, result_columns(self.info))
        done = store.done_keys()
        todo, seen = [], set(done)
        for it in items:  # skip finished paths, and score a path listed twice (e.g. in a manifest) only once
            if it.key not in seen:
                seen.add(it.key)
                todo.append(it)
        cfg = self.config
        loader = torch.utils.data.DataLoader(
            ImageItems(todo, self.info), batch_size=cfg.batch_size, shuffle=False, collate_fn=collate,
            num_workers=cfg.workers if len(todo) > cfg.batch_size else min(cfg.workers, 1),
            prefetch_factor=cfg.prefetch_batches if cfg.workers else None)
        scored = errors = flagged = heatmaps = 0
        with tqdm(total=len(todo), unit="img", desc="scoring", disable=not cfg.progress, smoothing=0.1) as bar:
            for records in loader if todo else []:
                batch, ok = stack_ok(records)
                failed = [r for r in records if r.tensor is None]
                probs = probabilities(self.info, self.backend.predict_logits(batch)) if batch is not None else None
                rows, f, h = self._rows(todo, ok, probs, failed)
                store.append(rows)  # flushed + fsync'ed: a crash after this line loses nothing of this batch
                scored, errors, flagged, heatmaps = scored + len(ok), errors + len(failed), flagged + f, heatmaps + h
                bar.update(len(records))
                bar.set_postfix(errors=errors, refresh=False)
        store.finalize()
        return ScoreSummary(total=len(items), skipped_already_done=sum(it.key in done for it in items), scored=scored,
                            errors=errors, flagged=flagged, heatmaps=heatmaps, seconds=time.perf_counter() - t0)

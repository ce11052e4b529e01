"""The one prediction path: prepared images -> batched forward pass -> input gate -> decision and triage ->
:class:`~radiolens.pipeline.record.PredictionRecord`, on any :mod:`radiolens.models.backends` backend.

Two stages, so a driver can put them where they run best:

- :func:`prepare` (CPU): a decoded :class:`~radiolens.io.image.RadioImage` -> :class:`Prepared` (the model
  input tensor and the header facts the gate reads). It needs only the ``BundleInfo`` and its result is
  picklable, so batch scoring runs it in DataLoader worker processes.
- :meth:`Predictor.run` (model): a BATCH of prepared inputs -> one record per input, in one forward pass
  (batch scoring speed). When the batch forward raises, the batch is retried image by image, so only the
  images that fail on their own come back as :class:`Failure`.

The input gate (:mod:`radiolens.monitor`): header rules always; the learned out-of-distribution score when
the bundle carries a monitoring profile and an embedding is at hand (from the backend, or from the PyTorch
model when the backend gives none). MC-dropout passes and Grad-CAM heatmaps need the PyTorch model; they run
on a per-thread copy of it, because Grad-CAM registers hooks and MC-dropout switches dropout on, and neither
may touch the model other threads are predicting with. PyTorch is imported only for those extras, so an ONNX
backend runs this path in an installation without torch (``radiolens[serve]``).

Without a PyTorch model, heatmaps come from the export's CAM-layer feature maps
(:mod:`radiolens.models.feature_cam`: the class activation map, equal to Grad-CAM for global-average-pooling +
linear heads, else EigenCAM), and there is no MC-dropout spread: the review flag is the bundle's stored rule
on the probabilities alone (its spread limit, if it has one, is not applied). :attr:`Predictor.heatmap_method`
and :attr:`Predictor.uncertainty_method` say which is in force.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from radiolens.errors import ModelError, require_torch
from radiolens.io.image import ImageMeta, RadioImage
from radiolens.models.backends import Backend, TorchBackend, preprocess, probabilities
from radiolens.models.feature_cam import CAM
from radiolens.models.info import BundleInfo
from radiolens.monitor.config import GateConfig
from radiolens.monitor.gate import InputGate
from radiolens.monitor.profile import MonitoringProfile
from radiolens.pipeline.decision import Triage, decide
from radiolens.pipeline.record import ClassScore, GateOutcome, Heatmap, PredictionRecord, Provenance

if TYPE_CHECKING:
    import torch

    from radiolens.models.feature_cam import CamHead

log = logging.getLogger("radiolens.pipeline")


class InferenceFailedError(ModelError):
    """The forward pass raised on this image (batch scoring writes an error row and goes on)."""

    code = "inference_failed"


@dataclass
class Prepared:
    """One image ready for the model stage: picklable, no model needed to make it."""

    tensor: np.ndarray  # (1, H, W) float32, normalised as the bundle says
    meta: ImageMeta  # what the input gate's header rules read (kept in memory, never written out)
    height: int
    width: int


@dataclass
class Failure:
    """The model stage could not predict this input (only the exception type: messages may quote data)."""

    error_code: str
    error_message: str


def prepare(info: BundleInfo, image: RadioImage) -> Prepared:
    """CPU stage: decoded image -> model input tensor + header facts."""
    return Prepared(preprocess(info, image), image.meta, int(image.height), int(image.width))


def provenance_of(backend: Backend, bundle_sha256: str | None = None) -> Provenance:
    """Model and backend provenance. ``bundle_sha256``: the .pt the backend runs (an ONNX file's recorded
    source when not given)."""
    info = backend.info
    kind = str(getattr(backend, "kind", "?"))
    if isinstance(backend, TorchBackend):
        return Provenance(info.name, str(info.version), backend.sha256, info.arch, info.task, info.operating_point,
                          kind)
    source = bundle_sha256 or str(getattr(backend, "source_sha256", ""))
    return Provenance(info.name, str(info.version), source, info.arch, info.task, info.operating_point, kind,
                      backend.sha256, str(getattr(backend, "precision", "")))


class Predictor:
    """Records for prepared images. ``torch_model``: the PyTorch model behind the backend (taken from a
    :class:`TorchBackend`; give it for an ONNX backend to get MC-dropout, heatmaps, or the embedding an
    export lacks). ``gate_config``: the service's configured gate (default: the profile's, else defaults)."""

    def __init__(self, backend: Backend, *, torch_model: torch.nn.Module | None = None, gate: bool = True,
                 gate_config: GateConfig | None = None, near_threshold_margin: float = 0.1,
                 mc_dropout_passes: int = 0, cam_method: str = "gradcam", bundle_sha256: str | None = None):
        self.backend = backend
        self.info: BundleInfo = backend.info
        if torch_model is None and isinstance(backend, TorchBackend):
            torch_model = backend.bundle.model
        self.torch_model = torch_model
        self.mc_passes = int(mc_dropout_passes)
        self.cam_method = cam_method
        self.triage = Triage(self.info, near_threshold_margin)
        self.provenance = provenance_of(backend, bundle_sha256)
        self._local = threading.local()
        self._tap = None
        self.profile = MonitoringProfile.from_dict(self.info.monitoring) if self.info.monitoring else None
        self.gate, self.gate_mode, self._embedding_from = self._gate(gate, gate_config)

    def _gate(self, enabled: bool, cfg: GateConfig | None) -> tuple[InputGate | None, str, str]:
        """(gate, mode, where the embedding comes from: "backend" | "torch" | "")."""
        if not enabled:
            return None, "off", ""
        profile = self.profile
        if profile is None:
            return InputGate(cfg or GateConfig()), "header rules (no monitoring profile in the model)", ""
        cfg = cfg or profile.gate
        if getattr(self.backend, "has_embedding", False):
            return InputGate(cfg, profile.density, profile.observed), "header rules + learned score", "backend"
        if self.torch_model is not None:
            from radiolens.models.embedding import EmbeddingTap

            try:
                self._tap = EmbeddingTap(self.torch_model, self.info.num_outputs, self.info.arch)
                log.warning("the backend gives no embedding: the input gate reads it with PyTorch (one extra "
                            "forward pass); re-export to avoid it")
                return (InputGate(cfg, profile.density, profile.observed),
                        "header rules + learned score (embedding from PyTorch)", "torch")
            except ModelError:
                pass
        return (InputGate(cfg, None, profile.observed),
                "header rules (this backend gives no embedding for the learned score)", "")

    # ------------------------------------------------------------------ model stage
    def _forward(self, batch: np.ndarray, features: bool = False
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(probabilities, embeddings or None, CAM-layer features or None) of one (N, 1, H, W) batch, from one
        forward pass of the backend (plus the PyTorch embedding pass when the backend gives no embedding)."""
        from_backend = self._embedding_from == "backend"
        feats = None
        if features:
            logits, emb, feats = self.backend.outputs(batch, embedding=from_backend, features=True)  # type: ignore[attr-defined]
        elif from_backend:
            logits, emb = self.backend.logits_and_embedding(batch)  # type: ignore[attr-defined]
        else:
            logits, emb = self.backend.predict_logits(batch), None
        if self._embedding_from == "torch":
            import torch

            emb = self._tap(torch.from_numpy(np.ascontiguousarray(batch)))[1].numpy()
        return (probabilities(self.info, logits), None if emb is None else np.asarray(emb),
                None if feats is None else np.asarray(feats))

    def run(self, items: Sequence[Prepared], heatmaps: Sequence[bool] | bool = False
            ) -> list[PredictionRecord | Failure]:
        """One record (or Failure) per prepared input, in order; one forward pass for the whole batch.

        ``heatmaps`` (one flag per input, or one for all): attach the CAM of each flagged input's target
        output to its record when it is assessed. With a feature heatmap in force (:attr:`heatmap_method`
        "cam" or "eigencam") the maps come from the feature maps of the same forward pass; otherwise
        Grad-CAM (or the configured method) runs per image. An image whose gate, review or heatmap raises
        is that input's Failure only: its batch neighbours are not affected.
        """
        out: list[PredictionRecord | Failure] = []
        for o in self._run(items, heatmaps):
            if isinstance(o, Exception):
                code = InferenceFailedError.code
                o = Failure(code, f"{code.replace('_', ' ')} ({type(o).__name__})")
            out.append(o)
        return out

    def _run(self, items: Sequence[Prepared], heatmaps: Sequence[bool] | bool
             ) -> list[PredictionRecord | Failure | Exception]:
        if not items:
            return []
        want = [bool(heatmaps)] * len(items) if isinstance(heatmaps, bool) else [bool(h) for h in heatmaps]
        if len(want) != len(items):
            raise ValueError("one heatmap flag per input is needed")
        features = any(want) and self.feature_head is not None
        try:
            batch = np.stack([p.tensor for p in items]).astype(np.float32, copy=False)
            probs, embs, feats = self._forward(batch, features)
            outs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | Failure] = [
                (probs[i], None if embs is None else embs[i], None if feats is None else feats[i])
                for i in range(len(items))]
        except Exception as exc:
            if len(items) > 1:
                log.warning("forward pass failed on a batch of %d (%s); retrying image by image", len(items),
                            type(exc).__name__)
            outs = [self._one(np.asarray(p.tensor, dtype=np.float32), exc if len(items) == 1 else None, features)
                    for p in items]
        results: list[PredictionRecord | Failure | Exception] = []
        for item, out, heat in zip(items, outs, want, strict=True):
            if isinstance(out, Failure):
                results.append(out)
                continue
            prob, emb, feat = out
            try:
                rec = self.record(item, prob, emb)
                results.append(self._attach_heatmap(rec, item, feat) if heat else rec)
            except Exception as exc:  # this image's own error, kept for its caller
                if len(items) > 1:
                    log.warning("prediction failed on one image of a batch of %d (%s)", len(items),
                                type(exc).__name__)
                results.append(exc)
        return results

    def _one(self, x: np.ndarray, known: Exception | None, features: bool = False
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | Failure:
        try:
            if known is not None:
                raise known
            p, e, f = self._forward(x[None], features)
            return p[0], None if e is None else e[0], None if f is None else f[0]
        except Exception as exc:
            code = InferenceFailedError.code
            return Failure(code, f"{code.replace('_', ' ')} ({type(exc).__name__})")

    def predict(self, item: Prepared, heatmap: bool = False) -> PredictionRecord:
        """One image (the service's path without micro-batching): :meth:`predict_batch` of one; a failed
        forward pass raises InferenceFailedError, a failed gate, review or heatmap its own error."""
        out = self.predict_batch([item], [heatmap])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def predict_batch(self, items: Sequence[Prepared], heatmaps: Sequence[bool] | bool = False,
                      ) -> list[PredictionRecord | Exception]:
        """The service's batched entry point (micro-batching): one forward pass for the batch, and per image
        its record or the error its own request answers with (an InferenceFailedError when the forward pass
        fails on it, else the error its gate, review or heatmap raised). Never raises for one image, so one
        image cannot fail its batch neighbours."""
        return [InferenceFailedError(f"the model could not run on this image: {o.error_message}")
                if isinstance(o, Failure) else o for o in self._run(items, heatmaps)]

    def record(self, item: Prepared, probs: np.ndarray, embedding: np.ndarray | None) -> PredictionRecord:
        """Gate, decision and review of one image whose probabilities (and embedding) are computed."""
        info = self.info
        probs = np.asarray(probs, dtype=np.float64)
        gate = GateOutcome(True, mode=self.gate_mode)
        if self.gate is not None:
            res = self.gate.check(item.meta, item.height, item.width,
                                  None if embedding is None else np.atleast_2d(embedding))
            gate = GateOutcome(res.passed, list(res.reasons), res.ood_score, res.threshold, res.learned,
                               self.gate_mode)
        d = decide(info, probs)
        scores = [ClassScore(n, float(p), float(t), bool(pos))
                  for n, p, t, pos in zip(info.class_names, probs, info.thresholds, d.positives, strict=True)]
        spreads = self.mc_spread(item) if gate.passed and self.mc_passes > 1 else None
        rec = PredictionRecord("ok", scores, d.label, d.positive_classes, self.triage.review(probs, spreads), gate,
                               self.provenance, d.target_index, embedding=embedding, raw_probabilities=probs)
        return rec if gate.passed else rec.withheld(gate.status, gate.reason())

    # ------------------------------------------------------------------ heatmaps and uncertainty
    @property
    def has_torch_model(self) -> bool:
        """Whether MC-dropout and Grad-CAM can run (they need the PyTorch model; an ONNX-only predictor has none)."""
        return self.torch_model is not None

    @property
    def feature_head(self) -> CamHead | None:
        """The feature heatmap in force, when heatmaps come from the forward pass's CAM-layer feature maps
        (no backward pass): with a PyTorch model, only a class activation map where it equals the configured
        Grad-CAM (global average pooling + linear heads; other heads and methods keep pytorch-grad-cam);
        without one, the export's record ("cam" or "eigencam"). None: heatmaps need the PyTorch model (or
        there are none). The backend finds it once (a PyTorch model is checked on first use)."""
        head = getattr(self.backend, "cam_head", None)
        if head is None or self.torch_model is None:
            return head
        return head if head.method == CAM and self.cam_method == "gradcam" else None

    @property
    def heatmap_method(self) -> str | None:
        """The heatmap this predictor draws: the feature heatmap in force ("cam", equal to Grad-CAM for its
        head, or "eigencam": :attr:`feature_head`), else the configured CAM method on the PyTorch model, else
        None (an export without feature output: no heatmaps)."""
        head = self.feature_head
        if head is not None:
            return head.method
        return self.cam_method if self.torch_model is not None else None

    @property
    def uncertainty_method(self) -> str:
        """"mc-dropout" when the review flag sees an MC-dropout spread, else "none" (the stored rule, or the
        near-threshold fallback, on the probabilities alone)."""
        return "mc-dropout" if self.mc_passes > 1 and self.torch_model is not None else "none"

    @property
    def review_basis(self) -> str:
        """In plain words, what the review flag is computed from."""
        rule = self.triage.rule
        what = ("the bundle's stored triage rule" if rule is not None else
                f"the near-threshold rule (margin {self.triage.margin:.2f}; the bundle stores no triage rule)")
        if self.uncertainty_method == "mc-dropout":
            return f"{what}, with the MC-dropout spread of {self.mc_passes} passes"
        limit = getattr(rule, "max_spread", None)
        if limit is not None:
            return (f"{what} on the probabilities only: its MC-dropout spread limit ({limit:g}) is not applied "
                    "(MC-dropout needs the PyTorch model)")
        return f"{what} on the probabilities"

    def _own_model(self) -> Any:
        if self.torch_model is None:
            raise ModelError("MC-dropout and heatmaps need the PyTorch model (give the .pt bundle)")
        require_torch("MC-dropout and heatmaps")
        model = getattr(self._local, "model", None)
        if model is None:
            model = copy.deepcopy(self.torch_model).eval()
            self._local.model = model
        return model

    def mc_spread(self, item: Prepared) -> np.ndarray:
        """Per output, the std of the calibrated probability over ``mc_passes`` passes with dropout on (one
        batch); zeros for a model without dropout."""
        from radiolens.explain.uncertainty import dropout_mode, has_dropout

        model = self._own_model()
        import torch

        if not has_dropout(model):  # dropout layers, or timm's functional head dropout (drop_rate)
            return np.zeros(self.info.num_outputs)
        x = torch.from_numpy(np.ascontiguousarray(item.tensor, dtype=np.float32))[None]
        try:
            dropout_mode(model)  # the explain layer's definition: dropout on, BatchNorm statistics frozen
            with torch.inference_mode():
                logits = model(x.expand(self.mc_passes, *x.shape[1:]))
        finally:
            model.eval()
        return np.std(probabilities(self.info, logits.float().numpy()).astype(np.float64), axis=0)

    def cam(self, item: Prepared, target_index: int) -> np.ndarray:
        """(H, W) CAM in [0, 1] at the model input size for one output: from the feature maps of a forward pass
        when a feature heatmap is in force (:attr:`feature_head`), else Grad-CAM (or the configured method) on
        the PyTorch model."""
        if self.feature_head is not None:
            return self.feature_cam(item, target_index)
        from radiolens.explain.cam import compute_cam

        model = self._own_model()
        import torch

        x = torch.from_numpy(np.ascontiguousarray(item.tensor, dtype=np.float32))[None]
        return compute_cam(model, x, target_index, method=self.cam_method, arch=self.info.arch)

    def feature_cam(self, item: Prepared, target_index: int, features: np.ndarray | None = None) -> np.ndarray:
        """(H, W) heatmap in [0, 1] from the backend's CAM-layer feature maps (no gradients): ``features`` when
        the forward pass already gave them, else one forward pass for them."""
        from radiolens.models.feature_cam import heatmap_from_features

        head = getattr(self.backend, "cam_head", None)
        if head is None:
            raise ModelError("this model gives no feature maps for heatmaps: serve the .pt bundle or export again")
        if features is None:
            _, _, feats = self.backend.outputs(np.ascontiguousarray(item.tensor, dtype=np.float32)[None],  # type: ignore[attr-defined]
                                               features=True)
            features = feats[0]
        return heatmap_from_features(head, features, target_index, self.info.input_size)

    def with_heatmap(self, record: PredictionRecord, item: Prepared) -> PredictionRecord:
        """The record with the CAM of its target output (a record not assessed gets none)."""
        return self._attach_heatmap(record, item, None)

    def _attach_heatmap(self, record: PredictionRecord, item: Prepared, features: np.ndarray | None
                        ) -> PredictionRecord:
        if not record.assessed:
            return record
        k = record.target_index
        heat = self.feature_cam(item, k, features) if self.feature_head is not None else self.cam(item, k)
        return record.with_heatmap(Heatmap(heat, self.info.class_names[k], k))

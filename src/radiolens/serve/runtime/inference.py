"""Model inference for the service: calibrated probabilities, decisions, review flag and heatmap.

Runs in worker threads (never on the event loop). Plain forward passes share one model (eval mode,
no state), but Grad-CAM registers hooks on the model it explains, so each worker thread explains with
its own copy of the model.
"""

from __future__ import annotations

import copy
import io
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from radiolens.errors import ModelError
from radiolens.io.image import RadioImage
from radiolens.models.bundle import ModelBundle
from radiolens.models.embedding import EmbeddingTap

log = logging.getLogger("radiolens.serve")


@dataclass
class Inference:
    probabilities: np.ndarray  # (outputs,) calibrated
    decisions: np.ndarray  # (outputs,) bool at the operating thresholds
    target_index: int  # the output the heatmap explains
    review_flag: bool
    review_reason: str
    review_rule: str
    spread: float | None  # MC-dropout std of the reviewed output's probability (None: not computed)
    heatmap: np.ndarray | None  # (h, w) in [0, 1] at the model input size
    embedding: np.ndarray | None = None  # (d,) input of the classifier layer, for the input gate and drift


class Predictor:
    def __init__(self, bundle: ModelBundle, cam_method: str = "gradcam", near_threshold_margin: float = 0.1,
                 mc_dropout_passes: int = 0, onnx: Any = None):
        self.bundle = bundle
        self.onnx = onnx  # an OnnxBackend exported from ``bundle``: the plain forward pass runs there
        self.mc_passes = mc_dropout_passes
        self.cam_method = cam_method
        self.margin = near_threshold_margin
        self._local = threading.local()
        self.triage_rule, self.triage_source = _load_triage(bundle)
        try:  # logits and the embedding in one forward pass; every registry model has a final linear layer
            self.tap: EmbeddingTap | None = EmbeddingTap(bundle.model, bundle.info.num_outputs)
        except ModelError:
            self.tap = None

    # ------------------------------------------------------------------ decision support
    def decision_label(self, decisions: np.ndarray, probs: np.ndarray) -> tuple[str, list[str]]:
        info = self.bundle.info
        positives = [n for n, d in zip(info.class_names, decisions, strict=True) if d]
        if info.task == "binary":
            return (info.class_names[0] if decisions[0] else info.negative_name), positives
        if info.task == "multiclass":
            return info.class_names[int(np.argmax(probs))], positives
        return (", ".join(positives) if positives else "no finding above threshold"), positives

    def review_index(self, probs: np.ndarray) -> int:
        """The output that matters most for review: the top class, or the one closest to its threshold."""
        info = self.bundle.info
        if info.task == "multiclass":
            return int(np.argmax(probs))
        return int(np.argmin(np.abs(probs - np.asarray(info.thresholds))))

    def review(self, probs: np.ndarray, spread: np.ndarray | float | None = None) -> tuple[bool, str, str]:
        """(flag, reason, rule). Uses the bundle's TriageRule when the explain layer provides one.

        ``spread`` is the MC-dropout std per output (or one value for a one-output model); the rule sees every
        output's probability and spread, as it was fitted (``radiolens triage-fit``)."""
        if self.triage_rule is not None:
            try:
                spreads = None if spread is None else np.broadcast_to(np.asarray(spread, dtype=float), probs.shape)
                flag, reason = self.triage_rule.flag(probs, spreads)
                return bool(flag), str(reason), self.triage_source
            except Exception as exc:  # a broken rule must not take predictions down; say so in the response
                log.error("triage rule failed (%s); using the near-threshold fallback", type(exc).__name__)
                fallback = self.triage_source + "_failed->near_threshold_fallback"
                return (*self._near_threshold(probs)[:2], fallback)
        return self._near_threshold(probs)

    def _near_threshold(self, probs: np.ndarray) -> tuple[bool, str, str]:
        info = self.bundle.info
        # Fallback: flag when a probability sits close to its operating threshold.
        thr = np.asarray(info.thresholds, dtype=float)
        dist = np.abs(probs - thr)
        near = np.flatnonzero(dist < self.margin)
        if info.task == "multiclass":
            top2 = np.sort(probs)[-2:]
            if top2[1] - top2[0] < self.margin:
                return True, f"top two classes within {self.margin:.2f} of each other", self.triage_source
            return False, "confident top class", self.triage_source
        if near.size:
            i = int(near[np.argmin(dist[near])])
            return (True, f"{info.class_names[i]} probability {probs[i]:.2f} is within {self.margin:.2f} of the "
                    f"operating threshold {thr[i]:.2f}", self.triage_source)
        return False, f"all probabilities at least {self.margin:.2f} from their thresholds", self.triage_source

    # ------------------------------------------------------------------ inference
    def run(self, image: RadioImage, heatmap: bool) -> Inference:
        x = self.bundle.preprocess(image)[None]
        embedding = None
        if self.onnx is not None:
            logits, emb = self.onnx.logits_and_embedding(x.numpy())
            if emb is None and self.tap is not None:  # an export without the embedding output
                emb = self.tap(x)[1].numpy()
            probs = self.bundle.probabilities_from_logits(logits)[0].astype(float)
            embedding = None if emb is None else np.asarray(emb[0])
        elif self.tap is not None:
            logits, emb = self.tap(x)
            probs = self.bundle.probabilities_from_logits(logits)[0].astype(float)
            embedding = emb[0].numpy()
        else:
            probs = self.bundle.predict_batch(x)[0].astype(float)
        decisions = self.bundle.decisions(probs)[0]
        info = self.bundle.info
        target = 0 if info.task == "binary" else int(np.argmax(probs))
        spreads = self._mc_spread(x) if self.mc_passes > 1 else None
        flag, reason, rule = self.review(probs, spreads)
        spread = None if spreads is None else float(spreads[self.review_index(probs)])
        heat = self._cam(x, target) if heatmap else None
        return Inference(probs, decisions, target, flag, reason, rule, spread, heat, embedding)

    def heatmap(self, image: RadioImage, target: int) -> np.ndarray:
        """The CAM of ``target`` for an image already run (separate, so a withheld output costs no CAM)."""
        return self._cam(self.bundle.preprocess(image)[None], target)

    def _own_model(self):
        # Per-thread copy: Grad-CAM hooks and train-mode dropout must not touch the shared model.
        model = getattr(self._local, "model", None)
        if model is None:
            model = copy.deepcopy(self.bundle.model).eval()
            self._local.model = model
        return model

    def _mc_spread(self, x) -> np.ndarray:
        """MC-dropout: per output, the std of the calibrated probability over ``mc_passes`` passes with dropout
        on (one batch); zeros for a model without dropout."""
        import torch

        from radiolens.explain.uncertainty import dropout_mode, has_dropout

        model = self._own_model()
        if not has_dropout(model):  # dropout layers, or timm's functional head dropout (drop_rate)
            return np.zeros(self.bundle.info.num_outputs)
        try:
            dropout_mode(model)  # the explain layer's definition: dropout on, BatchNorm statistics frozen
            with torch.inference_mode():
                logits = model(x.expand(self.mc_passes, *x.shape[1:]))
        finally:
            model.eval()
        probs = self.bundle.probabilities_from_logits(logits)
        return np.std(probs, axis=0)

    def _cam(self, x, target: int) -> np.ndarray:
        from radiolens.explain.cam import compute_cam

        return compute_cam(self._own_model(), x.clone(), target, method=self.cam_method,
                           arch=self.bundle.info.arch)


def _load_triage(bundle: ModelBundle) -> tuple[Any, str]:
    try:
        from radiolens.explain.triage import TriageRule
    except ImportError:
        return None, "near_threshold_fallback"
    if not bundle.info.triage:
        return None, "near_threshold_fallback"
    try:
        return TriageRule(**bundle.info.triage), "bundle_triage_rule"
    except Exception:  # a malformed triage dict must not stop the service: use the fallback and say so
        return None, "near_threshold_fallback(bundle triage invalid)"


def display_png(pixels: np.ndarray, max_side: int) -> tuple[bytes, tuple[int, int]]:
    """De-identified display copy: 8-bit grey PNG of the already-VOI-windowed pixels, no metadata."""
    arr = np.clip(pixels if pixels.ndim == 2 else pixels[0], 0, 1)
    im = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8), mode="L")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue(), im.size


def heatmap_png(heat: np.ndarray, size: tuple[int, int], max_alpha: float = 0.6) -> bytes:
    """RGBA overlay at the display size: a perceptual colour map, transparency following the heat."""
    from matplotlib import colormaps

    w, h = size
    hm = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L").resize((w, h),
                                                                                         Image.Resampling.BILINEAR)
    v = np.asarray(hm, dtype=np.float32) / 255.0
    rgba = colormaps["inferno"](v)
    rgba[..., 3] = np.clip(v, 0, 1) * max_alpha
    im = Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), mode="RGBA")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()

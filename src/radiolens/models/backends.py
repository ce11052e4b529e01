"""Interchangeable inference engines behind one small interface, so serve and batch scoring pick
PyTorch or ONNX Runtime by a flag instead of by code paths.

A backend takes already-preprocessed batches (N, 1, H, W) float32, normalised as ``info`` says, and returns
raw logits; probabilities, calibration and thresholds stay defined once, by the BundleInfo.

PyTorch is imported only by :class:`TorchBackend` and for ``.pt`` files: the ONNX path (``OnnxBackend``,
:func:`preprocess`, :func:`probabilities`) runs in a ``radiolens[serve]`` installation, which has no torch.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from radiolens.data.model_input import to_model_array
from radiolens.errors import ModelError, require_torch
from radiolens.io.image import RadioImage
from radiolens.models.info import BundleInfo

if TYPE_CHECKING:
    from radiolens.models.bundle import ModelBundle
    from radiolens.models.feature_cam import CamHead

BackendKind = Literal["torch", "torchscript", "onnx"]


def probabilities(info: BundleInfo, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
    """Same maths as ``ModelBundle.probabilities_from_logits``, usable without the torch model."""
    z = np.asarray(logits, dtype=np.float64)
    if calibrated:
        z = z / float(info.temperature)
    if info.task == "multiclass":
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def preprocess(info: BundleInfo, image: RadioImage | np.ndarray) -> np.ndarray:
    """One image -> (1, H, W) float32 normalised array (the [0, 1] contract is validated)."""
    pixels = image.first_frame() if isinstance(image, RadioImage) else image
    return to_model_array(pixels, info.input_size, info.mean, info.std)


@runtime_checkable
class Backend(Protocol):
    kind: str
    info: BundleInfo
    sha256: str

    def predict_logits(self, batch: np.ndarray) -> np.ndarray: ...


class _Common:
    info: BundleInfo

    def predict_proba(self, batch: np.ndarray, calibrated: bool = True) -> np.ndarray:
        return probabilities(self.info, self.predict_logits(batch), calibrated)  # type: ignore[attr-defined]

    def preprocess(self, image: RadioImage | np.ndarray) -> np.ndarray:
        return preprocess(self.info, image)

    @staticmethod
    def _check(batch: np.ndarray, info: BundleInfo) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1] != 1:
            raise ModelError(f"expected a (N, 1, H, W) batch, got shape {tuple(batch.shape)}")
        if tuple(batch.shape[2:]) != tuple(info.input_size):
            raise ModelError(f"expected {tuple(info.input_size)} images, got {tuple(batch.shape[2:])}")
        return np.ascontiguousarray(batch, dtype=np.float32)


class TorchBackend(_Common):
    """Eager PyTorch (``kind="torch"``), or a traced+frozen TorchScript graph (``kind="torchscript"``)."""

    def __init__(self, bundle: ModelBundle, torchscript: bool = False, device: str = "cpu"):
        torch = require_torch("the PyTorch backend")
        self.bundle = bundle
        self.info = bundle.info
        self.sha256 = bundle.sha256
        self.source_sha256 = bundle.sha256  # the .pt is its own source (cf. OnnxBackend)
        self.kind = "torchscript" if torchscript else "torch"
        self.device = _checked_device(device)
        self.model = bundle.model.eval()
        if self.device != "cpu":
            if not torch.cuda.is_available():
                raise ModelError(f"device '{device}' asked for, but PyTorch sees no CUDA GPU here")
            # a copy on the GPU: bundle.model stays on the CPU for Grad-CAM and MC-dropout (pipeline.Predictor)
            self.model = copy.deepcopy(self.model).to(self.device)
        self._cam_lock = threading.Lock()
        self._cam_checked = False
        self._cam_head: CamHead | None = None
        if torchscript:
            h, w = self.info.input_size
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(self.model, torch.zeros(2, 1, h, w, device=self.device), check_trace=False)
                self.model = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(self._check(batch, self.info)).to(self.device)
            return self.model(x).float().cpu().numpy()

    @property
    def has_embedding(self) -> bool:
        return self.kind == "torch"  # a frozen TorchScript graph has no classifier layer left to hook

    def logits_and_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the classifier layer's input from one forward pass (eager only; else no embedding)."""
        if not self.has_embedding:
            return self.predict_logits(batch), None
        import torch

        from radiolens.models.embedding import EmbeddingTap

        if getattr(self, "_tap", None) is None:
            self._tap = EmbeddingTap(self.model, self.info.num_outputs, self.info.arch)
        logits, emb = self._tap(torch.from_numpy(self._check(batch, self.info)).to(self.device))
        return logits.float().cpu().numpy(), emb.cpu().numpy()

    @property
    def cam_head(self) -> CamHead | None:
        """How this model's CAM-layer feature maps become a heatmap without a backward pass (the record an ONNX
        export of it would carry), found once: ``"cam"`` when the class activation map equals Grad-CAM (global
        average pooling + linear heads), ``"eigencam"`` for other heads, None for a TorchScript graph (no layer
        left to hook) or a model without a CAM layer.

        The check (:func:`radiolens.models.cam_layer.gradcam_weights_are_classifier_weights`) is structural:
        whether the gradient Grad-CAM averages sums to the classifier's weights holds or fails for a head
        whatever the input, so a seeded normal batch of the input size (what normalised images look like to
        the model) stands for the real images an export checks with.
        """
        if self.kind != "torch":
            return None
        with self._cam_lock:
            if not self._cam_checked:
                import torch

                from radiolens.models.cam_layer import FeatureTap, cam_target_layer, feature_heatmap_head

                h, w = self.info.input_size
                probe = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 1, h, w)).astype(np.float32))
                probe = probe.to(self.device)
                try:
                    self._cam_head = feature_heatmap_head(self.model, self.info.num_outputs, self.info.arch, probe)
                    self._feature_tap = FeatureTap(cam_target_layer(self.model, self.info.arch))
                except ModelError:
                    self._cam_head = None
                self._cam_checked = True
        return self._cam_head

    @property
    def has_features(self) -> bool:
        return self.cam_head is not None

    def outputs(self, batch: np.ndarray, *, embedding: bool = False,
                features: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(logits, embedding or None, (N, C, h, w) CAM-layer features or None) from ONE forward pass."""
        if features and not self.has_features:
            raise ModelError("this model gives no CAM-layer feature maps (a TorchScript graph has no layer to hook)")
        if not features:
            if embedding:
                return (*self.logits_and_embedding(batch), None)
            return self.predict_logits(batch), None, None
        import torch

        x = torch.from_numpy(self._check(batch, self.info)).to(self.device)

        def forward(t: torch.Tensor):
            if embedding and self.has_embedding:
                from radiolens.models.embedding import EmbeddingTap

                if getattr(self, "_tap", None) is None:
                    self._tap = EmbeddingTap(self.model, self.info.num_outputs, self.info.arch)
                return self._tap(t)
            with torch.inference_mode():
                return self.model(t), None

        (logits, emb), feats = self._feature_tap.run(forward, x)
        return (logits.float().cpu().numpy(), None if emb is None else emb.cpu().numpy(), feats.cpu().numpy())


class OnnxBackend(_Common):
    """ONNX Runtime on CPU; the BundleInfo comes from the file's own metadata."""

    kind = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "cpu"):
        import onnxruntime as ort

        from radiolens.models.feature_cam import CamHead
        from radiolens.models.info import file_sha256
        from radiolens.models.onnx_metadata import (
            CAM_KEY,
            EMBEDDING_NAME,
            FEATURES_NAME,
            INPUT_NAME,
            METADATA_KEY,
            OUTPUT_NAME,
            PRECISION_KEY,
            SOURCE_SHA_KEY,
            info_from_json,
            read_metadata,
        )

        self.path = Path(path)
        props = read_metadata(self.path)
        self.info = info_from_json(props[METADATA_KEY])
        self.precision = props.get(PRECISION_KEY, "fp32")
        self.sha256 = file_sha256(self.path)
        # sha256 of the .pt bundle it was exported from ("" for files exported before this was recorded): lets
        # batch scoring check that a --cam-model really is this model, not just the same architecture.
        self.source_sha256 = props.get(SOURCE_SHA_KEY, "")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if _checked_device(device) != "cpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelError(f"device '{device}' asked for, but this ONNX Runtime has no CUDA provider "
                                 "(install onnxruntime-gpu)")
            index = device.partition(":")[2] or "0"
            providers = [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:
            raise ModelError(f"{self.path.name}: ONNX Runtime cannot load it ({type(exc).__name__})") from exc
        self._input = INPUT_NAME
        outputs = [o.name for o in self.session.get_outputs()]
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self._embedding = EMBEDDING_NAME if EMBEDDING_NAME in outputs else None  # see export.ExportOutputs
        # the CAM layer's feature maps and how they become a heatmap (files exported before: neither)
        self._features = FEATURES_NAME if FEATURES_NAME in outputs and CAM_KEY in props else None
        self.cam_head: CamHead | None = CamHead.from_json(props[CAM_KEY]) if self._features else None

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: self._check(batch, self.info)})[0]

    @property
    def has_embedding(self) -> bool:
        return self._embedding is not None

    def logits_and_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and, when the file was exported with it, the model embedding, from one run."""
        names = [self._output] + ([self._embedding] if self._embedding else [])
        outs = self.session.run(names, {self._input: self._check(batch, self.info)})
        return outs[0], (outs[1] if self._embedding else None)

    @property
    def has_features(self) -> bool:
        """Whether the file outputs the CAM layer's feature maps (heatmaps without PyTorch)."""
        return self._features is not None

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the (N, C, h, w) CAM-layer feature maps from one run (``has_features`` files only)."""
        if self._features is None:
            raise ModelError(f"{self.path.name} has no feature output for heatmaps; export it again")
        logits, feats = self.session.run([self._output, self._features], {self._input: self._check(batch, self.info)})
        return logits, feats

    def outputs(self, batch: np.ndarray, *, embedding: bool = False,
                features: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(logits, embedding or None, CAM-layer features or None) from ONE run; the embedding only when the
        file has it, the features raise ModelError when it has none."""
        if features and self._features is None:
            raise ModelError(f"{self.path.name} has no feature output for heatmaps; export it again")
        emb_name = self._embedding if embedding else None
        names = [self._output] + ([emb_name] if emb_name else []) + ([self._features] if features else [])
        outs = self.session.run(names, {self._input: self._check(batch, self.info)})
        return outs[0], (outs[1] if emb_name else None), (outs[-1] if features else None)


def _checked_device(device: str) -> str:
    """"cpu", "cuda" or "cuda:N" (a typed error for anything else, before a model is loaded)."""
    if device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ModelError(f"unknown device '{device}' (cpu, cuda or cuda:N)")


def load_backend(path_or_bundle: str | Path | ModelBundle, kind: BackendKind | None = None,
                 threads: int | None = None, device: str = "cpu") -> TorchBackend | OnnxBackend:
    """A ready backend for a ``.pt`` bundle (``torch``/``torchscript``) or an exported ``.onnx`` (``onnx``).

    ``kind=None`` follows the file: ``.onnx`` -> ONNX Runtime, anything else -> eager PyTorch. ``device``
    "cuda[:N]" runs the forward pass on a GPU (ONNX Runtime's CUDA provider, or the PyTorch model moved there);
    preprocessing, the gate and the decision stay on the CPU.
    """
    if not isinstance(path_or_bundle, str | Path):  # an in-memory ModelBundle
        if kind == "onnx":
            raise ModelError("an in-memory bundle cannot run on ONNX Runtime: export it (`radiolens export`)")
        return TorchBackend(path_or_bundle, torchscript=kind == "torchscript", device=device)
    path = Path(path_or_bundle)
    is_onnx = path.suffix.lower() == ".onnx"
    kind = kind or ("onnx" if is_onnx else "torch")
    if kind not in ("torch", "torchscript", "onnx"):
        raise ModelError(f"unknown backend '{kind}' (torch, torchscript or onnx)")
    if kind == "onnx":
        if not is_onnx:
            raise ModelError(f"{path.name}: the onnx backend needs an exported .onnx file (`radiolens export`)")
        return OnnxBackend(path, threads=threads, device=device)
    if is_onnx:
        raise ModelError(f"{path.name}: an .onnx file runs only on the onnx backend")
    torch = require_torch(f"{path.name} (a PyTorch .pt bundle; a lean install serves its .onnx export)")
    from radiolens.models.bundle import ModelBundle

    if threads:
        torch.set_num_threads(int(threads))
    return TorchBackend(ModelBundle.load(path), torchscript=kind == "torchscript", device=device)

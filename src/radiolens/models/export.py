"""ONNX export of a ModelBundle, refused unless ONNX Runtime reproduces PyTorch on real images.

Why the parity gate: an exporter can silently change numerics (an unsupported op lowered differently, a
training-mode layer baked in, a shape specialised to the trace); a model that exports "fine" but scores
differently is worse than one that fails to export. The BundleInfo travels inside the .onnx file
(``metadata_props``) so a deployment needs only that one file.

Exporter choice (measured on every registry model, torch 2.14): the dynamo exporter
(``torch.onnx.export(dynamo=True)``, needs ``onnxscript``) exports all nine built-in architectures; the
legacy TorchScript exporter fails on ``lenet5`` (adaptive pooling with a non-divisor output size). Dynamo
is therefore the default; ``exporter="legacy"`` remains for graphs dynamo cannot capture.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from radiolens.errors import ModelError
from radiolens.models.bundle import ModelBundle
from radiolens.models.feature_cam import CamHead
from radiolens.models.onnx_metadata import (  # noqa: F401  (re-exported: callers import them from here)
    CAM_KEY,
    EMBEDDING_NAME,
    FEATURES_NAME,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    PRECISION_KEY,
    SOURCE_SHA_KEY,
    info_from_json,
    info_to_json,
    read_metadata,
    write_metadata,
)

DEFAULT_OPSET = 18
FP32_TOLERANCE = 1e-4
Exporter = Literal["dynamo", "legacy"]


class ExportParityError(ModelError):
    """ONNX Runtime and PyTorch disagree beyond tolerance: the exported file must not be used."""

    code = "export_parity"


@dataclass
class ParityReport:
    n_images: int
    max_abs_diff_prob: float
    max_abs_diff_logit: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff_prob < self.tolerance


@dataclass
class ExportReport:
    path: str
    exporter: str
    opset: int
    seconds: float
    size_mb: float
    parity: ParityReport
    embedding_output: bool = False
    #: the torch-free heatmap the export carries: "cam" (equals Grad-CAM), "eigencam" (other heads), or None
    heatmap_method: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parity"]["passed"] = self.parity.passed
        return d




# ------------------------------------------------------------------------------------------ export
class ExportOutputs(torch.nn.Module):
    """The model as ``(logits[, embedding][, cam_features])``: the graph an export writes.

    The embedding (the classifier layer's input) is split out, not hooked, so the exported graph has it as a
    real output; valid because every registry model ends in that linear layer (its record's ``classifier``),
    which ``export_onnx`` checks numerically before exporting. The CAM features are the output of the CAM
    target layer (``cam_layer``, a dotted module name), captured by a forward hook while tracing.
    """

    def __init__(self, model: torch.nn.Module, num_outputs: int, arch: str | None = None, *,
                 embedding: bool = True, cam_layer: str | None = None):
        import copy

        from radiolens.models.embedding import classifier_layer

        super().__init__()
        self.body = copy.deepcopy(model).eval()
        self.head = classifier_layer(self.body, num_outputs, arch) if embedding else None
        self._features: list[torch.Tensor] = []
        if cam_layer is not None:
            self.body.get_submodule(cam_layer).register_forward_hook(lambda _m, _i, out: self._features.append(out))
        self.cam_layer = cam_layer
        if self.head is not None:
            for module in self.body.modules():
                for name, child in module.named_children():
                    if child is self.head:
                        setattr(module, name, torch.nn.Identity())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._features.clear()
        out = self.body(x)
        if self.head is not None:
            emb = out.flatten(1)
            outs: tuple[torch.Tensor, ...] = (self.head(emb), emb)
        else:
            outs = (out,)
        if self.cam_layer is not None:
            if len(self._features) != 1:
                raise ModelError("the CAM layer did not run exactly once in the forward pass")
            outs = (*outs, self._features.pop())
        return outs


def _export_outputs(bundle: ModelBundle, probe: torch.Tensor, embedding: bool,
                    cam_layer: str | None) -> ExportOutputs | None:
    """The export wrapper when it reproduces the model's logits exactly; None otherwise."""
    try:
        wrapped = ExportOutputs(bundle.model, bundle.info.num_outputs, bundle.info.arch, embedding=embedding,
                                cam_layer=cam_layer)
        with torch.inference_mode():
            same = torch.allclose(wrapped(probe)[0], bundle.model(probe), rtol=1e-5, atol=1e-6)
    except (ModelError, RuntimeError, AttributeError):
        return None
    return wrapped if same else None


def _cam_head(bundle: ModelBundle, probe: torch.Tensor) -> CamHead | None:
    """How the export's feature output becomes a heatmap (None: the model has no CAM layer)."""
    from radiolens.models.cam_layer import feature_heatmap_head

    try:
        return feature_heatmap_head(bundle.model, bundle.info.num_outputs, bundle.info.arch, probe)
    except ModelError:
        return None


def _graph_for(bundle: ModelBundle, probe: torch.Tensor, embedding: bool,
               cam_features: bool) -> tuple[torch.nn.Module, list[str], CamHead | None]:
    """The module to export, its output names and its heatmap record; optional outputs that do not
    reproduce the model are dropped (the embedding first kept, as before heatmaps were exported)."""
    head = _cam_head(bundle, probe) if cam_features else None
    for emb, cam in ((embedding, head is not None), (embedding, False), (False, head is not None)):
        if not emb and not cam:
            continue
        wrapped = _export_outputs(bundle, probe, emb, head.layer if cam and head is not None else None)
        if wrapped is not None:
            names = [OUTPUT_NAME] + ([EMBEDDING_NAME] if emb else []) + ([FEATURES_NAME] if cam else [])
            return wrapped, names, head if cam else None
    return bundle.model, [OUTPUT_NAME], None


def _export_graph(model: torch.nn.Module, example: torch.Tensor, out: Path, opset: int, exporter: Exporter,
                  output_names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, onnxscript notices) is not actionable
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(model, (example,), str(out), dynamo=True, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=output_names,
                              dynamic_shapes=({0: batch},), external_data=False, verbose=False)
        elif exporter == "legacy":
            torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=output_names,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in output_names}})
        else:
            raise ModelError(f"unknown exporter '{exporter}' (dynamo or legacy)")


def check_parity(bundle: ModelBundle, onnx_path: str | Path, batch: np.ndarray,
                 tolerance: float = FP32_TOLERANCE, raise_on_fail: bool = True) -> ParityReport:
    """Compare calibrated probabilities of PyTorch and ONNX Runtime on ``batch`` (N, 1, H, W) normalised."""
    import onnxruntime as ort

    if batch.ndim != 4 or batch.shape[0] == 0:
        raise ModelError("parity check needs a non-empty (N, 1, H, W) batch of preprocessed images")
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref_logits = bundle.model(torch.from_numpy(batch)).numpy()
    onnx_logits = sess.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    if onnx_logits.shape != ref_logits.shape:
        raise ExportParityError(f"ONNX output shape {onnx_logits.shape} differs from PyTorch {ref_logits.shape}")
    p_ref = bundle.probabilities_from_logits(ref_logits)
    p_onnx = bundle.probabilities_from_logits(onnx_logits)
    report = ParityReport(n_images=int(batch.shape[0]),
                          max_abs_diff_prob=float(np.max(np.abs(p_ref - p_onnx))),
                          max_abs_diff_logit=float(np.max(np.abs(ref_logits - onnx_logits))),
                          tolerance=float(tolerance))
    if not np.all(np.isfinite(onnx_logits)):
        report.max_abs_diff_prob = float("inf")
    if raise_on_fail and not report.passed:
        raise ExportParityError(
            f"ONNX outputs diverge from PyTorch: max |dp| = {report.max_abs_diff_prob:.3g} on "
            f"{report.n_images} images (tolerance {tolerance:g}); the export was discarded")
    return report


def export_onnx(bundle: ModelBundle, out: str | Path, check_batch: np.ndarray, *, opset: int = DEFAULT_OPSET,
                tolerance: float = FP32_TOLERANCE, exporter: Exporter = "dynamo",
                embedding: bool = True, cam_features: bool = True) -> ExportReport:
    """Export to ONNX (dynamic batch axis), verify parity on ``check_batch`` and embed the BundleInfo.

    With ``embedding`` (default) the graph has a second output, the model embedding, so a service running
    on ONNX Runtime can apply the input gate and drift monitoring without PyTorch. With ``cam_features``
    (default) it also outputs the CAM target layer's feature maps, and the metadata records how a heatmap is
    computed from them without PyTorch (:mod:`radiolens.models.feature_cam`: a class activation map with the
    classifier's weights when the head is global average pooling + linear, else EigenCAM).

    The file appears at ``out`` only after the parity check passed; on divergence nothing is left behind
    and :class:`ExportParityError` is raised.
    """
    if opset < 17:
        raise ModelError("opset must be >= 17")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    h, w = bundle.info.input_size
    example = torch.zeros(2, 1, h, w)  # batch 2: a batch of 1 can get specialised as a constant
    bundle.model.eval()
    t0 = time.perf_counter()
    probe = torch.from_numpy(np.ascontiguousarray(check_batch[:4], dtype=np.float32)) if len(check_batch) else example
    graph, names, cam_head = _graph_for(bundle, probe, embedding, cam_features)
    try:
        try:
            try:
                _export_graph(graph, example, tmp, opset, exporter, names)
            except Exception:
                if FEATURES_NAME not in names:
                    raise
                # the feature output is an extra: a graph the exporter cannot capture with it ships without
                graph, names, cam_head = _graph_for(bundle, probe, embedding, False)
                _export_graph(graph, example, tmp, opset, exporter, names)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"ONNX export of '{bundle.info.arch}' failed ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
        write_metadata(tmp, bundle.info, "fp32", bundle.sha256,
                       extra={CAM_KEY: cam_head.to_json()} if cam_head is not None else None)
        parity = check_parity(bundle, tmp, check_batch, tolerance)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        for leftover in out.parent.glob(tmp.name + ".data"):
            leftover.unlink(missing_ok=True)
    return ExportReport(path=str(out), exporter=exporter, opset=opset, seconds=time.perf_counter() - t0,
                        size_mb=out.stat().st_size / 2**20, parity=parity, embedding_output=EMBEDDING_NAME in names,
                        heatmap_method=None if cam_head is None else cam_head.method)

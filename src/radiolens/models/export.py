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
from radiolens.models.onnx_metadata import (  # noqa: F401  (re-exported: callers import them from here)
    EMBEDDING_NAME,
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parity"]["passed"] = self.parity.passed
        return d




# ------------------------------------------------------------------------------------------ export
class LogitsAndEmbedding(torch.nn.Module):
    """The model as ``(logits, embedding)``: its classifier layer applied to what feeds it.

    Split (not hooked) so the exported graph has the embedding as a real output; valid because every registry
    model ends in that linear layer (its record's ``classifier``), which ``export_onnx`` checks numerically
    before exporting.
    """

    def __init__(self, model: torch.nn.Module, num_outputs: int, arch: str | None = None):
        import copy

        from radiolens.models.embedding import classifier_layer

        super().__init__()
        self.body = copy.deepcopy(model).eval()
        self.head = classifier_layer(self.body, num_outputs, arch)
        for module in self.body.modules():
            for name, child in module.named_children():
                if child is self.head:
                    setattr(module, name, torch.nn.Identity())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.body(x).flatten(1)
        return self.head(emb), emb


def _with_embedding(bundle: ModelBundle, example: torch.Tensor) -> torch.nn.Module | None:
    """The two-output wrapper when it reproduces the model's logits exactly; None otherwise."""
    try:
        wrapped = LogitsAndEmbedding(bundle.model, bundle.info.num_outputs, bundle.info.arch)
        with torch.inference_mode():
            same = torch.allclose(wrapped(example)[0], bundle.model(example), rtol=1e-5, atol=1e-6)
    except (ModelError, RuntimeError):
        return None
    return wrapped if same else None


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
                embedding: bool = True) -> ExportReport:
    """Export to ONNX (dynamic batch axis), verify parity on ``check_batch`` and embed the BundleInfo.

    With ``embedding`` (default) the graph has a second output, the model embedding, so a service running
    on ONNX Runtime can apply the input gate and drift monitoring without PyTorch.

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
    wrapped = _with_embedding(bundle, probe) if embedding else None
    graph, names = (wrapped, [OUTPUT_NAME, EMBEDDING_NAME]) if wrapped is not None else (bundle.model, [OUTPUT_NAME])
    try:
        try:
            _export_graph(graph, example, tmp, opset, exporter, names)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"ONNX export of '{bundle.info.arch}' failed ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
        write_metadata(tmp, bundle.info, "fp32", bundle.sha256)
        parity = check_parity(bundle, tmp, check_batch, tolerance)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        for leftover in out.parent.glob(tmp.name + ".data"):
            leftover.unlink(missing_ok=True)
    return ExportReport(path=str(out), exporter=exporter, opset=opset, seconds=time.perf_counter() - t0,
                        size_mb=out.stat().st_size / 2**20, parity=parity, embedding_output=wrapped is not None)

"""Static INT8 quantization of an exported fp32 ONNX model with ONNX Runtime's own tooling.

Static (not dynamic) because convolutions dominate these models and ONNX Runtime only runs integer
convolution kernels when activation scales are fixed ahead of time; the scales are calibrated on real
validation images through a :class:`CalibrationDataReader`. QDQ format with signed int8 weights
per-channel is ONNX Runtime's recommended x86 configuration.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from radiolens.errors import ModelError
from radiolens.models.export import CAM_KEY, INPUT_NAME, METADATA_KEY, info_from_json, read_metadata, write_metadata

CalibrationMethod = Literal["minmax", "entropy", "percentile"]


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayCalibrationReader(CalibrationDataReader):
        """Feeds preprocessed validation images, ``batch_size`` at a time, to the calibrator."""

        def __init__(self, images: np.ndarray, batch_size: int = 16):
            self.images = np.ascontiguousarray(images, dtype=np.float32)
            self.batch_size = batch_size
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._pos >= self._stop:
                return None
            batch = self.images[self._pos:min(self._pos + self.batch_size, self._stop)]
            self._pos += self.batch_size
            return {INPUT_NAME: batch}

        def rewind(self) -> None:
            self._pos, self._stop = 0, len(self.images)

        # Batches, for ONNX Runtime's strided calibration (``CalibStridedMinMax``): it calls set_range and
        # collect_data once per stride, so only one stride's activations are held in memory at a time.
        def __len__(self) -> int:
            return -(-len(self.images) // self.batch_size)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._pos = start_index * self.batch_size
            self._stop = min(end_index * self.batch_size, len(self.images))

    return ArrayCalibrationReader


def calibration_reader(images: np.ndarray, batch_size: int = 16):
    """A ``CalibrationDataReader`` over (N, 1, H, W) preprocessed images."""
    return _reader_class()(images, batch_size)


@dataclass
class QuantizeReport:
    path: str
    n_calibration: int
    method: str
    per_channel: bool
    seconds: float
    size_mb_fp32: float
    size_mb_int8: float

    def to_dict(self) -> dict:
        return asdict(self)


def quantize_onnx(fp32_path: str | Path, out: str | Path, calibration: np.ndarray, *,
                  method: CalibrationMethod = "minmax", per_channel: bool = True) -> QuantizeReport:
    """fp32 .onnx -> int8 .onnx (QDQ), calibrated on ``calibration`` (N, 1, H, W); metadata is carried over."""
    from onnxruntime.quantization import CalibrationMethod as CM
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out = Path(fp32_path), Path(out)
    props = read_metadata(fp32_path)
    info = info_from_json(props[METADATA_KEY])
    if calibration.ndim != 4 or len(calibration) < 1:
        raise ModelError("quantization needs a non-empty (N, 1, H, W) calibration batch")
    methods = {"minmax": CM.MinMax, "entropy": CM.Entropy, "percentile": CM.Percentile}
    if method not in methods:
        raise ModelError(f"unknown calibration method '{method}' ({', '.join(methods)})")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radiolens-quant-") as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        # Shape inference + graph fusion first (ONNX Runtime's documented pre-processing step): the quantizer
        # needs shapes and must see Conv+BN already fused or it quantizes the unfused graph.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        tmp = out.with_name(out.name + ".partial")
        try:
            extra: dict = {"CalibTensorRangeSymmetric": False}
            if method != "minmax":
                # The histogram calibrators keep every activation of every image of one collect_data call:
                # 200 densenet121 images at 224 px were killed for memory on a 24 GB machine. One batch per
                # call (ONNX Runtime merges the histograms between calls; despite its name the "strided
                # MinMax" option applies to every method) bounds that to one batch's activations.
                extra["CalibStridedMinMax"] = 1
            quantize_static(str(pre), str(tmp), calibration_reader(calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=per_channel,
                            calibrate_method=methods[method], extra_options=extra)
            write_metadata(tmp, info, "int8", props.get("radiolens.source_sha256", ""),
                           extra={CAM_KEY: props[CAM_KEY]} if CAM_KEY in props else None)  # heatmap record
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    return QuantizeReport(path=str(out), n_calibration=int(len(calibration)), method=method,
                          per_channel=per_channel, seconds=time.perf_counter() - t0,
                          size_mb_fp32=fp32_path.stat().st_size / 2**20, size_mb_int8=out.stat().st_size / 2**20)


def _auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean AUROC over outputs that have both classes (one-vs-rest for multi-class)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if probs.shape[1] == 1:
        return float(roc_auc_score(labels.ravel(), probs[:, 0]))
    if labels.ndim == 1:  # class indices -> one-vs-rest
        labels = np.eye(probs.shape[1])[labels.astype(int)]
    scores = [roc_auc_score(labels[:, k], probs[:, k]) for k in range(probs.shape[1])
              if 0 < labels[:, k].sum() < len(labels)]
    return float(np.mean(scores)) if scores else float("nan")


def _throughput(backend, batch: np.ndarray, repeats: int) -> float:
    backend.predict_logits(batch)  # warm-up: lazy allocations, kernel selection
    t0 = time.perf_counter()
    for _ in range(repeats):
        backend.predict_logits(batch)
    return repeats * len(batch) / (time.perf_counter() - t0)


def compare_int8(fp32_path: str | Path, int8_path: str | Path, images: np.ndarray, labels: np.ndarray, *,
                 threads: int | None = None, speed_batch: int = 32, repeats: int = 3) -> dict:
    """AUROC of fp32 vs int8 on labelled images, agreement, and model-stage speed (same threads for both)."""
    from radiolens.models.backends import OnnxBackend

    fp32, int8 = OnnxBackend(fp32_path, threads=threads), OnnxBackend(int8_path, threads=threads)
    if len(images) != len(labels):
        raise ModelError("one label per evaluation image is needed")
    p32 = np.concatenate([fp32.predict_proba(images[i:i + 64]) for i in range(0, len(images), 64)])
    p8 = np.concatenate([int8.predict_proba(images[i:i + 64]) for i in range(0, len(images), 64)])
    auc32, auc8 = _auroc(labels, p32), _auroc(labels, p8)
    thr = np.asarray(fp32.info.thresholds)[None, :]
    batch = images[:speed_batch]
    ips32, ips8 = _throughput(fp32, batch, repeats), _throughput(int8, batch, repeats)
    return {
        "n_eval_images": int(len(images)),
        "auroc_fp32": auc32, "auroc_int8": auc8, "auroc_change": auc8 - auc32,
        "max_abs_prob_diff": float(np.max(np.abs(p32 - p8))),
        "mean_abs_prob_diff": float(np.mean(np.abs(p32 - p8))),
        "decision_agreement": float(np.mean((p32 >= thr) == (p8 >= thr))),
        "model_images_per_s_fp32": ips32, "model_images_per_s_int8": ips8, "speedup_int8": ips8 / ips32,
        "speed_batch": int(len(batch)), "threads": int(threads or 0),
        "size_mb_fp32": Path(fp32_path).stat().st_size / 2**20,
        "size_mb_int8": Path(int8_path).stat().st_size / 2**20,
    }


def record_in_metadata(onnx_path: str | Path, key: str, value: dict) -> None:
    """Store a result (e.g. the int8 comparison) in the ONNX file's own BundleInfo.metrics, for the model card."""
    props = read_metadata(onnx_path)
    info = info_from_json(props[METADATA_KEY])
    info.metrics = {**info.metrics, key: value}
    write_metadata(Path(onnx_path), info, props.get("radiolens.precision", "int8"),
                   props.get("radiolens.source_sha256", ""))

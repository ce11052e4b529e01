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
from radiolens.models.export import INPUT_NAME, METADATA_KEY, info_from_json, read_metadata, write_metadata

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
            if self._pos >= len(self.images):
                return None
            batch = self.images[self._pos:self._pos + self.batch_size]
            self._pos += self.batch_size
            return {INPUT_NAME: batch}

        def rewind(self) -> None:
            self._pos = 0

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
            quantize_static(str(pre), str(tmp), calibration_reader(calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=per_channel,
                            calibrate_method=methods[method],
                            extra_options={"CalibTensorRangeSymmetric": False})
            write_metadata(tmp, info, "int8", props.get("radiolens.source_sha256", ""))
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    return QuantizeReport(path=str(out), n_calibration=int(len(calibration)), method=method,
                          per_channel=per_channel, seconds=time.perf_counter() - t0,
                          size_mb_fp32=fp32_path.stat().st_size / 2**20, size_mb_int8=out.stat().st_size / 2**20)

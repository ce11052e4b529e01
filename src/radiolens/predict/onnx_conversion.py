"""ONNX export and static INT8 quantization checked on real images: the jobs behind ``radiolens export`` and
``radiolens quantize``.

The export is refused (no file) when ONNX Runtime disagrees with PyTorch on real images
(:func:`radiolens.models.export.export_onnx`); the check images come from a folder or manifest, by default the
data folder (``RADIOLENS_DATA_DIR``).

Calibration and evaluation images come from a folder or manifest (:mod:`radiolens.predict.sources`). When
both come from the same manifest and split, they are split into two patient-disjoint halves (by the
manifest's ``patient_id``), so the int8 model is never evaluated on its calibration images. The comparison
(AUROC fp32 vs int8, speed-up) is pinned to the files by their sha256 and recorded in the int8 file's
metadata, where the model card reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from radiolens.errors import ConfigError, InputError
from radiolens.models.backends import OnnxBackend
from radiolens.models.bundle import ModelBundle, file_sha256
from radiolens.models.export import SOURCE_SHA_KEY, ExportReport, export_onnx, read_metadata
from radiolens.models.quantize import QuantizeReport, compare_int8, quantize_onnx, record_in_metadata
from radiolens.predict.sources import ScoreItem, discover, group_half, load_preprocessed


@dataclass
class ExportCheck:
    images: Path | None = None  #: folder or manifest CSV of real images (None: the data folder)
    count: int = 32
    split: str | None = None  #: manifest split to draw them from
    tolerance: float = 1e-4  #: max |probability difference| allowed


def check_image_source(images: Path | None) -> Path:
    """``images``, or the data folder when None; neither is a ``ConfigError`` (a parity check needs images)."""
    if images is not None:
        return images
    from radiolens.settings import data_dir

    root = data_dir(required=False)
    if root is None:
        raise ConfigError("the parity check needs real images: give --check-images DIR_OR_MANIFEST "
                          "(or set RADIOLENS_DATA_DIR)")
    return root


def export_on_images(bundle: ModelBundle, out: Path, check: ExportCheck | None = None, *, opset: int = 18,
                     exporter: str = "dynamo") -> tuple[ExportReport, list[str]]:
    """Export ``bundle`` to ONNX at ``out`` after the parity check on real images -> (result, keys of the images
    checked)."""
    check = check or ExportCheck()
    items = discover(check_image_source(check.images), split=check.split)
    batch, used = load_preprocessed(items, bundle.info, limit=check.count)
    result = export_onnx(bundle, out, batch, opset=opset, tolerance=check.tolerance,
                         exporter=exporter)  # type: ignore[arg-type]
    return result, [it.key for it in used]


@dataclass
class QuantizeOptions:
    calibration: Path  #: folder or manifest CSV of validation images
    calibration_split: str | None = None
    calibration_count: int = 128
    method: str = "minmax"  #: calibration method (``models.quantize.CalibrationMethod``)
    eval_source: Path | None = None  #: labelled manifest CSV to compare fp32 vs int8 on (None: no comparison)
    eval_split: str | None = None
    label_column: str | None = None  #: 0/1 column; None: the label definition the model was trained with
    eval_count: int = 400
    threads: int | None = None  #: ONNX Runtime threads for the speed comparison


def _labelled_items(options: QuantizeOptions, info) -> list[ScoreItem]:
    """The evaluation images with 0/1 labels: from ``label_column`` when given, else through the label
    definition stored with the model at training (the same one ``radiolens evaluate`` uses), so a manifest
    whose label is a word ("PNEUMONIA") needs no extra column."""
    if options.label_column is not None:
        return discover(options.eval_source, split=options.eval_split, label_column=options.label_column)
    from radiolens.data.manifest import LabelSpec, load_manifest

    stored = (info.training or {}).get("label")
    if not stored or info.task != "binary":
        raise ConfigError("this model does not record a binary label definition: pass --label-column")
    manifest = load_manifest(options.eval_source)
    if options.eval_split is not None:
        manifest = manifest.subset(options.eval_split)
    targets, _ = manifest.targets(LabelSpec.model_validate(stored))
    items = discover(options.eval_source, split=options.eval_split)
    if len(items) != len(targets):
        raise InputError("the evaluation manifest's rows and labels do not line up")
    return [replace(it, label=float(t)) for it, t in zip(items, np.asarray(targets).reshape(-1), strict=True)]


def quantize_on_images(model: Path, out: Path, options: QuantizeOptions,
                       on_quantized: Callable[[QuantizeReport], object] = lambda report: None) -> dict[str, Any]:
    """Quantize the fp32 ``.onnx`` at ``model`` into ``out`` and return the report (``quantization``, ``model``,
    ``arch`` and, with ``eval_source``, ``comparison``). ``on_quantized`` is called once the int8 file is
    written, before the (slower) comparison."""
    info = OnnxBackend(model, threads=1).info
    cal_items = discover(options.calibration, split=options.calibration_split)
    same = options.eval_source is not None and options.eval_source.resolve() == options.calibration.resolve() \
        and options.eval_split == options.calibration_split
    if same:
        cal_items = [it for it in cal_items if group_half(it) == 0]
    cal, _ = load_preprocessed(cal_items, info, limit=options.calibration_count)
    qrep = quantize_onnx(model, out, cal, method=options.method)  # type: ignore[arg-type]
    on_quantized(qrep)
    payload: dict[str, Any] = {"quantization": qrep.to_dict(), "model": info.name, "arch": info.arch}
    if options.eval_source is None:
        return payload
    ev_items = _labelled_items(options, info)
    if same:
        ev_items = [it for it in ev_items if group_half(it) == 1]
    images, used = load_preprocessed(ev_items, info, limit=options.eval_count)
    labels = np.asarray([it.label for it in used])
    if len(set(labels.tolist())) < 2:
        raise InputError("the evaluation images need both positive and negative labels for AUROC")
    cmp = compare_int8(model, out, images, labels, threads=options.threads)
    source_sha = read_metadata(model).get(SOURCE_SHA_KEY, "")
    # Hashes pin the numbers to the files (the model card checks source_sha256 against its .pt); the int8
    # file's own hash can only be taken after its metadata is final, so it goes into the report only.
    cmp = {**cmp, "calibration_images": qrep.n_calibration, "method": qrep.method,
           "fp32_onnx_sha256": file_sha256(model), "source_sha256": source_sha}
    record_in_metadata(out, "int8_vs_fp32", cmp)
    payload["comparison"] = {**cmp, "int8_onnx_sha256": file_sha256(out)}
    return payload

"""The radiolens record inside an exported ONNX file, read and written without PyTorch.

An export carries the :class:`~radiolens.models.info.BundleInfo` (labels, preprocessing, calibration, thresholds,
operating point, triage rule, monitoring profile), its precision and the sha256 of the ``.pt`` bundle it was
exported from as ONNX ``metadata_props``. That one file is the deployable model: a ``radiolens[serve]``
installation (ONNX Runtime, no PyTorch) serves and batch-scores it with the same preprocessing, calibration,
decision, triage and input gate as the ``.pt`` bundle.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from radiolens.errors import ModelError
from radiolens.models.info import BundleInfo

METADATA_KEY = "radiolens.bundle_info"
PRECISION_KEY = "radiolens.precision"
SOURCE_SHA_KEY = "radiolens.source_sha256"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EMBEDDING_NAME = "embedding"  # second output: the classifier layer's input (input gate, drift monitoring)
FEATURES_NAME = "cam_features"  # last output: the CAM target layer's (N, C, h, w) maps (heatmaps without torch)
#: How ``cam_features`` become a heatmap (models.feature_cam.CamHead as JSON: method, layer, classifier weights).
#: Metadata rather than a graph output: the weights are the classifier's exact float32 values, read once when
#: the file is loaded (no per-request output, no constant output without a batch axis), and INT8 quantization,
#: which rewrites initializers, leaves them as they are.
CAM_KEY = "radiolens.cam"


def info_to_json(info: BundleInfo) -> str:
    d = asdict(info)
    d["input_size"] = list(info.input_size)
    return json.dumps(d, sort_keys=True)


def info_from_json(text: str) -> BundleInfo:
    try:
        raw = json.loads(text)
        raw["input_size"] = tuple(raw["input_size"])
        return BundleInfo(**raw)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"ONNX file carries unreadable radiolens metadata ({type(exc).__name__})") from exc


def write_metadata(onnx_path: Path, info: BundleInfo, precision: str, source_sha256: str = "",
                   extra: dict[str, str] | None = None) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({METADATA_KEY: info_to_json(info), PRECISION_KEY: precision})
    if source_sha256:
        props[SOURCE_SHA_KEY] = source_sha256
    props.update(extra or {})
    del model.metadata_props[:]
    for k, v in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(onnx_path))


def read_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The radiolens keys of an ONNX file's metadata (cheap: ONNX Runtime reads them without the graph)."""
    import onnxruntime as ort

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path.name}")
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path.name}: not a loadable ONNX model ({type(exc).__name__})") from exc
    props = dict(sess.get_modelmeta().custom_metadata_map)
    if METADATA_KEY not in props:
        raise ModelError(f"{path.name}: ONNX file has no radiolens metadata; export it with `radiolens export`")
    return props

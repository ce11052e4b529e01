"""Typed errors for bad input.

Every layer raises these (never bare ValueError) for problems with what a user gave us, so the CLI can
print one line and exit non-zero and the HTTP API can answer 4xx JSON. Messages must never contain PHI:
name the problem and, at most, a file's base name chosen by the user.
"""

from __future__ import annotations


class RadiolensError(Exception):
    """Base for every expected, user-facing error."""

    #: Stable machine-readable code, used in HTTP error bodies and reports.
    code = "radiolens_error"


class InputError(RadiolensError):
    """The input (file, manifest, request) is not usable."""

    code = "bad_input"


class NotFoundError(InputError):
    """What the request names does not exist (HTTP 404)."""

    code = "not_found"


class NotDicomError(InputError):
    code = "not_dicom"


class TruncatedFileError(InputError):
    code = "truncated_file"


class NoPixelDataError(InputError):
    code = "no_pixel_data"


class UnsupportedTransferSyntaxError(InputError):
    code = "unsupported_transfer_syntax"


class ImageDimensionError(InputError):
    """Zero-sized or absurd dimensions (also the decompression-bomb guard)."""

    code = "bad_dimensions"


class UnreadableImageError(InputError):
    code = "unreadable_image"


class UnsupportedInputError(InputError):
    """Something that is not an image source was given where one is expected (the Python API takes a path, a
    NumPy array or a pydicom data set)."""

    code = "unsupported_input"


class PixelRangeError(InputError):
    """An in-memory pixel array breaks the intensity convention (float in [0, 1], or uint8 / uint16 over their
    full range), has NaN or infinite values, or an unsupported dtype."""

    code = "bad_pixel_range"


class BurnedInAnnotationError(InputError):
    """De-identification refused: the pixels may carry burned-in text."""

    code = "burned_in_annotation"


class ConfigError(RadiolensError):
    code = "bad_config"


class GateCalibrationError(InputError):
    """The input gate refuses far more of the model's own validation images than its target."""

    code = "gate_rejects_validation"


class ManifestError(InputError):
    code = "bad_manifest"


class DataLeakageError(ManifestError):
    code = "patient_leakage"


class ModelError(RadiolensError):
    code = "bad_model"


class WeightsUnavailableError(ModelError):
    """Pretrained weights were asked for by name (``imagenet``) but cannot be fetched (offline, no cache)."""

    code = "weights_unavailable"


#: Top-level modules that only the ``train`` extra installs (PyTorch and the training, explanation and
#: experiment-tracking stack). A lean ``radiolens[serve]`` install runs exported ONNX models without them.
TRAIN_ONLY_MODULES = frozenset({"torch", "torchvision", "timm", "lightning", "pytorch_lightning", "torchmetrics",
                                "pytorch_grad_cam", "mlflow", "optuna", "onnxscript", "medmnist"})
#: Every top-level module a ``radiolens[serve]`` install lacks, with the extra that installs it: the train stack;
#: pandas and pyarrow (``tables``: data manifests, splits, evaluation tables, Parquet result files), which no
#: serving path needs and which would add about 140 MB to the serving image; python-gdcm (``gdcm``), a second
#: DICOM decoder next to the pylibjpeg plugins that already decode JPEG, JPEG-LS, JPEG 2000 and RLE.
EXTRA_OF_MODULE: dict[str, str] = {**dict.fromkeys(TRAIN_ONLY_MODULES, "train"),
                                   "pandas": "tables", "pyarrow": "tables", "gdcm": "gdcm"}


class MissingExtraError(ConfigError):
    """A feature needs packages of an optional extra that this installation lacks (e.g. training without
    PyTorch in a ``radiolens[serve]`` install)."""

    code = "missing_extra"

    def __init__(self, module: str, purpose: str = "this", extra: str = "train"):
        self.module, self.extra = module, extra
        super().__init__(f"{purpose} needs {module}, which this installation lacks: "
                         f"pip install 'radiolens[{extra}]'")


def missing_extra(exc: BaseException, purpose: str = "this") -> MissingExtraError | None:
    """The :class:`MissingExtraError` an ``ImportError`` of an optional extra's module stands for (naming that
    extra), else None (any other import failure is a real bug and must surface as itself)."""
    name = getattr(exc, "name", None) or ""
    root = name.split(".")[0]
    if isinstance(exc, ImportError) and root in EXTRA_OF_MODULE:
        return MissingExtraError(root, purpose, EXTRA_OF_MODULE[root])
    return None


def require_torch(purpose: str):
    """``import torch``, or :class:`MissingExtraError` naming ``purpose`` when PyTorch is not installed."""
    try:
        import torch
    except ImportError as exc:
        err = missing_extra(exc, purpose)
        if err is None:
            raise
        raise err from None
    return torch

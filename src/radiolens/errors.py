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

"""Upload bytes -> de-identified image, study reference and input hash, before anything is stored.

The uploaded file name is never used (it can itself be PHI): error messages name the upload "upload".
DICOM is parsed from memory and de-identified with :class:`radiolens.io.deid.Deidentifier`; rasters
(PNG/JPEG) carry no header we keep, only their pixels, and are referenced by a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import warnings
from dataclasses import dataclass

from radiolens.errors import ConfigError, NotDicomError, TruncatedFileError, UnreadableImageError
from radiolens.io.image import RadioImage

_DICOM_MAGIC = b"DICM"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class Ingested:
    image: RadioImage
    input_sha256: str  # of the bytes as uploaded, so a site can match a row to its own file
    study_ref: str  # remapped StudyInstanceUID (DICOM) or "raster:<keyed hash>"
    source_format: str
    deid_report: dict


def sniff(data: bytes) -> str:
    if len(data) >= 132 and data[128:132] == _DICOM_MAGIC:
        return "dicom"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    return "unknown"


class Ingestor:
    def __init__(self, secret: str):
        try:
            from radiolens.io.deid import Deidentifier  # the io layer's de-identifier
        except ImportError as exc:  # refuse to serve rather than store anything not de-identified
            raise ConfigError("radiolens.io.deid is not available: the service will not run without "
                              "de-identification") from exc

        from radiolens.serve.config import secret_fingerprint

        # Pillow's debug log quotes metadata it parses (EXIF tag values, PNG text chunks), which can be PHI;
        # pydicom is silenced the same way by the service.
        logging.getLogger("PIL").setLevel(logging.CRITICAL)
        self._secret = secret.encode("utf-8")
        #: Non-reversible tag of the secret in use (``/v1/service``, start-up log): a changed value means study
        #: refs and remapped UIDs no longer match those made before.
        self.secret_fingerprint = secret_fingerprint(secret)
        logging.getLogger("radiolens.serve").info("de-identification secret fingerprint %s", self.secret_fingerprint)
        self._deid = Deidentifier(secret, shift_dates=False, allow_burned_in=False)

    def keyed_ref(self, data_sha256: str) -> str:
        return "raster:" + hmac.new(self._secret, data_sha256.encode("ascii"), hashlib.sha256).hexdigest()[:40]

    def ingest(self, data: bytes, content_type: str | None = None) -> Ingested:
        if not data:
            raise UnreadableImageError("upload: empty file")
        digest = hashlib.sha256(data).hexdigest()
        kind = sniff(data)
        if kind == "unknown" and content_type in ("application/dicom", "application/dicom+octet-stream"):
            kind = "dicom-nopreamble"
        if kind.startswith("dicom"):
            return self._dicom(data, digest)
        if kind in ("png", "jpeg"):
            return self._raster(data, digest, kind)
        # Last resort: DICOM written without the 128-byte preamble is common in PACS exports.
        try:
            return self._dicom(data, digest)
        except NotDicomError:
            raise UnreadableImageError("upload: not a DICOM, PNG or JPEG image") from None

    def _dicom(self, data: bytes, digest: str) -> Ingested:
        import pydicom
        from pydicom.errors import InvalidDicomError

        from radiolens.io.dicom import check_padding, dicom_to_image, guard_deflated, precheck_size

        has_magic = data[128:132] == _DICOM_MAGIC
        stream = io.BytesIO(data)
        guard_deflated(stream, "upload")  # a deflate bomb is refused before pydicom inflates it
        precheck_size(memoryview(data), len(data), "upload", force=not has_magic)  # padding, before parsing it
        try:
            with warnings.catch_warnings():
                # pydicom warnings can quote element values (PHI): never let them reach a log.
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(stream, force=not has_magic)
        except NotDicomError:
            raise
        except InvalidDicomError as exc:
            raise NotDicomError("upload: not a DICOM file") from exc
        except (EOFError, OSError) as exc:
            raise TruncatedFileError("upload: DICOM file is truncated") from exc
        except Exception as exc:  # pydicom raises assorted types on garbage; none may escape untyped
            raise NotDicomError(f"upload: not a readable DICOM file ({type(exc).__name__})") from exc
        if len(ds) == 0:  # pydicom gives up on a cut-off file and returns an empty dataset
            if has_magic:
                raise TruncatedFileError("upload: DICOM file is truncated (no complete data set)")
            raise NotDicomError("upload: not a DICOM file")
        if "SOPClassUID" not in ds and "PixelData" not in ds and "StudyInstanceUID" not in ds:
            raise NotDicomError("upload: not a DICOM file")
        check_padding(ds, "upload", len(data))  # before de-identification: nothing beyond the image is kept
        clean, report = self._deid.deidentify_dataset(ds)
        del ds  # the identified dataset goes no further than this line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = dicom_to_image(clean, name="upload")
        study = str(clean.get("StudyInstanceUID", "") or "") or self.keyed_ref(digest)
        image.meta.extra.clear()
        return Ingested(image=image, input_sha256=digest, study_ref=study, source_format="dicom",
                        deid_report=dict(report or {}))

    def _raster(self, data: bytes, digest: str, kind: str) -> Ingested:
        from radiolens.io.raster import read_raster_bytes

        # Decoded from memory: the raw upload (its EXIF / text chunks may hold PHI) is never written to disk.
        with warnings.catch_warnings():  # as for DICOM: a warning could quote file content
            warnings.simplefilter("ignore")
            image = read_raster_bytes(data, name="upload")
        return Ingested(image=image, input_sha256=digest, study_ref=self.keyed_ref(digest), source_format=kind,
                        deid_report={"raster": "pixels only; file metadata discarded"})

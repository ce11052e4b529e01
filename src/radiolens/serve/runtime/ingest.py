"""Upload bytes -> de-identified image, study reference and input hash, before anything is stored.

The uploaded file name is never used (it can itself be PHI): error messages name the upload "upload".
The format comes from the io layer's one table (:mod:`radiolens.io.formats`: magic bytes, then the content
type for DICOM without preamble). DICOM is parsed from memory by the io layer's reader, with every check a
file gets (deflate-bomb guard, size precheck, truncation, padding), and de-identified with
:class:`radiolens.io.deid.Deidentifier` before the image is built; rasters (PNG/JPEG) carry no header we keep,
only their pixels, and are referenced by a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import warnings
from dataclasses import dataclass

from radiolens.errors import ConfigError, NotDicomError, UnreadableImageError
from radiolens.io import formats, fulldepth
from radiolens.io.fulldepth import FullDepth
from radiolens.io.image import RadioImage

#: What the service accepts (the viewer's file picker offers the same); TIFF is read by the CLI only.
ACCEPTED = (formats.DICOM.name, formats.PNG.name, formats.JPEG.name)


@dataclass
class Ingested:
    image: RadioImage
    input_sha256: str  # of the bytes as uploaded, so a site can match a row to its own file
    study_ref: str  # remapped StudyInstanceUID (DICOM) or "raster:<keyed hash>"
    source_format: str
    deid_report: dict
    #: the de-identified pixels at full bit depth, for the reading viewer (never the upload's bytes)
    full_depth: FullDepth


class Ingestor:
    def __init__(self, secret: str, pixel_text=None):
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
        # pixel_text: ServeSettings.pixel_text (OCR refuse by default); None = the header rule alone
        self._deid = Deidentifier(secret, shift_dates=False, allow_burned_in=False, pixel_text=pixel_text)

    def remap_uid(self, uid: str) -> str:
        """The de-identified form of a UID, as stored for an ingested DICOM (the keyed remap)."""
        return self._deid.remap_uid(uid)

    def keyed_ref(self, data_sha256: str) -> str:
        return "raster:" + hmac.new(self._secret, data_sha256.encode("ascii"), hashlib.sha256).hexdigest()[:40]

    def ingest(self, data: bytes, content_type: str | None = None) -> Ingested:
        if not data:
            raise UnreadableImageError(f"{formats.UPLOAD_NAME}: empty file")
        digest = hashlib.sha256(data).hexdigest()
        kind = formats.format_of_bytes(data, content_type)
        if kind == formats.DICOM.name:
            return self._dicom(data, digest)
        if kind in ACCEPTED:
            return self._raster(data, digest, kind)
        # Last resort: DICOM written without the 128-byte preamble is common in PACS exports.
        try:
            return self._dicom(data, digest)
        except NotDicomError:
            raise UnreadableImageError(f"{formats.UPLOAD_NAME}: not a DICOM, PNG or JPEG image") from None

    def _dicom(self, data: bytes, digest: str) -> Ingested:
        from radiolens.io.dicom import dicom_to_image

        # The io layer's checked read, as for a file (padding included, before de-identification: nothing
        # beyond the image is kept); warnings are silenced there, since pydicom's can quote PHI.
        ds = formats.open_dicom(data, name=formats.UPLOAD_NAME)
        if "SOPClassUID" not in ds and "PixelData" not in ds and "StudyInstanceUID" not in ds:
            raise NotDicomError(f"{formats.UPLOAD_NAME}: not a DICOM file")
        clean, report = self._deid.deidentify_dataset(ds)
        del ds  # the identified dataset goes no further than this line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = dicom_to_image(clean, name=formats.UPLOAD_NAME)
            full = fulldepth.from_dataset(clean, image, formats.UPLOAD_NAME)
        study = str(clean.get("StudyInstanceUID", "") or "") or self.keyed_ref(digest)
        image.meta.extra.clear()
        return Ingested(image=image, input_sha256=digest, study_ref=study, source_format="dicom",
                        deid_report=dict(report or {}), full_depth=full)

    def _raster(self, data: bytes, digest: str, kind: str) -> Ingested:
        # Decoded from memory: the raw upload (its EXIF / text chunks may hold PHI) is never written to disk.
        with warnings.catch_warnings():  # as for DICOM: a warning could quote file content
            warnings.simplefilter("ignore")
            image = formats.read_image(data, name=formats.UPLOAD_NAME)
        return Ingested(image=image, input_sha256=digest, study_ref=self.keyed_ref(digest), source_format=kind,
                        deid_report={"raster": "pixels only; file metadata discarded"},
                        full_depth=fulldepth.from_display(image))

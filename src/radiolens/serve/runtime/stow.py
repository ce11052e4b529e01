"""DICOMweb STOW-RS (PS3.18 10.5, Store Transaction): a ``multipart/related; type="application/dicom"`` body ->
checked instances in the DICOM spool -> the Store Instances Response.

Why the spool and not a prediction: a DICOMweb sender forgets an instance once the response says it is
stored, so an instance counts as stored only once it is in the spool (encrypted, fsync'ed); the gateway
(``radiolens gateway run`` on the same state folder) scores it from
there, through the same prediction flow as an upload, and audits that. The same checks as the C-STORE receiver
run first (a checked DICOM read, SOP class and instance present), so nothing that cannot be scored is
acknowledged.

The response names the stored and failed instances by their SOP class and instance UIDs, as the standard
requires: those go back to the sender only. Log lines, audit rows and metrics name a part by its position and
the sha256 of its bytes, never by a UID.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any

from pydicom.dataset import Dataset

from radiolens.errors import InputError, RadiolensError
from radiolens.io import formats
from radiolens.serve.store.spool import Spool, SpoolError

log = logging.getLogger("radiolens.serve")

#: The only part type accepted (PS3.18 8.6.1.1.1: Part-10 instances; no bulk data / metadata parts).
DICOM_TYPE = "application/dicom"
#: The response's media type (PS3.18 10.5.3: the Store Instances Response Module, DICOM JSON).
RESPONSE_TYPE = "application/dicom+json"
#: Failure Reason (0008,1197) values, PS3.4 GG.4 / PS3.18 10.5.3: the same statuses the C-STORE receiver answers.
CANNOT_UNDERSTAND, OUT_OF_RESOURCES, NOT_MATCHING = 0xC000, 0xA700, 0xA900
#: The audit event of a refused part (the C-STORE receiver's, so both receivers read alike in the log).
REFUSED_EVENT = "dicom_refused"
VIA = "stow"

#: ``audit(event, outputs, input_sha256)``: writes one audit row as the caller (the request's principal).
Auditor = Callable[[str, dict, str], None]


class MediaTypeError(InputError):
    """The request body is not ``multipart/related; type="application/dicom"`` (HTTP 415)."""

    code = "unsupported_media_type"


class MultipartError(InputError):
    """The body claims to be multipart/related but has no parts, no boundary, or broken boundaries (HTTP 400)."""

    code = "bad_request"


def _header_message(content_type: str, body: bytes = b"", headersonly: bool = False):
    raw = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    return BytesParser(policy=policy.HTTP).parsebytes(raw, headersonly=headersonly)


def check_media_type(content_type: str | None) -> None:
    """Refuse (415) anything but a multipart/related body of DICOM Part-10 parts, before the body is read."""
    msg = _header_message(content_type or "", headersonly=True)
    if msg.get_content_type() != "multipart/related" or \
            str(msg.get_param("type", "")).strip().lower() != DICOM_TYPE:
        raise MediaTypeError('STOW-RS takes multipart/related; type="application/dicom" (DICOM Part-10 instances)')


def split_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(content type, bytes) of every part, parsed by the standard library's MIME parser (binary-safe: parts
    come back byte for byte). Raises MediaTypeError or MultipartError."""
    check_media_type(content_type)
    msg = _header_message(content_type, body)
    if msg.get_boundary() is None:
        raise MultipartError("multipart/related body without a boundary parameter")
    if msg.defects or not msg.is_multipart():
        names = ", ".join(sorted({type(d).__name__ for d in msg.defects})) or "not multipart"
        raise MultipartError(f"malformed multipart/related body ({names})")
    # a part without a Content-Type of its own has the type the body declares (RFC 2387 "type" parameter)
    parts = [(p.get_content_type() if "Content-Type" in p else DICOM_TYPE, p.get_payload(decode=True) or b"")
             for p in msg.iter_parts()]
    if not parts:
        raise MultipartError("multipart/related body without parts")
    return parts


@dataclass
class PartResult:
    """What became of one part; ``sop_class``/``sop_uid`` only for the response (never logged or audited)."""

    index: int
    stored: bool
    sop_class: str = ""
    sop_uid: str = ""
    failure: int = 0
    reason: str = ""


@dataclass
class StoreResult:
    parts: list[PartResult] = field(default_factory=list)

    @property
    def status(self) -> int:
        """200 every instance stored, 202 some (PS3.18 10.5.3.1 "Accepted": some failed), 409 none."""
        stored = sum(p.stored for p in self.parts)
        return 200 if stored == len(self.parts) else 202 if stored else 409

    def response(self) -> dict[str, Any]:
        """The Store Instances Response Module as DICOM JSON (built by pydicom, which writes the format)."""
        ds = Dataset()
        ok = [p for p in self.parts if p.stored]
        failed = [p for p in self.parts if not p.stored]
        if ok:
            ds.ReferencedSOPSequence = [_ref(p) for p in ok]
        if failed:
            ds.FailedSOPSequence = [_ref(p, p.failure) for p in failed]
        return ds.to_json_dict()


def _ref(part: PartResult, failure: int | None = None) -> Dataset:
    item = Dataset()
    if part.sop_class:
        item.ReferencedSOPClassUID = part.sop_class
    if part.sop_uid:
        item.ReferencedSOPInstanceUID = part.sop_uid
    if failure is not None:
        item.FailureReason = failure
    return item


class StowReceiver:
    """Checks each part, queues the good ones in the spool, audits the refused ones (PHI-free reasons)."""

    def __init__(self, spool: Spool, counter=None):
        self.spool, self.counter = spool, counter  # counter: prometheus, with an "outcome" label

    def store(self, content_type: str, body: bytes, audit: Auditor, study: str | None = None,
              abandon: threading.Event | None = None) -> StoreResult:
        """Every part of ``body`` stored or failed; raises MediaTypeError / MultipartError for the whole body.
        Blocking (parsing, fsync): call it off the event loop. Once ``abandon`` is set (the request timed out and
        its sender was told it failed) no further part is stored; the sender sends them again."""
        result = StoreResult()
        for i, (part_type, data) in enumerate(split_parts(content_type, body), start=1):
            if abandon is not None and abandon.is_set():
                log.warning("STOW-RS request abandoned after %d of its parts", i - 1)
                break
            result.parts.append(self._store_part(i, part_type, data, study, audit))
        return result

    def _store_part(self, index: int, part_type: str, data: bytes, study: str | None, audit: Auditor) -> PartResult:
        digest = hashlib.sha256(data).hexdigest()
        name = f"part {index}"  # what errors call the part: never a UID or a file name
        if part_type != DICOM_TYPE:
            return self._refuse(audit, index, digest, CANNOT_UNDERSTAND, f"{name}: not application/dicom")
        if not formats.is_part10(data):  # the preamble and file meta group PS3.18 requires
            return self._refuse(audit, index, digest, CANNOT_UNDERSTAND, f"{name}: not a DICOM Part-10 instance")
        try:
            ds = formats.open_dicom(data, name=name)  # the checked read (size, truncation, padding, deflate)
            for _ in ds.iterall():  # decode every element now, so damage shows here and not in the gateway
                pass
            sop_class, sop_uid = str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
            study_uid = str(ds.get("StudyInstanceUID", "") or "")
        except RadiolensError as exc:  # typed, PHI-free messages
            return self._refuse(audit, index, digest, CANNOT_UNDERSTAND, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # pydicom's own errors can quote values: the type only
            return self._refuse(audit, index, digest, CANNOT_UNDERSTAND, f"{name}: cannot parse the data set "
                                f"({type(exc).__name__})")
        if not sop_class or not sop_uid:
            return self._refuse(audit, index, digest, CANNOT_UNDERSTAND, f"{name}: no SOP class or instance UID",
                                sop_class, sop_uid)
        if study is not None and study_uid != study:
            return self._refuse(audit, index, digest, NOT_MATCHING, f"{name}: study instance UID differs from the "
                                "study in the request path", sop_class, sop_uid)
        try:
            self.spool.put(data, {"via": VIA})
        except SpoolError as exc:  # the message names no path and no instance; the sender may retry later
            return self._refuse(audit, index, digest, OUT_OF_RESOURCES, f"{name}: {exc}", sop_class, sop_uid,
                                outcome="out_of_resources")
        self._count("queued")
        return PartResult(index, True, sop_class, sop_uid)

    def _refuse(self, audit: Auditor, index: int, digest: str, failure: int, reason: str, sop_class: str = "",
                sop_uid: str = "", outcome: str = "refused") -> PartResult:
        log.warning("STOW-RS part %d not stored (0x%04X): %s", index, failure, reason)
        self._count(outcome)
        try:
            audit(REFUSED_EVENT, {"reason": reason, "via": VIA, "status": f"0x{failure:04X}"}, digest)
        except Exception as exc:  # the sender still gets its answer; the failure is logged (no PHI in it)
            log.error("could not audit %s (%s)", REFUSED_EVENT, type(exc).__name__)
        return PartResult(index, False, sop_class, sop_uid, failure, reason)

    def _count(self, outcome: str) -> None:
        if self.counter is not None:
            self.counter.labels(outcome).inc()

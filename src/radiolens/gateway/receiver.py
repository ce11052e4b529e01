"""The C-STORE SCP (pynetdicom): who may associate, what is accepted, and the acknowledgement rule.

An instance is acknowledged (status 0x0000) only once it is in the spool, fsync'ed; every C-STORE gets a status,
also on bad data: a data set that cannot be parsed 0xC000 ("cannot understand"), one whose SOP class or instance
does not match the request 0xA900, a spool that cannot take it 0xA700 ("out of resources", the sender retries).
Associations from calling AE titles outside the allow-list are rejected (A-ASSOCIATE-RJ, "calling AE title not
recognised"). Every refusal is audited; a refusal never takes the receiver down.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from radiolens.gateway.config import GatewayConfig
from radiolens.gateway.processor import INSTANCE_NAME
from radiolens.io import formats
from radiolens.serve.store.spool import Spool, SpoolError

log = logging.getLogger("radiolens.gateway")

#: Transfer syntaxes accepted: those radiolens decodes (pydicom with pylibjpeg / GDCM), so nothing is
#: acknowledged that could not be scored for want of a decoder.
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
                     JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless]

SUCCESS, OUT_OF_RESOURCES, NOT_MATCHING, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000

#: ``audit(event, outputs, input_sha256)``: the gateway's audit writer.
Auditor = Callable[[str, dict, str], None]


def _ae_text(value) -> str:
    """An AE title as received, safe to log (it names a device, but a peer controls its bytes)."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text.strip())[:16]


def server_ssl_context(config: GatewayConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(config.tls.certfile.expanduser()), str(config.tls.keyfile.expanduser()))
    if config.tls.ca_file is not None:
        ctx.load_verify_locations(str(config.tls.ca_file.expanduser()))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Receiver:
    def __init__(self, config: GatewayConfig, spool: Spool, audit: Auditor, on_queued: Callable[[], None],
                 counter=None):
        self.config, self.spool, self.audit, self.on_queued = config, spool, audit, on_queued
        self.counter = counter  # prometheus Counter with an "outcome" label, or None
        self.ae = AE(ae_title=config.ae_title)
        self.ae.maximum_associations = config.max_associations
        self.ae.maximum_pdu_size = config.max_pdu
        self.ae.network_timeout = config.network_timeout_s
        self.ae.require_called_aet = True  # an association addressed to another AE title is not for us
        self.ae.require_calling_aet = [p.ae_title for p in config.peers.values()]
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self._server = None

    def _count(self, outcome: str) -> None:
        if self.counter is not None:
            self.counter.labels(outcome).inc()

    # ------------------------------------------------------------------ handlers
    def _on_rejected(self, event) -> None:
        calling = _ae_text(event.assoc.requestor.ae_title)
        log.warning("association from calling AE %s rejected: not in the allow-list", calling)
        self._count("association_rejected")
        self._safe_audit("dicom_refused", {"reason": "calling AE title not allowed", "calling_ae": calling}, "")

    def _safe_audit(self, event: str, outputs: dict, input_sha256: str) -> None:
        try:
            self.audit(event, outputs, input_sha256)
        except Exception as exc:  # the status still goes back; the failure is logged (no PHI in it)
            log.error("could not audit %s (%s)", event, type(exc).__name__)

    def _on_store(self, event) -> int:
        calling = _ae_text(event.assoc.requestor.ae_title)
        try:
            data = event.encoded_dataset(include_meta=True)
            digest = hashlib.sha256(data).hexdigest()
        except Exception as exc:
            return self._refuse(calling, "", CANNOT_UNDERSTAND, f"unreadable request ({type(exc).__name__})")
        try:
            # the io layer's checked read, as for a file: a truncated or inconsistent encoding is refused now,
            # while the sender can still be told, not after it was acknowledged
            ds = formats.open_dicom(data, name=INSTANCE_NAME)
            for _ in ds.iterall():  # every element decoded, so damage anywhere shows
                pass
            sop_class, sop_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
        except Exception as exc:
            return self._refuse(calling, digest, CANNOT_UNDERSTAND, f"cannot parse the data set "
                                f"({type(exc).__name__})")
        req = event.request
        if sop_class != str(req.AffectedSOPClassUID) or sop_uid != str(req.AffectedSOPInstanceUID):
            return self._refuse(calling, digest, NOT_MATCHING, "data set does not match the request's SOP class "
                                "or instance")
        try:
            self.spool.put(data, {"via": "dimse", "calling_ae": calling})
        except SpoolError as exc:
            log.error("C-STORE from %s not accepted: %s", calling, exc)
            self._count("out_of_resources")
            return OUT_OF_RESOURCES
        self._count("queued")
        self.on_queued()
        return SUCCESS

    def _refuse(self, calling: str, digest: str, status: int, reason: str) -> int:
        log.warning("C-STORE from %s refused (0x%04X): %s", calling, status, reason)
        self._count("refused")
        self._safe_audit("dicom_refused", {"reason": reason, "calling_ae": calling, "status": f"0x{status:04X}"},
                         digest)
        return status

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> tuple[str, int]:
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, self._on_rejected)]
        self._server = self.ae.start_server((self.config.host, self.config.port), block=False,
                                            evt_handlers=handlers, ssl_context=server_ssl_context(self.config))
        host, port = self._server.server_address[:2]
        log.info("DICOM receiver %s listening on %s:%d%s", self.config.ae_title, host, port,
                 " (TLS)" if self.config.tls else "")
        return host, port

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

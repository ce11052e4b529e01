"""One DICOM node: the receiver, the spool, the processor and the sender around one ``Service`` (the same
de-identification, prediction flow, audit chain and metrics as the HTTP API), started and stopped together.

It runs as its own process (``radiolens gateway run``) next to the HTTP API on the same state folder and
database; instances that arrive over STOW-RS (the service's ``/dicomweb/studies`` route)
land in the same spool and are scored here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import Counter, Gauge

from radiolens.errors import ConfigError
from radiolens.gateway.config import GatewayConfig
from radiolens.gateway.processor import GATEWAY_ROLE, GATEWAY_USER, Processor
from radiolens.gateway.receiver import Receiver
from radiolens.gateway.sender import Sender
from radiolens.serve.store import audit as audit_log
from radiolens.serve.store.spool import DEAD, INBOX, OUTBOX, SPOOL_SUBDIR, WORK, Spool

log = logging.getLogger("radiolens.gateway")

#: The audit events the gateway writes (``audit_log.event`` is at most 16 characters).
EVENTS = ("dicom_refused", "dicom_skipped", "dicom_sent", "dicom_send_retry", "dicom_deadletter")


def spool_dir(state_dir: Path) -> Path:
    return Path(state_dir) / SPOOL_SUBDIR


class Gateway:
    def __init__(self, config: GatewayConfig, service, *, accept_any_calling_ae: bool = False):
        if not config.peers and not accept_any_calling_ae:
            raise ConfigError("the gateway configuration lists no peers: no calling AE title would be allowed to "
                              "send (add peers, or accept any calling AE on purpose)")
        self.config, self.service = config, service
        # pynetdicom's debug and info logs print request attributes (the original SOP Instance UID) and, at
        # debug, whole data sets: kept to warnings, as the service does for pydicom
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        self.spool = Spool(spool_dir(service.settings.state_dir), service.settings.resolved_secret())
        reg = service.metrics.registry
        self.m_received = Counter("radiolens_dicom_received_total", "C-STORE requests by outcome",
                                  ["outcome"], registry=reg)
        self.m_processed = Counter("radiolens_dicom_processed_total", "spooled instances by outcome",
                                   ["outcome"], registry=reg)
        self.m_sent = Counter("radiolens_dicom_send_attempts_total", "result deliveries by outcome",
                              ["outcome"], registry=reg)
        spool_items = Gauge("radiolens_dicom_spool_items", "items in the DICOM spool", ["queue"], registry=reg,
                            multiprocess_mode="livemax")
        for queue in (INBOX, WORK, OUTBOX, DEAD):
            spool_items.labels(queue).set_function(lambda q=queue: self.spool.count(q))
        self.sender = Sender(config, self.spool, self._audit, self.m_sent)
        self.processor = Processor(config, self.spool, service, self._audit, self.sender.wake.set, self.m_processed)
        self.receiver = Receiver(config, self.spool, self._audit, self.processor.wake.set, self.m_received)

    def _audit(self, event: str, outputs: dict, input_sha256: str, study_ref: str = "", *,
               prediction_id: str = "", model_sha256: str = "", latency_ms: float = 0.0) -> None:
        with audit_log.writer(self.service.sessions) as s:
            audit_log.append(s, audit_log.AuditEvent(event, GATEWAY_USER, GATEWAY_ROLE, prediction_id,
                                                     model_sha256 or self.service.bundle.sha256, input_sha256,
                                                     study_ref, outputs, latency_ms))

    @property
    def port(self) -> int:
        return self.receiver.port

    def start(self) -> Gateway:
        recovered = self.spool.recover()
        if recovered:
            log.warning("%d received instance(s) were being scored when the gateway stopped: queued again",
                        recovered)
        self.processor.start()
        self.sender.start()
        self.receiver.start()
        return self

    def stop(self) -> None:
        """Stop taking associations first, then finish the instance being scored and the send in progress;
        whatever is still queued stays in the spool for the next start."""
        self.receiver.stop()
        self.processor.stop()
        self.sender.stop()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""Spool inbox -> scored -> results in the outbox, one instance at a time, through the service's one prediction
flow (de-identification for storage, input gate, score, heatmap, audit: ``Service.predict_served``).

The original data set is read from the spool only here, only for as long as its results take to build (they
carry its UIDs and patient module back to the archive); it is never logged, stored or audited. Audit rows name
the de-identified study and a sha256 of the bytes as received.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from radiolens.errors import RadiolensError
from radiolens.gateway.config import GatewayConfig
from radiolens.gateway.loop import Loop
from radiolens.gateway.results import result_objects
from radiolens.gateway.routing import skip_reason
from radiolens.io import formats
from radiolens.serve.store.spool import WORK, Item, Spool, SpoolError

log = logging.getLogger("radiolens.gateway")

#: ``user_id`` / ``role`` of the gateway's rows in the audit log and of its predictions.
GATEWAY_USER, GATEWAY_ROLE = 0, "dicom"
INSTANCE_NAME = "received instance"  # what errors call the instance (never its file name or UIDs)


@dataclass
class Outcome:
    status: str  # "scored", "skipped", "refused"
    reason: str = ""
    prediction_id: str = ""


class Processor(Loop):
    thread_name, idle_s = "radiolens-dicom-processor", 1.0

    def __init__(self, config: GatewayConfig, spool: Spool, service, audit, on_posted, counter=None):
        super().__init__()
        self.config, self.spool, self.service, self.audit, self.on_posted = config, spool, service, audit, on_posted
        self.counter = counter

    def destination(self, meta: dict[str, Any]) -> dict[str, Any] | None:
        """Where results of an instance received with ``meta`` go, or None (not sent)."""
        d = self.config.destination
        if d.kind == "none":
            return None
        if d.kind == "stow":
            return {"kind": "stow", "url": d.stow_url}
        peer = self.config.peers[d.peer] if d.kind == "peer" else None
        if d.kind == "calling_ae":
            if meta.get("via") != "dimse":
                return {"kind": "undeliverable", "reason": "received over DICOMweb: no calling AE to answer"}
            peer = self.config.peer_for(str(meta.get("calling_ae", "")))
            if peer is None or not peer.addressable:
                return {"kind": "undeliverable", "reason": "the calling AE has no host and port in peers"}
        return {"kind": "dimse", "ae_title": peer.ae_title, "host": peer.host, "port": peer.port}

    def process(self, item: Item) -> Outcome:
        data = item.parts["instance"]
        digest = hashlib.sha256(data).hexdigest()
        try:
            ds = formats.open_dicom(data, name=INSTANCE_NAME)
        except RadiolensError as exc:
            return self._refused(item, digest, "", f"{type(exc).__name__}: {exc}")
        study_ref = self.service.ingestor.remap_uid(str(ds.get("StudyInstanceUID", "") or ""))
        reason = skip_reason(ds, self.config.routing)
        if reason is not None:
            log.info("instance %s not scored: %s", item.id[-8:], reason)
            self.audit("dicom_skipped", {"reason": reason, "via": item.meta.get("via", "")}, digest, study_ref)
            self._count("skipped")
            return Outcome("skipped", reason)
        try:
            served = self.service.predict_served(data, "application/dicom", GATEWAY_USER, GATEWAY_ROLE,
                                                 heatmap=self.config.heatmap_capture)
        except RadiolensError as exc:  # typed, PHI-free messages (a burned-in refusal, an undecodable image)
            return self._refused(item, digest, study_ref, f"{type(exc).__name__}: {exc}")
        result = served.result
        dest = self.destination(item.meta)
        if dest is not None:
            objects = result_objects(ds, result["study_ref"], self.service.ingestor.remap_uid(str(ds.SOPInstanceUID)),
                                     served, self.config.heatmap_capture)
            del ds
            self.spool.post(item.id, objects, {"prediction_id": result["id"], "study_ref": result["study_ref"],
                                               "model_sha256": result["model"]["sha256"],
                                               "input_sha256": digest, "dest": dest})
            self.on_posted()
        self._count("scored")
        return Outcome("scored", prediction_id=result["id"])

    def _refused(self, item: Item, digest: str, study_ref: str, reason: str) -> Outcome:
        log.warning("instance %s not scored: %s", item.id[-8:], reason)
        self.audit("dicom_refused", {"reason": reason, "via": item.meta.get("via", "")}, digest, study_ref)
        self._count("refused")
        return Outcome("refused", reason)

    def _count(self, outcome: str) -> None:
        if self.counter is not None:
            self.counter.labels(outcome).inc()

    def run_once(self) -> bool:
        """Process one waiting instance; False when the inbox is empty."""
        try:
            item = self.spool.claim()
        except SpoolError as exc:
            log.error("%s; moved to the dead-letter folder", exc)
            return True
        if item is None:
            return False
        try:
            self.process(item)
        except Exception as exc:
            # Unexpected (a bug, the database gone): set aside in the dead-letter folder rather than retried in a
            # loop; `radiolens gateway requeue` queues it again. Only the class name is logged: a message
            # raised while reading a data set may quote its values.
            log.error("instance %s failed (%s): moved to the dead-letter folder", item.id[-8:], type(exc).__name__)
            self._count("failed")
            try:  # audited first: whatever is seen in the dead-letter folder has its row
                self.audit("dicom_refused", {"reason": f"internal error ({type(exc).__name__}); dead-lettered",
                                             "via": item.meta.get("via", "")},
                           hashlib.sha256(item.parts["instance"]).hexdigest(), "")
            except Exception as audit_exc:
                log.error("could not audit the failure (%s)", type(audit_exc).__name__)
            self.spool.dead_letter(item.id, queue=WORK)
            return True
        self.spool.finish(item.id)
        return True

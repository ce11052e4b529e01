"""Outbox -> the destination: C-STORE SCU (pynetdicom) or STOW-RS (dicomweb-client), with retries and
exponential backoff; what still fails after ``send.max_attempts`` goes to the dead-letter folder. Every attempt
is audited (delivered, retry, dead letter) with the result objects' own UIDs and the de-identified study."""

from __future__ import annotations

import logging
import os
import ssl
import time
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from radiolens.gateway.config import GatewayConfig
from radiolens.gateway.loop import Loop
from radiolens.gateway.results import decode
from radiolens.serve.store.spool import OUTBOX, Spool, SpoolError

log = logging.getLogger("radiolens.gateway")

#: C-STORE response statuses that mean "stored": success and the PS3.4 warnings (coercion, elements discarded).
STORED = {0x0000, 0x0001, 0xB000, 0xB006, 0xB007}


class SendError(Exception):
    """One attempt failed; the message is PHI-free (statuses, exception class names)."""


def _client_ssl(config: GatewayConfig) -> ssl.SSLContext | None:
    if config.tls is None or not config.destination.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(config.tls.ca_file.expanduser()) if config.tls.ca_file else None)
    ctx.load_cert_chain(str(config.tls.certfile.expanduser()), str(config.tls.keyfile.expanduser()))
    return ctx


def send_dimse(config: GatewayConfig, dest: dict[str, Any], datasets: list) -> None:
    ae = AE(ae_title=config.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.send.timeout_s
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ctx = _client_ssl(config)
    assoc = ae.associate(dest["host"], int(dest["port"]), ae_title=dest["ae_title"],
                         tls_args=(ctx, dest["host"]) if ctx else None)
    if not assoc.is_established:
        raise SendError("association rejected" if assoc.is_rejected else "association not established")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status is not None and "Status" in status else None
            if code not in STORED:
                raise SendError("no C-STORE response" if code is None else f"C-STORE status 0x{code:04X}")
    finally:
        assoc.release()


def send_stow(config: GatewayConfig, datasets: list) -> None:
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    env = config.destination.stow_credentials_env
    if env and os.environ.get(env):
        user, _, password = os.environ[env].partition(":")
        session.auth = (user, password)
    client = DICOMwebClient(url=str(config.destination.stow_url), session=session)
    try:
        client.store_instances(datasets)
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        raise SendError(f"STOW-RS HTTP {code}") from None
    except requests.RequestException as exc:
        raise SendError(f"STOW-RS {type(exc).__name__}") from None


class Sender(Loop):
    thread_name, idle_s = "radiolens-dicom-sender", 0.5

    def __init__(self, config: GatewayConfig, spool: Spool, audit, counter=None):
        super().__init__()
        self.config, self.spool, self.audit, self.counter = config, spool, audit, counter

    def backoff(self, attempts: int) -> float:
        return min(self.config.send.backoff_s * 2 ** max(attempts - 1, 0), self.config.send.backoff_max_s)

    def deliver(self, item_id: str) -> str:
        """One attempt for one outbox item; returns "delivered", "retry" or "dead_letter"."""
        try:
            item = self.spool.read(OUTBOX, item_id)
        except SpoolError as exc:
            log.error("%s; moved to the dead-letter folder", exc)
            self.spool.dead_letter(item_id)
            return "dead_letter"
        meta, dest = item.meta, item.meta.get("dest", {})
        datasets = [decode(item.parts[k]) for k in sorted(item.parts)]
        refs = {k: str(ds.SOPInstanceUID) for k, ds in zip(sorted(item.parts), datasets, strict=True)}
        attempts = int(meta.get("attempts", 0)) + 1
        t0 = time.perf_counter()
        try:
            if dest.get("kind") == "dimse":
                send_dimse(self.config, dest, datasets)
            elif dest.get("kind") == "stow":
                send_stow(self.config, datasets)
            else:
                raise SendError(str(dest.get("reason", "no destination")))
            error = ""
        except SendError as exc:
            error = str(exc)
        except Exception as exc:  # a network error inside pynetdicom, a TLS failure: never fatal to the loop
            error = type(exc).__name__
        where = {"kind": dest.get("kind", ""), "ae_title": dest.get("ae_title", "")} if dest.get("kind") == "dimse" \
            else {"kind": dest.get("kind", "")}
        outputs = {"destination": where, "objects": refs, "attempt": attempts}
        wait = 0.0
        if not error:
            outcome = "delivered"
        elif attempts >= self.config.send.max_attempts or dest.get("kind") not in ("dimse", "stow"):
            outcome = "dead_letter"
            log.error("results of prediction %s not delivered after %d attempts (%s): dead-lettered",
                      meta.get("prediction_id", "?"), attempts, error)
        else:
            outcome, wait = "retry", self.backoff(attempts)
            log.warning("results of prediction %s: attempt %d failed (%s); next in %.0f s",
                        meta.get("prediction_id", "?"), attempts, error, wait)
        if error:
            outputs["error"] = error
        event = {"delivered": "dicom_sent", "retry": "dicom_send_retry", "dead_letter": "dicom_deadletter"}[outcome]
        self.audit(event, outputs, meta.get("input_sha256", ""), meta.get("study_ref", ""),
                   prediction_id=meta.get("prediction_id", ""), model_sha256=meta.get("model_sha256", ""),
                   latency_ms=(time.perf_counter() - t0) * 1000.0)
        # The outbox changes only after the attempt's audit row: a crash in between repeats the attempt (same
        # UIDs, so the archive still stores each object once) and never leaves an attempt unaudited.
        if outcome == "delivered":
            self.spool.delivered(item_id)
        elif outcome == "dead_letter":
            self.spool.dead_letter(item_id)
        else:
            self.spool.reschedule(item, attempts, time.time() + wait, error)
        if self.counter is not None:
            self.counter.labels(outcome).inc()
        return outcome

    def run_once(self) -> bool:
        """One attempt for every due item; False when none was due."""
        due = self.spool.due()
        for item_id in due:
            if self.stopping:
                break
            self.deliver(item_id)
        return bool(due)

"""The service's state and its prediction flow: ingest (de-identify) -> input-gate hooks -> the pipeline
(:mod:`radiolens.pipeline`: forward pass, input gate, decision, review, heatmap; with micro-batching
(:mod:`radiolens.serve.runtime.batching`) one forward pass for concurrent requests) -> inference hooks (a
withheld output loses its heatmap) ->
``build_prediction_result`` (from the pipeline's record; the hook point) -> artefacts -> one DB transaction
(prediction + audit row).

The audit row is committed before the HTTP response is returned, so an answered prediction is always
audited, and shutdown waits for in-flight work (``drain``) so none is lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radiolens.errors import ConfigError, InputError, NotFoundError
from radiolens.io.image import RadioImage
from radiolens.io.writers.png import display_png, heatmap_png
from radiolens.models.population import scope_of
from radiolens.pipeline import PredictionRecord, prepare
from radiolens.serve.config import DEID_SECRET_ENV, DEID_SECRET_FILE_ENV, ServeSettings
from radiolens.serve.params import is_prediction_id
from radiolens.serve.runtime.batching import MicroBatcher
from radiolens.serve.runtime.hooks import PredictionContext, PredictionHooks
from radiolens.serve.runtime.inference import load_served_model, service_predictor
from radiolens.serve.runtime.ingest import Ingestor
from radiolens.serve.runtime.metrics import ServiceMetrics
from radiolens.serve.runtime.monitoring import SYSTEM_ROLE, SYSTEM_USER, ServiceMonitor
from radiolens.serve.store import audit
from radiolens.serve.store.db import make_engine, session_factory, upgrade
from radiolens.serve.store.state import private_dir, secure_state_dir, write_private
from radiolens.serve.store.tables import Feedback, Prediction, ServiceState
from radiolens.serve.store.worklist import WorklistFilter, worklist_page

log = logging.getLogger("radiolens.serve")


class NotFound(NotFoundError):
    pass


@dataclass(frozen=True)
class Served:
    """One stored and audited prediction: the response body, the pipeline's record (with the heatmap array
    when one was computed) and the de-identified image it was computed from."""

    result: dict[str, Any]
    record: PredictionRecord
    image: RadioImage


class Abandoned(Exception):
    """The request of a prediction timed out (its client got a 504): the work stopped, nothing was stored."""


class Service:
    def __init__(self, settings: ServeSettings, hooks: PredictionHooks | None = None):
        self.settings = settings
        # pydicom logs and warns about malformed elements quoting their values, which may be PHI.
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        # a .pt ModelBundle, or an ONNX export alone (serve.runtime.inference.ExportedModel): .info, .sha256
        self.bundle = load_served_model(settings)
        self.predictor = service_predictor(settings, self.bundle)
        secure_state_dir(settings.state_dir)  # 0700 / 0600: de-identified images and the audit database
        self.artefact_dir = private_dir(settings.state_dir / "artefacts")
        self.ingestor = Ingestor(settings.resolved_secret(), pixel_text=settings.pixel_text)
        self.db_url = settings.resolved_db_url()
        self.engine = make_engine(self.db_url)
        if settings.auto_migrate:
            upgrade(self.db_url, self.engine)
        self.sessions = session_factory(self.engine)
        try:
            check_deid_secret(self.sessions, self.ingestor.secret_fingerprint, settings.accept_new_deid_secret)
        except BaseException:
            self.engine.dispose()
            raise
        self.metrics = ServiceMetrics()
        self.monitor = ServiceMonitor(settings.monitor, engine=self.engine, sessions=self.sessions,
                                      registry=self.metrics.registry, model_sha256=self.bundle.sha256,
                                      profile=self.predictor.profile, gate=self.predictor.gate,
                                      model_ref=self.model_ref)
        self.hooks = self.monitor.hooks().extended(hooks or PredictionHooks())
        self._warm_up()
        self.batcher = MicroBatcher(self.predictor.predict_batch, settings.batch_max_size,
                                    settings.batch_max_wait_ms, settings.inference_workers,
                                    observe=self.metrics.batch_size.observe) if settings.batching else None
        self.shutting_down = False
        self._in_flight = 0
        self._cv = threading.Condition()

    # ------------------------------------------------------------------ lifecycle
    def model_ref(self) -> dict[str, Any]:
        return self.predictor.provenance.to_dict()

    def _warm_up(self) -> None:
        """One throw-away inference (and heatmap) so the first real request does not pay for lazy imports."""
        from radiolens.io.image import ImageMeta

        h, w = self.bundle.info.input_size
        dummy = RadioImage(pixels=np.full((h, w), 0.5, dtype=np.float32), meta=ImageMeta(source_format="png"))
        ready = prepare(self.bundle.info, dummy)
        self.predictor.predict(ready)
        if self.heatmaps_available:  # directly: the gate may refuse the dummy, and it is the CAM imports we warm
            self.predictor.cam(ready, 0)

    @property
    def heatmaps_available(self) -> bool:
        """Heatmaps are on and can be drawn: Grad-CAM on the PyTorch model, or from an ONNX export's feature
        maps (an export without that output has none, and the response's ``heatmap_url`` is null)."""
        return self.settings.heatmaps and self.predictor.heatmap_method is not None

    def db_ok(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def drain(self, timeout_s: float = 120.0) -> bool:
        """Wait until no prediction is being computed or written (called on shutdown)."""
        self.shutting_down = True
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.monitor.close()
        self.metrics.close()  # with several workers: this one's live gauges stop counting
        self.engine.dispose()

    # ------------------------------------------------------------------ artefacts
    def artefact(self, prediction_id: str, kind: str) -> Path:
        if not (len(prediction_id) == 32 and all(c in "0123456789abcdef" for c in prediction_id)):
            raise NotFound("no such prediction")
        return self.artefact_dir / f"{prediction_id}.{kind}.png"

    def _write(self, path: Path, data: bytes) -> None:
        write_private(path, data)

    # ------------------------------------------------------------------ prediction
    def predict(self, data: bytes, content_type: str | None, user_id: int, role: str,
                heatmap: bool = True, abandon: threading.Event | None = None) -> dict[str, Any]:
        """``abandon`` set (the request timed out): stop at the next step, store and audit nothing."""
        return self.predict_served(data, content_type, user_id, role, heatmap, abandon).result

    def predict_served(self, data: bytes, content_type: str | None, user_id: int, role: str,
                       heatmap: bool = True, abandon: threading.Event | None = None) -> Served:
        """As :meth:`predict`, also handing back the pipeline's record and the de-identified image, for drivers
        that write their own outputs from them (the DICOM gateway's SR and heatmap capture)."""
        with self._cv:
            self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            return self._predict(data, content_type, user_id, role, heatmap, abandon or threading.Event())
        finally:
            self.metrics.in_flight.dec()
            with self._cv:
                self._in_flight -= 1
                self._cv.notify_all()

    def _predict(self, data: bytes, content_type: str | None, user_id: int, role: str,
                 heatmap: bool, abandon: threading.Event) -> Served:
        def step() -> None:
            if abandon.is_set():
                log.info("prediction abandoned: its request timed out; nothing stored")
                raise Abandoned()

        t0 = time.perf_counter()
        step()
        ing = self.ingestor.ingest(data, content_type)
        del data
        step()
        pid = uuid.uuid4().hex
        ctx = PredictionContext(prediction_id=pid, bundle=self.bundle, image=ing.image,
                                source_format=ing.source_format, study_ref=ing.study_ref,
                                input_sha256=ing.input_sha256, user_id=user_id, role=role)
        for gate in self.hooks.input_gates:
            gate(ctx)
        step()
        want_heat = heatmap and self.heatmaps_available
        ready = prepare(self.bundle.info, ing.image)
        # forward pass, input gate, decision, review and (from the same forward pass where the head allows)
        # the heatmap: with micro-batching, in one batch with concurrent requests' images
        if self.batcher is not None:
            record = self.batcher.submit(ready, want_heat)
        else:
            record = self.predictor.predict(ready, heatmap=want_heat)
            self.metrics.batch_size.observe(1)
        step()
        ctx.record, ctx.probabilities, ctx.embedding = record, record.probabilities, record.embedding
        ctx.status, ctx.status_reason = record.status, record.gate.reason()
        for inference_hook in self.hooks.inference_hooks:
            inference_hook(ctx)
        if ctx.status != "ok" and record.assessed:  # an inference hook withheld the output
            record = ctx.record = record.withheld(ctx.status, ctx.status_reason)
        step()
        image_png, size = display_png(ing.image.pixels, self.settings.display_max_side)
        heat_png = heatmap_png(record.heatmap.array, size) if record.heatmap is not None else None
        pixels_png = ing.full_depth.png()  # the reading viewer's copy: de-identified, full bit depth
        created = audit.utcnow()
        latency_ms = (time.perf_counter() - t0) * 1000.0
        result = build_prediction_result(ctx, record, created, latency_ms, has_heatmap=heat_png is not None,
                                         pixels=ing.full_depth.describe())
        for hook in self.hooks.result_hooks:
            hook(ctx, result)
        result = json.loads(audit.canonical_json(result))  # plain JSON types from here on (hooks may add numpy)
        self.metrics.inference_seconds.labels(str(want_heat).lower()).observe(latency_ms / 1000.0)

        step()  # the last point of return: from here on the prediction is stored and audited
        # Artefacts first (opaque names), then the DB rows: an audited prediction always has its artefacts,
        # and a failed transaction removes them again (a crash in between leaves at most an orphan file).
        artefacts = {"image": image_png, "pixels": pixels_png} | \
            ({"heatmap": heat_png} if heat_png is not None else {})
        written = []
        for kind, data in artefacts.items():
            written.append(self.artefact(pid, kind))
            self._write(written[-1], data)
        # The chained row binds what will be served: the result JSON and each artefact file, by sha256.
        result_json = audit.canonical_json(result)
        outputs = audit.prediction_outputs(result, result_json, artefacts)
        try:
            with audit.writer(self.sessions) as s:
                s.add(Prediction(id=pid, created_at=created, user_id=user_id, model_sha256=self.bundle.sha256,
                                 input_sha256=ing.input_sha256, study_ref=ing.study_ref,
                                 result_json=result_json, has_heatmap=heat_png is not None,
                                 status=result["status"], decision=result["decision"]["label"][:128],
                                 review_flag=bool(result["review"]["flag"])))
                s.flush()
                audit.append(s, audit.AuditEvent("prediction", user_id, role, pid, self.bundle.sha256,
                                                 ing.input_sha256, ing.study_ref, outputs, latency_ms))
                for record_hook in self.hooks.record_hooks:
                    record_hook(s, ctx, result)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        for after in self.hooks.after_commit:
            try:
                after(ctx, result)
            except Exception as exc:  # the prediction is stored and audited: answer it whatever a hook does
                log.error("after-commit hook failed (%s) for prediction %s", type(exc).__name__, pid)
        for p in result["probabilities"]:
            self.metrics.predictions.labels(p["name"], "positive" if p["positive"] else "negative").inc()
        if result["review"]["flag"]:
            self.metrics.reviews.inc()
        log.info("prediction %s done in %.0f ms (review=%s)", pid, latency_ms, result["review"]["flag"])
        return Served(result, record, ing.image)

    # ------------------------------------------------------------------ reads and feedback
    def audit_access(self, user_id: int, role: str, resource: str, event: str = audit.READ,
                     prediction: Prediction | None = None, prediction_id: str = "", **details: Any) -> None:
        """One chained row for a request that reads (or is refused): who, what (``resource`` and ``details``:
        never PHI, never key material) and, for a prediction, which one. Committed before anything is served."""
        ref = (prediction.id, prediction.model_sha256, prediction.input_sha256, prediction.study_ref) \
            if prediction is not None else (prediction_id if is_prediction_id(prediction_id) else "", "", "", "")
        with audit.writer(self.sessions) as s:
            audit.append(s, audit.AuditEvent(event, int(user_id), role, *ref, {"resource": resource, **details}, 0.0))

    def _checked(self, prediction_id: str, user_id: int, role: str, resource: str,
                 kinds: tuple[str, ...] = ()) -> tuple[Prediction, list[Feedback], dict[str, bytes], dict]:
        """Load a prediction, its feedback and the requested artefacts, check them against the audit chain,
        and audit the read; an unknown id is audited and 404, a failed check audited and refused."""
        if not is_prediction_id(prediction_id):
            self.audit_access(user_id, role, resource, found=False)
            raise NotFound("no such prediction")
        with Session(self.engine) as s:
            pred = s.get(Prediction, prediction_id)
            chained = list(s.scalars(select(audit.AuditEntry)
                                     .where(audit.AuditEntry.prediction_id == prediction_id,
                                            audit.AuditEntry.event.in_(("prediction", "feedback")))
                                     .order_by(audit.AuditEntry.seq)))
            feedback = list(s.scalars(select(Feedback).where(Feedback.prediction_id == prediction_id)
                                      .order_by(Feedback.id)))
            unchained = [r.seq for r in chained if not audit.row_is_chained(s, r)]
        if pred is None and not chained:
            self.audit_access(user_id, role, resource, prediction_id=prediction_id, found=False)
            raise NotFound("no such prediction")
        bound = json.loads(chained[0].outputs_json).get("artefacts") if chained and \
            chained[0].event == "prediction" else None
        data: dict[str, bytes] = {}
        for kind in kinds:
            path = self.artefact(prediction_id, kind)
            if path.is_file() and (bound is None or kind in bound):
                data[kind] = path.read_bytes()
        problems = audit.check_prediction(pred, chained, feedback, self.artefact_dir, kinds, data)
        if unchained:
            problems.append(audit.Mismatch("chain", "its audit rows are not intact in the chain"))
        if problems:
            parts = sorted({m.part for m in problems})
            self.audit_access(user_id, role, resource, event=audit.INTEGRITY_FAILED, prediction=pred,
                              prediction_id=prediction_id, failed=parts)
            log.error("integrity check failed for prediction %s (%s): withheld", prediction_id, ", ".join(parts))
            raise audit.IntegrityCheckFailed(
                f"integrity check failed: the stored {', '.join(parts)} of prediction {prediction_id} "
                "does not match the audit chain; withheld (an administrator should run `radiolens audit verify`)")
        self.audit_access(user_id, role, resource, prediction=pred)
        return pred, feedback, data, json.loads(chained[0].outputs_json)

    def get_prediction(self, prediction_id: str, user_id: int = audit.CLI_USER_ID,
                       role: str = audit.CLI_ROLE) -> dict[str, Any]:
        """The stored result and feedback, after checking both against the audit chain; the read is audited."""
        pred, feedback, _, _ = self._checked(prediction_id, user_id, role, "prediction")
        result = json.loads(pred.result_json)
        result["feedback"] = [_feedback_dict(f) for f in feedback]
        return result

    def read_artefact(self, prediction_id: str, kind: str, user_id: int = audit.CLI_USER_ID,
                      role: str = audit.CLI_ROLE) -> bytes:
        """The artefact's bytes, checked against the sha256 its prediction's chained row holds; audited."""
        _, _, data, _ = self._checked(prediction_id, user_id, role, kind, kinds=(kind,))
        if kind not in data:  # none recorded (a heatmap that was not computed)
            raise NotFound(f"no {kind} stored for this prediction")
        return data[kind]

    def feedback_labels(self) -> list[str]:
        """What ``corrected_label`` may be for the served model."""
        info = self.bundle.info
        allowed = list(info.class_names) + ([info.negative_name] if info.task == "binary" else [])
        if info.task == "multilabel":
            allowed.append("no finding")
        return allowed

    def list_predictions(self, flt: WorklistFilter, limit: int, cursor: str | None, user_id: int,
                         role: str) -> dict[str, Any]:
        """A worklist page for this reader (``serve.store.worklist``). Each listed result is checked against its
        chained row's result hash (a failed one is listed without its content, and audited); the request is
        audited with the ids it listed and the names (not values) of the filters used. Opening a prediction
        runs the full check (feedback and artefact files too)."""
        with Session(self.engine) as s:
            page = worklist_page(s, user_id, flt, limit, cursor)
            ids = [p.id for p, _ in page.rows]
            chained = {r.prediction_id: json.loads(r.outputs_json) for r in s.scalars(
                select(audit.AuditEntry).where(audit.AuditEntry.prediction_id.in_(ids),
                                               audit.AuditEntry.event == "prediction"))} if ids else {}
        items, failed = [], []
        for pred, fb in page.rows:
            result = _listed_result(pred, chained.get(pred.id))
            if result is None:
                failed.append(pred.id)
            items.append(worklist_item(pred, result, fb))
        for pid in failed:
            self.audit_access(user_id, role, "worklist", event=audit.INTEGRITY_FAILED, prediction_id=pid,
                              failed=["result"])
            log.error("integrity check failed for prediction %s (result): withheld from the worklist", pid)
        self.audit_access(user_id, role, "worklist", listed=ids, filters=flt.given(), paged=cursor is not None)
        return {"items": items, "next_cursor": page.next_cursor, "limit": limit}

    def add_feedback(self, prediction_id: str, agree: bool, corrected_label: str | None, user_id: int,
                     role: str, replace: bool = False) -> tuple[dict[str, Any], bool]:
        """Record this reader's feedback; returns it and whether it is new (False: it replaced the reader's
        earlier one, or repeated it unchanged). One current feedback per reader and prediction: without
        ``replace`` an existing one is a ``FeedbackExists``; with it, the earlier row is marked superseded and
        the new row's chained audit row records the old values too. Predictions that were not assessed (the input
        gate refused the image) take no feedback (``NotAssessed``)."""
        t0 = time.perf_counter()
        self.artefact(prediction_id, "image")
        allowed = self.feedback_labels()
        if corrected_label is not None and corrected_label not in allowed:
            raise InputError(f"corrected_label must be one of: {', '.join(allowed)}")
        try:
            with audit.writer(self.sessions) as s:
                pred = s.get(Prediction, prediction_id)
                if pred is None:
                    raise NotFound("no such prediction")
                if json.loads(pred.result_json).get("status", "ok") != "ok":
                    raise NotAssessed("this study was not assessed by the model (the input check refused the "
                                      "image), so there is no output to agree or disagree with")
                current = s.scalar(select(Feedback).where(Feedback.prediction_id == prediction_id,
                                                          Feedback.user_id == user_id,
                                                          Feedback.superseded_at.is_(None)))
                if current is not None and not replace:
                    raise FeedbackExists("you already gave feedback on this prediction: change it with PUT "
                                         f"/v1/predictions/{prediction_id}/feedback")
                if current is not None and (current.agree, current.corrected_label) == (agree, corrected_label):
                    return _feedback_dict(current), False  # unchanged: nothing to record
                now = audit.utcnow()
                outputs: dict[str, Any] = {}
                if current is not None:
                    current.superseded_at = now
                    s.flush()
                    outputs["replaces"] = {"feedback_id": int(current.id), "agree": bool(current.agree),
                                           "corrected_label": current.corrected_label}
                fb = Feedback(prediction_id=prediction_id, created_at=now, user_id=user_id, agree=agree,
                              corrected_label=corrected_label)
                s.add(fb)
                s.flush()
                audit.append(s, audit.AuditEvent("feedback", user_id, role, prediction_id, pred.model_sha256,
                                                 pred.input_sha256, pred.study_ref,
                                                 audit.feedback_outputs(fb) | outputs,
                                                 (time.perf_counter() - t0) * 1000.0))
                out = _feedback_dict(fb)
        except IntegrityError:  # the one-current-feedback index: a concurrent write of the same reader won
            raise FeedbackExists("your feedback on this prediction changed meanwhile: reload and try again") \
                from None
        self.metrics.feedback.labels(str(agree).lower()).inc()
        return out, current is None


class NotAssessed(InputError):
    """Feedback on a prediction the model did not assess: there is nothing to agree or disagree with."""

    code = "not_assessed"


class FeedbackExists(InputError):
    """A reader's second feedback on one prediction sent as new (POST): change it with PUT instead."""

    code = "feedback_exists"


def _listed_result(pred: Prediction, outputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored result when it matches its chained row (by hash, or field by field for rows written before
    the hash existed), else None."""
    if outputs is None:
        return None
    try:
        result = json.loads(pred.result_json)
        if "result_sha256" in outputs:
            return result if audit.sha256_hex(pred.result_json) == outputs["result_sha256"] else None
        fields = audit.served_fields(result)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return result if all(fields.get(k) == v for k, v in outputs.items()) else None


def worklist_item(pred: Prediction, result: dict[str, Any] | None, fb: Feedback | None) -> dict[str, Any]:
    """One worklist row: no study reference, input hash or anything else that could lead back to a patient."""
    if result is None:
        return {"id": pred.id, "created_at": pred.created_at, "integrity": "failed", "status": None,
                "decision": None, "review": None, "probabilities": [], "feedback": {"state": "unavailable"}}
    assessed = result["status"] == "ok"
    feedback: dict[str, Any] = {"state": "not_allowed" if not assessed else "given" if fb else "awaiting"}
    if fb is not None:
        feedback |= {"agree": fb.agree, "corrected_label": fb.corrected_label, "given_at": fb.created_at}
    return {"id": pred.id, "created_at": pred.created_at, "integrity": "ok", "status": result["status"],
            "decision": result["decision"]["label"],
            "review": {"flag": bool(result["review"]["flag"]), "reason": result["review"]["reason"]},
            "probabilities": [{"name": p["name"], "probability": p["probability"], "positive": p["positive"]}
                              for p in result["probabilities"]],
            "feedback": feedback}


#: ``service_state`` key holding the fingerprint of the de-identification secret this database is used with.
DEID_FINGERPRINT_KEY = "deid_secret_fingerprint"
#: Audit events of the check below (defined with the others in serve.store.audit).
DEID_REGISTERED, DEID_ROTATED = audit.DEID_KEY_SET, audit.DEID_KEY_ROTATED


class _Raced(Exception):
    """Another process registered or rotated the fingerprint between our read and our write."""


def _stored_fingerprint(sessions: sessionmaker[Session]) -> str | None:
    try:
        with sessions() as s:
            row = s.get(ServiceState, DEID_FINGERPRINT_KEY)
            return None if row is None else row.value
    except DBAPIError as exc:  # no str(exc): driver messages can quote connection details
        raise ConfigError(f"cannot read service_state from the database ({type(exc.orig).__name__}): is it "
                          "reachable and its schema current (`radiolens db upgrade`)?") from None


def deid_mismatch_message(stored: str, current: str) -> str:
    return (f"the de-identification secret (fingerprint {current}) differs from the one this database was used "
            f"with (fingerprint {stored}): study refs and remapped UIDs made now would no longer match earlier "
            f"ones; restore the previous secret ({DEID_SECRET_ENV} or {DEID_SECRET_FILE_ENV}), or, to change it on "
            "purpose, start once with --accept-new-deid-secret (ServeSettings.accept_new_deid_secret), which "
            "stores the new fingerprint and audits the rotation")


def check_deid_secret(sessions: sessionmaker[Session], fingerprint: str, accept_new: bool = False,
                      actor: tuple[int, str] = (SYSTEM_USER, SYSTEM_ROLE)) -> str:
    """Compare the secret's fingerprint with the one stored for this database; returns what happened:
    "registered" (none stored: stored now, audited), "unchanged", or "rotated" (differed and ``accept_new``:
    replaced, audited with both fingerprints). A different fingerprint without ``accept_new`` is a
    ``ConfigError``: serving on would silently break the link between old and new study refs.

    Several processes may start at once on one database (uvicorn ``--workers``, several hosts): the write is
    an INSERT (first registration) or a compare-and-set UPDATE (rotation) in the audit writer's transaction,
    and losing either race (unique-key violation, or no row matched) means someone else wrote first, so we
    read again and compare with what they stored. Only fingerprints are stored and audited, never the secret.
    """
    user_id, role = actor
    for _ in range(5):
        stored = _stored_fingerprint(sessions)
        if stored == fingerprint:
            return "unchanged"
        if stored is not None and not accept_new:
            raise ConfigError(deid_mismatch_message(stored, fingerprint))
        try:
            with audit.writer(sessions) as s:
                now = audit.utcnow()
                if stored is None:
                    try:
                        s.add(ServiceState(key=DEID_FINGERPRINT_KEY, value=fingerprint, updated_at=now))
                        s.flush()
                    except IntegrityError:
                        raise _Raced() from None
                    # A database that already holds predictions was used before this check existed (or its
                    # state row was removed): say so, the secret then in use is unknown.
                    outputs = {"fingerprint": fingerprint,
                               "earlier_predictions": int(s.scalar(select(func.count()).select_from(Prediction)))}
                    event = DEID_REGISTERED
                else:
                    res = s.execute(update(ServiceState)
                                    .where(ServiceState.key == DEID_FINGERPRINT_KEY, ServiceState.value == stored)
                                    .values(value=fingerprint, updated_at=now))
                    if res.rowcount != 1:
                        raise _Raced()
                    outputs = {"old_fingerprint": stored, "new_fingerprint": fingerprint}
                    event = DEID_ROTATED
                audit.append(s, audit.AuditEvent(event, user_id, role, "", "", "", "", outputs, 0.0))
        except (_Raced, IntegrityError):  # lost the race at flush or at commit
            continue
        except DBAPIError as exc:  # e.g. a lock timeout: typed, one line, no driver message (may quote the URL)
            raise ConfigError(f"cannot record the de-identification secret fingerprint in the database "
                              f"({type(exc.orig).__name__}); start again") from None
        if event == DEID_REGISTERED:
            log.info("de-identification secret fingerprint %s registered for this database", fingerprint)
            return "registered"
        log.warning("de-identification secret rotated: fingerprint %s -> %s (study refs made from now on do not "
                    "match earlier ones)", stored, fingerprint)
        return "rotated"
    raise ConfigError("the stored de-identification secret fingerprint kept changing while the service started "
                      "(several processes rotating it at once?): start again")


def _feedback_dict(f: Feedback) -> dict[str, Any]:
    return {"id": f.id, "prediction_id": f.prediction_id, "created_at": f.created_at, "agree": f.agree,
            "corrected_label": f.corrected_label, "user_id": f.user_id, "superseded_at": f.superseded_at}


def build_prediction_result(ctx: PredictionContext, record: PredictionRecord, created, latency_ms: float,
                            has_heatmap: bool, pixels: dict[str, Any] | None = None) -> dict[str, Any]:
    """THE place a prediction response is assembled, from the pipeline's record (see ``hooks.py`` for
    extending it); batch scoring writes its rows from the same record (``predict.scoring.record_row``).

    ``scope`` sets the image (age band, sex, view as de-identification kept them) beside the model's intended
    population and input size, with a warning for each way it falls outside (:mod:`radiolens.models.population`);
    ``pixels`` describes the full-depth copy at ``pixels_url`` (rows, columns, rescale, default window)."""
    body = record.to_dict()
    pid = ctx.prediction_id
    info = ctx.bundle.info
    return {
        "id": pid,
        "status": body["status"],
        "created_at": created.isoformat(),
        "model": body["model"],
        "probabilities": body["probabilities"],
        "decision": body["decision"],
        "review": body["review"],
        "study_ref": ctx.study_ref,
        "input_sha256": ctx.input_sha256,
        "source_format": ctx.source_format,
        "image_url": f"/v1/predictions/{pid}/image.png",
        "heatmap_url": f"/v1/predictions/{pid}/heatmap.png" if has_heatmap else None,
        "heatmap_target": body["heatmap_target"] if has_heatmap else None,
        "pixels_url": f"/v1/predictions/{pid}/pixels.png" if pixels is not None else None,
        "pixels": pixels,
        "scope": scope_of(getattr(info, "population", None) or {}, info.input_size, ctx.image.meta),
        "latency_ms": round(latency_ms, 3),
        "monitoring": {},
    }

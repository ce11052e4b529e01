"""The append-only, hash-chained audit log: append under a single-writer lock, verify, export.

Each row stores ``row_hash = sha256(prev_hash + canonical_json(content))``. Editing any content column
breaks that row's hash; deleting a row breaks the next row's ``prev_hash`` link (and the sequence);
deleting the newest rows is caught by ``audit_head``, which each append updates in the same transaction.

The database adds its own guards (migrations 0001 and 0003): UPDATE/DELETE/TRUNCATE of ``audit_log`` are
refused, a new row must extend the chain at the head, and ``audit_head`` (seeded with the genesis state at
migration time) can only advance one row at a time. ``verify`` also reports a missing head, missing or
disabled guard triggers, and, given a head recorded outside the database (``expect_head``), a chain that
was consistently rewound to an earlier state, which no check inside the database can see.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import itertools
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from radiolens.errors import InputError, RadiolensError
from radiolens.serve.params import ascii_id, parse_time
from radiolens.serve.store.db import WRITE_LOCK
from radiolens.serve.store.tables import AuditEntry, AuditHead, Feedback, Prediction

GENESIS = "0" * 64
_PG_LOCK_KEY = 7_260_511_001  # pg_advisory_xact_lock key reserved for audit appends
_CONTENT = ("seq", "created_at", "event", "user_id", "role", "prediction_id", "model_sha256", "input_sha256",
            "study_uid", "outputs_json", "latency_ms")
# One writer per process; across processes the database lock below (BEGIN IMMEDIATE / advisory lock).
_PROCESS_LOCK = threading.Lock()
#: The guard triggers the migrations install (0001 + 0003), per dialect; ``verify`` checks they are in force.
GUARD_TRIGGERS = {
    "sqlite": ("audit_log_no_update", "audit_log_no_delete", "audit_log_extend_only", "audit_head_no_insert",
               "audit_head_no_delete", "audit_head_advance_only"),
    "postgresql": ("audit_log_no_change", "audit_log_extend_only", "audit_log_no_truncate", "audit_head_guard",
                   "audit_head_no_truncate"),
}
#: serve.runtime.service.check_deid_secret's events (``audit_log.event`` is VARCHAR(16), which PostgreSQL enforces).
DEID_KEY_SET, DEID_KEY_ROTATED = "deid_key_set", "deid_key_rotated"
#: Every authenticated read (``outputs.resource`` says what was read); a refused key (401, never the key
#: itself); a valid key with the wrong role (403); served data that no longer matches its chained row.
READ, AUTH_FAILED, ACCESS_DENIED, INTEGRITY_FAILED = "read", "auth_failed", "access_denied", "integrity_fail"
#: Password sign-in (``POST /v1/session``): success, a refusal (the reason, the account's user id when the
#: username exists, keyed tags of the typed username and client address, never either in clear nor the
#: password), a refusal by the rate limit, and sign out.
SIGNIN, SIGNIN_FAILED, SIGNIN_LIMITED, SIGNOUT = "signin", "signin_failed", "signin_limited", "signout"
#: Audit events written by the service (the column is free text; these are the values it uses).
EVENTS = ("prediction", "feedback", "key_created", "key_revoked",  # requests
          "account_created", "password_set",  # `radiolens users add|passwd`
          READ, AUTH_FAILED, ACCESS_DENIED, INTEGRITY_FAILED,  # every other request, refusals, tampering
          "drift_alert", "drift_cleared",  # serve.runtime.monitoring
          SIGNIN, SIGNIN_FAILED, SIGNIN_LIMITED, SIGNOUT,  # serve.http.routers.session
          DEID_KEY_SET, DEID_KEY_ROTATED,
          "dicom_refused")  # a STOW-RS part refused (serve.runtime.stow); the gateway's own are gateway.node.EVENTS
#: The stored artefacts of a prediction, ``<artefact_dir>/<prediction id>.<kind>.png``: the 8-bit display copy,
#: the heatmap overlay, and the full-depth de-identified pixels (16-bit grey) for the reading viewer.
ARTEFACT_KINDS = ("image", "heatmap", "pixels")


class AuditIntegrityError(RadiolensError):
    """The audit log cannot be appended to because its stored state was tampered with (e.g. no head)."""

    code = "audit_integrity"


class IntegrityCheckFailed(RadiolensError):
    """Stored data about to be served does not match what its chained audit row recorded: withheld."""

    code = "integrity_check_failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    # SQLite hands back naive datetimes, PostgreSQL aware ones: normalise both to UTC, microseconds.
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _plain(value: Any) -> Any:
    # Hooks may hand us numpy scalars/arrays; anything else unknown is stored as its string form.
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                      default=_plain)


def content_of(row: AuditEntry) -> dict[str, Any]:
    out = {k: getattr(row, k) for k in _CONTENT}
    out["created_at"] = _iso(row.created_at)
    out["seq"], out["user_id"], out["latency_ms"] = int(row.seq), int(row.user_id), float(row.latency_ms)
    return out


def chain_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(content)).encode("ascii")).hexdigest()


@dataclass
class AuditEvent:
    """What a caller knows about one auditable action."""

    event: str
    user_id: int
    role: str
    prediction_id: str
    model_sha256: str
    input_sha256: str
    study_uid: str
    outputs: dict[str, Any]
    latency_ms: float


#: ``user_id``/``role`` recorded for actions taken with the CLI on the database host (no API key involved).
CLI_USER_ID, CLI_ROLE = 0, "cli"


def key_event(event: str, actor_user_id: int, actor_role: str, key_user_id: int, key_role: str,
              expires_at: datetime | None = None) -> AuditEvent:
    """An audit row for API-key management: who acted and which key (its user id and role, and expiry when it
    has one), never the key itself, its hash or its label (labels are free text an admin may fill with a
    person's name)."""
    if event not in ("key_created", "key_revoked", "account_created", "password_set"):
        raise ValueError(f"not a key event: {event}")
    outputs: dict[str, Any] = {"key_user_id": int(key_user_id), "key_role": key_role}
    if expires_at is not None:
        outputs["expires_at"] = _iso(expires_at) + "Z"
    return AuditEvent(event, actor_user_id, actor_role, "", "", "", "", outputs, 0.0)


def lock_chain(session: Session) -> None:
    """Take the chain's cross-process write lock for the rest of the caller's transaction (PostgreSQL advisory
    lock; SQLite already holds ``BEGIN IMMEDIATE`` inside ``writer``). Re-entrant within a transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def append(session: Session, ev: AuditEvent) -> AuditEntry:
    """Add one chained row inside the caller's transaction (which must hold the write lock: see ``writer``)."""
    bind = session.get_bind()
    lock_chain(session)
    head = session.get(AuditHead, 1, with_for_update=bind.dialect.name == "postgresql")
    if head is None:  # migration 0003 seeds it; its absence means someone deleted it
        raise AuditIntegrityError("audit_head is missing: the audit log was tampered with "
                                  "(run `radiolens audit verify`)")
    prev_seq, prev_hash = head.seq, head.row_hash
    created = utcnow()
    row = AuditEntry(seq=prev_seq + 1, created_at=created, event=ev.event, user_id=int(ev.user_id), role=ev.role,
                     prediction_id=ev.prediction_id, model_sha256=ev.model_sha256, input_sha256=ev.input_sha256,
                     study_uid=ev.study_uid, outputs_json=canonical_json(ev.outputs),
                     latency_ms=round(float(ev.latency_ms), 3), prev_hash=prev_hash, row_hash="")
    row.row_hash = chain_hash(prev_hash, content_of(row))
    # Two flushes, in this order, because the database checks each step (migration 0003): the row must
    # extend the chain at the stored head, and the head may only advance by one, to an existing row.
    session.add(row)
    session.flush()
    head.seq, head.row_hash = row.seq, row.row_hash
    session.flush()
    return row


class writer:  # noqa: N801 - used as a context manager, reads like a statement
    """``with writer(sessionmaker) as s:`` a transaction that holds the audit write lock until commit."""

    def __init__(self, factory):
        self._factory = factory

    def __enter__(self) -> Session:
        _PROCESS_LOCK.acquire()
        try:
            self._session = self._factory()
            self._session.connection(execution_options={WRITE_LOCK: True})
        except BaseException:
            _PROCESS_LOCK.release()
            raise
        return self._session

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._session.commit()
            else:
                self._session.rollback()
        finally:
            self._session.close()
            _PROCESS_LOCK.release()


@dataclass
class VerifyReport:
    ok: bool
    rows: int
    head_seq: int
    head_hash: str
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "problems": self.problems}


def parse_head(value: str) -> tuple[int, str]:
    """``"SEQ:HASH"`` (as printed by ``radiolens audit head``) -> (seq, hash); InputError when malformed."""
    seq, sep, digest = value.strip().partition(":")
    digest = digest.lower()
    number = ascii_id(seq)  # ASCII digits within int64 (str.isdigit also accepts superscripts and the like)
    if not sep or number is None or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InputError("expected head must be SEQ:HASH (a sequence number, a colon and 64 hex digits), "
                         "as printed by `radiolens audit head`")
    return number, digest


def guard_problems(engine: Engine) -> list[str]:
    """Guard triggers that are missing or disabled (an attacker with DDL rights removed append-only)."""
    dialect = engine.dialect.name
    expected = GUARD_TRIGGERS.get(dialect)
    if not expected:
        return []
    with engine.connect() as conn:
        if dialect == "sqlite":
            present = set(conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name IN ('audit_log', 'audit_head')").scalars())
        else:  # tgenabled 'D' = disabled, 'R' = fires only in replica sessions: neither protects the table
            present = set(conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled IN ('O', 'A') "
                "AND tgrelid IN (SELECT oid FROM pg_class WHERE relname IN ('audit_log', 'audit_head') "
                "AND relnamespace = to_regnamespace(current_schema())::oid)").scalars())
    return [f"guard trigger {name} is missing or disabled (append-only protection off; "
            "`radiolens db upgrade` restores it after a fresh install)" for name in expected if name not in present]


def verify(engine: Engine, max_problems: int = 50, expect_head: tuple[int, str] | str | None = None,
           artefact_dir: Path | None = None) -> VerifyReport:
    """Walk the chain in sequence order, recomputing every hash; check the stored head and the guards; check
    every prediction's stored result, feedback and (given ``artefact_dir``) artefact files against its
    chained rows.

    ``expect_head`` is a (seq, hash) recorded outside the database earlier (``radiolens audit head``): the
    chain must contain exactly that row, which catches history rewound to an earlier, consistent state.
    """
    if isinstance(expect_head, str):
        expect_head = parse_head(expect_head)
    problems: list[str] = guard_problems(engine)
    prev_hash, expected_seq, n = GENESIS, 1, 0
    hash_at_expected = GENESIS if expect_head is not None and expect_head[0] == 0 else None
    with Session(engine) as s:
        head = s.get(AuditHead, 1)
        for row in s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).yield_per(1000):
            n += 1
            if row.seq != expected_seq:
                problems.append(f"seq {row.seq}: expected seq {expected_seq} (rows missing)")
            if row.prev_hash != prev_hash:
                problems.append(f"seq {row.seq}: prev_hash does not match the previous row (row deleted or edited)")
            if chain_hash(row.prev_hash, content_of(row)) != row.row_hash:
                problems.append(f"seq {row.seq}: content does not match its hash (row edited)")
            if expect_head is not None and row.seq == expect_head[0]:
                hash_at_expected = row.row_hash
            prev_hash, expected_seq = row.row_hash, row.seq + 1
            if len(problems) >= max_problems:
                break
        last_seq = expected_seq - 1
        if head is None:  # seeded by migration 0003, so never legitimately absent
            problems.append("audit_head is missing (deleted, possibly with the rows it anchored)")
        elif head.seq != last_seq:
            problems.append(f"chain ends at seq {last_seq} but the recorded head is seq {head.seq} "
                            "(newest rows deleted or head edited)")
        elif head.row_hash != prev_hash:
            problems.append(f"the recorded head hash does not match row seq {last_seq} (head or row edited)")
    if expect_head is not None:
        exp_seq, exp_hash = expect_head
        if hash_at_expected is None:
            problems.append(f"chain ends at seq {last_seq}, before the externally recorded head seq {exp_seq} "
                            "(rows deleted or history rewound)")
        elif hash_at_expected != exp_hash:
            problems.append(f"row seq {exp_seq} does not match the externally recorded head hash "
                            "(history rewritten)")
    if len(problems) < max_problems:
        problems += _binding_problems(engine, artefact_dir, max_problems - len(problems))
    return VerifyReport(ok=not problems, rows=n, head_seq=last_seq, head_hash=prev_hash, problems=problems)


def _parse_time(value: str | datetime | None, what: str) -> datetime | None:
    return parse_time(value, what)  # bounded: serve.params


def rows_between(engine: Engine, since: str | datetime | None = None,
                 until: str | datetime | None = None) -> Iterator[dict[str, Any]]:
    """Audit rows with ``since <= created_at < until`` (ISO 8601; naive means UTC), oldest first."""
    lo, hi = _parse_time(since, "since"), _parse_time(until, "until")
    q = select(AuditEntry).order_by(AuditEntry.seq)
    if engine.dialect.name == "sqlite":  # SQLite stores naive UTC strings: compare like with like
        lo = lo.astimezone(UTC).replace(tzinfo=None) if lo else None
        hi = hi.astimezone(UTC).replace(tzinfo=None) if hi else None
    if lo:
        q = q.where(AuditEntry.created_at >= lo)
    if hi:
        q = q.where(AuditEntry.created_at < hi)
    with Session(engine) as s:
        for row in s.scalars(q).yield_per(1000):
            d = content_of(row)
            d["created_at"] = d["created_at"] + "Z"
            d["outputs"] = json.loads(d.pop("outputs_json"))
            d["prev_hash"], d["row_hash"] = row.prev_hash, row.row_hash
            yield d


def export(engine: Engine, fmt: str, since: str | datetime | None = None,
           until: str | datetime | None = None) -> Iterator[str]:
    """JSON lines or CSV (outputs as a JSON string column), one chunk per row."""
    if fmt == "jsonl":
        for d in rows_between(engine, since, until):
            yield canonical_json(d) + "\n"
        return
    if fmt != "csv":
        raise InputError(f"unknown export format '{fmt}' (use jsonl or csv)")
    cols = ["seq", "created_at", "event", "user_id", "role", "prediction_id", "model_sha256", "input_sha256",
            "study_uid", "outputs", "latency_ms", "prev_hash", "row_hash"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    yield buf.getvalue()
    for d in rows_between(engine, since, until):
        buf.seek(0)
        buf.truncate()
        d["outputs"] = canonical_json(d["outputs"])
        w.writerow(d)
        yield buf.getvalue()


# ---------------------------------------------------------------------- served data bound to the chain
# A prediction's stored result (``predictions.result_json``), its feedback rows and its artefact files are what
# clinicians are shown; the tables and the folder are not append-only, so each is bound to the chained row
# written with it: the prediction row's outputs hold ``result_sha256`` and the sha256 of every artefact, and a
# feedback row's outputs hold the feedback's id, time and values. Every read re-checks these bindings before
# serving (``check_prediction``) and ``verify`` checks them for every prediction.


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def artefact_path(artefact_dir: Path, prediction_id: str, kind: str) -> Path:
    return Path(artefact_dir) / f"{prediction_id}.{kind}.png"


def served_fields(result: dict[str, Any]) -> dict[str, Any]:
    """What a prediction's chained row records about its result (also all that rows written before the
    result hash existed record, so those are still checked field by field)."""
    out = {"status": result["status"], "backend": result["model"]["backend"],
           "probabilities": {p["name"]: p["probability"] for p in result["probabilities"]},
           "decision": result["decision"]["label"], "review_flag": result["review"]["flag"],
           "review_reason": result["review"]["reason"], "review_spread": result["review"]["spread"],
           "heatmap": result.get("heatmap_url") is not None}
    if result.get("monitoring"):
        out["monitoring"] = result["monitoring"]
    return out


def prediction_outputs(result: dict[str, Any], result_json: str, artefacts: dict[str, bytes]) -> dict[str, Any]:
    """The ``outputs`` of a prediction's chained row: the served fields, the sha256 of the stored result JSON
    and of each stored artefact file."""
    out = served_fields(result)
    out["result_sha256"] = sha256_hex(result_json)
    out["artefacts"] = {kind: sha256_hex(data) for kind, data in artefacts.items()}
    return out


def feedback_outputs(fb: Feedback) -> dict[str, Any]:
    return {"agree": bool(fb.agree), "corrected_label": fb.corrected_label, "feedback_id": int(fb.id),
            "created_at": _iso(fb.created_at)}


@dataclass
class Mismatch:
    part: str  # "prediction" | "result" | "feedback" | "image" | "heatmap" | "chain"
    detail: str


def check_prediction(pred: Prediction | None, chained: list[AuditEntry], feedback: list[Feedback],
                     artefact_dir: Path | None = None, kinds: Iterable[str] = ARTEFACT_KINDS,
                     artefacts: dict[str, bytes] | None = None) -> list[Mismatch]:
    """Compare one prediction's stored row, feedback rows and artefact files with its chained audit rows
    (``chained``: its "prediction" and "feedback" rows in seq order; their own hashes are checked elsewhere).
    Artefact bytes already read by the caller can be passed in ``artefacts`` (checked, not re-read), so what
    is served is exactly what was checked."""
    out: list[Mismatch] = []
    rows = [r for r in chained if r.event == "prediction"]
    fb_rows = [r for r in chained if r.event == "feedback"]
    if pred is None:
        return [Mismatch("prediction", "stored prediction row is missing (deleted)")] if rows else []
    if len(rows) != 1:
        return [Mismatch("prediction", "no chained prediction row (inserted outside the service)" if not rows
                         else f"{len(rows)} chained prediction rows (forged)")]
    row = rows[0]
    outputs = json.loads(row.outputs_json)
    if (pred.user_id, pred.model_sha256, pred.input_sha256, pred.study_ref) != \
            (row.user_id, row.model_sha256, row.input_sha256, row.study_uid):
        out.append(Mismatch("prediction", "user, model, input or study differ from the chained row"))
    try:
        result = json.loads(pred.result_json)
        fields = served_fields(result)
    except (ValueError, KeyError, TypeError, AttributeError):
        result, fields = None, None
    if "result_sha256" in outputs:
        if sha256_hex(pred.result_json) != outputs["result_sha256"]:
            out.append(Mismatch("result", "stored result does not match its chained sha256"))
    elif fields is None or any(fields.get(k) != v for k, v in outputs.items()):
        out.append(Mismatch("result", "stored result differs from the chained outputs"))
    if bool(pred.has_heatmap) != bool(outputs.get("heatmap")):
        out.append(Mismatch("result", "stored heatmap flag differs from the chained outputs"))
    if len(feedback) != len(fb_rows):
        out.append(Mismatch("feedback", f"{len(feedback)} stored feedback rows, {len(fb_rows)} chained"))
    else:
        for fb, r in zip(feedback, fb_rows, strict=True):
            want = json.loads(r.outputs_json)
            have = feedback_outputs(fb)
            if fb.user_id != r.user_id or any(have[k] != v for k, v in want.items() if k in have):
                out.append(Mismatch("feedback", f"stored feedback {fb.id} differs from its chained row"))
    if _current_marks_broken(feedback):
        out.append(Mismatch("feedback", "a reader's current feedback is not their newest (superseded marks edited)"))
    bound = outputs.get("artefacts")
    if bound is not None and (artefact_dir is not None or artefacts):
        for kind in kinds:
            if kind not in bound:
                continue
            data = (artefacts or {}).get(kind)
            if data is None:
                path = artefact_path(artefact_dir, pred.id, kind) if artefact_dir is not None else None
                if path is None or not path.is_file():
                    out.append(Mismatch(kind, f"{kind} file is missing"))
                    continue
                data = path.read_bytes()
            if sha256_hex(data) != bound[kind]:
                out.append(Mismatch(kind, f"{kind} file does not match its chained sha256 (replaced)"))
    return out


def _current_marks_broken(feedback: list[Feedback]) -> bool:
    """Each reader's newest feedback row is their current one and all earlier ones are superseded (the marks are
    not chained: this catches one reader's earlier answer made current again by an edit)."""
    newest: dict[int, int] = {}
    for fb in feedback:
        newest[fb.user_id] = max(newest.get(fb.user_id, fb.id), fb.id)
    return any((fb.superseded_at is None) != (fb.id == newest[fb.user_id]) for fb in feedback)


def row_is_chained(session: Session, row: AuditEntry) -> bool:
    """The row's content matches its hash and the chain continues from it (the next row links to it, or the
    head is it): editing a chained row and recomputing its hash breaks this until every later row and the head
    are rewritten too, which ``verify --expect-head`` catches."""
    if chain_hash(row.prev_hash, content_of(row)) != row.row_hash:
        return False
    nxt = session.get(AuditEntry, row.seq + 1)
    if nxt is not None:
        return nxt.prev_hash == row.row_hash
    head = session.get(AuditHead, 1)
    return head is not None and head.seq == row.seq and head.row_hash == row.row_hash


def _binding_problems(engine: Engine, artefact_dir: Path | None, max_problems: int) -> list[str]:
    """``check_prediction`` for every prediction: four id-sorted streams merged, one prediction at a time."""
    problems: list[str] = []
    with Session(engine) as s:
        def stream(q, tag):
            for item in s.scalars(q).yield_per(1000):
                yield (item.id if tag == "p" else item.prediction_id), tag, item

        preds = stream(select(Prediction).order_by(Prediction.id), "p")
        chained = stream(select(AuditEntry).where(AuditEntry.event.in_(("prediction", "feedback")),
                                                  AuditEntry.prediction_id != "")
                         .order_by(AuditEntry.prediction_id, AuditEntry.seq), "a")
        fbs = stream(select(Feedback).order_by(Feedback.prediction_id, Feedback.id), "f")
        merged = heapq.merge(preds, chained, fbs, key=lambda t: t[0])
        for pid, group in itertools.groupby(merged, key=lambda t: t[0]):
            items = list(group)
            pred = next((i for _, t, i in items if t == "p"), None)
            rows = [i for _, t, i in items if t == "a"]
            feedback = [i for _, t, i in items if t == "f"]
            for m in check_prediction(pred, rows, feedback, artefact_dir):
                problems.append(f"prediction {pid}: {m.detail}")
            if len(problems) >= max_problems:
                break
    return problems

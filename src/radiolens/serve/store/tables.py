"""Database tables of the service. Nothing here may hold PHI: users are opaque ids, studies are remapped UIDs.

The schema itself is created by the Alembic migrations in ``serve/store/migrations``; these classes describe it
for the ORM and must match the latest revision (a test compares them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """One credential: an API key (machines) or, with ``username`` and ``password_hash``, a reader's sign-in
    account (migration 0006). ``id`` is the user id recorded in the audit log; ``label`` is for admins only.
    An account's ``key_hash`` is empty: no presented key can match it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)  # public part of the key
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the secret part
    role: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # None: never
    username: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True, index=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)  # argon2id, PHC string


class Prediction(Base):
    """One stored prediction. ``status``, ``decision`` and ``review_flag`` repeat what ``result_json`` says so
    the worklist filters in SQL (migration 0006); what is served is always the chain-bound ``result_json``."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_worklist", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # opaque uuid4 hex, also names artefacts
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    user_id: Mapped[int] = mapped_column(Integer)
    model_sha256: Mapped[str] = mapped_column(String(64))
    input_sha256: Mapped[str] = mapped_column(String(64))
    study_ref: Mapped[str] = mapped_column(String(128))
    result_json: Mapped[str] = mapped_column(Text)
    has_heatmap: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(32), default="ok", server_default="ok")
    decision: Mapped[str] = mapped_column(String(128), default="", server_default="")
    review_flag: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Feedback(Base):
    """A reader's feedback on a prediction. Changing it adds a row and sets ``superseded_at`` on the earlier one
    (each row stays bound to its own chained audit row): at most one current row per reader and prediction."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("uq_feedback_one_current", "prediction_id", "user_id", unique=True,
              sqlite_where=text("superseded_at IS NULL"), postgresql_where=text("superseded_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(String(32), ForeignKey("predictions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user_id: Mapped[int] = mapped_column(Integer)
    agree: Mapped[bool] = mapped_column(Boolean)
    corrected_label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    """Append-only, hash-chained. ``row_hash = sha256(prev_hash + canonical JSON of the content columns)``."""

    __tablename__ = "audit_log"
    # Reads look up a prediction's chained rows; exactly one "prediction" row per prediction (migration 0005).
    __table_args__ = (
        Index("ix_audit_log_prediction_id", "prediction_id"),
        Index("uq_audit_log_one_prediction_row", "prediction_id", unique=True,
              sqlite_where=text("event = 'prediction'"), postgresql_where=text("event = 'prediction'")),
    )

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    event: Mapped[str] = mapped_column(String(16))  # "prediction" | "feedback"
    user_id: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    prediction_id: Mapped[str] = mapped_column(String(32))
    model_sha256: Mapped[str] = mapped_column(String(64))
    input_sha256: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(128))
    outputs_json: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's tip, updated in the same transaction as each append, so deleting the LAST row is detected too."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    row_hash: Mapped[str] = mapped_column(String(64))


class MonitoringRecord(Base):
    """What monitoring keeps of one prediction: gate outcome, image/header statistics, probabilities and a
    low-dimensional projection of the model embedding. Categorical header values only (view, modality,
    manufacturer); never names, ids or dates."""

    __tablename__ = "monitoring_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(String(32), ForeignKey("predictions.id"), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))  # "ok" | "out_of_distribution"
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    record_json: Mapped[str] = mapped_column(Text)


class ServiceState(Base):
    """Facts about this installation that the service checks at start-up, one row per key. Today only
    ``deid_secret_fingerprint`` (a non-reversible tag of the de-identification secret, see
    ``service.check_deid_secret``); never a secret, a credential or PHI."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A browser session opened by a password sign-in: only sha256 of its token and of its CSRF token are kept.
    Refused from ``expires_at`` on (absolute) or after an idle period since ``last_seen_at``; ``ended_at``: signed
    out."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    csrf_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SigninFailure(Base):
    """One failed sign-in, counted for rate limiting: ``scope`` "user" or "addr" and a keyed tag of the username
    or client address (never either in clear). Rows older than the window are deleted as new ones come."""

    __tablename__ = "signin_failures"
    __table_args__ = (Index("ix_signin_failures_lookup", "scope", "tag", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    scope: Mapped[str] = mapped_column(String(8))
    tag: Mapped[str] = mapped_column(String(64))

"""Worklist columns, one current feedback per reader, password sign-in and browser sessions.

* ``predictions.status``, ``decision``, ``review_flag``: copies of what the stored result says, so the worklist
  (``GET /v1/predictions``) filters and pages in SQL instead of parsing every result; filled here from
  ``result_json`` for earlier predictions. The served result stays the chain-bound ``result_json``.
* ``feedback.superseded_at``: a reader's feedback is changed by adding a new row and marking the earlier one
  superseded (each row stays bound to its own chained audit row). A partial unique index allows one current
  (not superseded) row per reader and prediction. Earlier databases may hold several rows of one reader for one
  prediction (feedback could be sent repeatedly): all but the newest are marked superseded here.
* ``api_keys.username`` / ``password_hash``: a credential row may be a reader's sign-in account (argon2 hash)
  instead of an API key; its id is the user id the audit log records, like a key's.
* ``web_sessions``: browser sessions opened by a password sign-in (only sha256 of the session and CSRF tokens).
* ``signin_failures``: recent failed sign-ins by keyed tag of username and of client address, for rate limiting
  across processes and hosts (never the username or address in clear).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_CURRENT = "superseded_at IS NULL"


def _backfill_predictions(conn) -> None:
    rows = conn.execute(sa.text("SELECT id, result_json FROM predictions")).all()
    for pid, result_json in rows:
        try:
            result = json.loads(result_json)
            values = {"s": str(result.get("status", "ok"))[:32], "d": str(result["decision"]["label"])[:128],
                      "f": bool(result["review"]["flag"])}
        except (ValueError, KeyError, TypeError):  # unreadable: the integrity check reports it when read
            values = {"s": "unknown", "d": "", "f": True}
        conn.execute(sa.text("UPDATE predictions SET status = :s, decision = :d, review_flag = :f WHERE id = :i"),
                     {**values, "i": pid})


def _supersede_repeated_feedback(conn) -> None:
    rows = conn.execute(sa.text("SELECT id, prediction_id, user_id, created_at FROM feedback "
                                "ORDER BY prediction_id, user_id, id")).all()
    newest: dict[tuple[str, int], tuple[int, object]] = {}
    for fid, pid, uid, created in rows:
        earlier = newest.get((pid, uid))
        if earlier is not None:  # superseded when the newer one was given
            conn.execute(sa.text("UPDATE feedback SET superseded_at = :t WHERE id = :i"),
                         {"t": created, "i": earlier[0]})
        newest[(pid, uid)] = (fid, created)


def upgrade() -> None:
    # plain ADD COLUMN (no table copy: other tables reference predictions)
    op.add_column("predictions", sa.Column("status", sa.String(32), nullable=False, server_default="ok"))
    op.add_column("predictions", sa.Column("decision", sa.String(128), nullable=False, server_default=""))
    op.add_column("predictions", sa.Column("review_flag", sa.Boolean(), nullable=False, server_default=sa.false()))
    conn = op.get_bind()
    _backfill_predictions(conn)
    op.create_index("ix_predictions_worklist", "predictions", ["created_at", "id"])

    op.add_column("feedback", sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    _supersede_repeated_feedback(conn)
    op.create_index("uq_feedback_one_current", "feedback", ["prediction_id", "user_id"], unique=True,
                    sqlite_where=sa.text(_CURRENT), postgresql_where=sa.text(_CURRENT))

    op.add_column("api_keys", sa.Column("username", sa.String(64), nullable=True))
    op.add_column("api_keys", sa.Column("password_hash", sa.String(255), nullable=True))
    op.create_index("ix_api_keys_username", "api_keys", ["username"], unique=True)

    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_web_sessions_token_hash", "web_sessions", ["token_hash"], unique=True)
    op.create_table(
        "signin_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
    )
    op.create_index("ix_signin_failures_lookup", "signin_failures", ["scope", "tag", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_signin_failures_lookup", "signin_failures")
    op.drop_table("signin_failures")
    op.drop_index("ix_web_sessions_token_hash", "web_sessions")
    op.drop_table("web_sessions")
    # plain DROP COLUMN (SQLite >= 3.35 has it; a table copy would trip the foreign keys to predictions)
    op.drop_index("ix_api_keys_username", "api_keys")
    op.drop_index("uq_feedback_one_current", "feedback")
    op.drop_index("ix_predictions_worklist", "predictions")
    for table, column in (("api_keys", "password_hash"), ("api_keys", "username"), ("feedback", "superseded_at"),
                          ("predictions", "review_flag"), ("predictions", "decision"), ("predictions", "status")):
        op.drop_column(table, column)

"""Audit integrity: the chain head always exists and only advances; rows only extend the chain; no TRUNCATE.

0001 made ``audit_log`` refuse UPDATE/DELETE, but left three holes an attacker with plain DML rights could
use without dropping any trigger: deleting every row *and* the ``audit_head`` row (an empty chain verifies),
rewinding or deleting ``audit_head`` itself, and (PostgreSQL) ``TRUNCATE``, which row-level triggers never
see. This revision

* seeds ``audit_head`` with the genesis state (seq 0, hash of 64 zeros) at migration time, so a missing head
  is always tampering (``radiolens audit verify`` says so);
* lets ``audit_head`` change only by advancing exactly one step to an existing ``audit_log`` row with that
  hash (no INSERT, no DELETE, no rewind, no jump), which is what ``audit.append`` does once per row, also for
  several rows in one transaction;
* lets ``audit_log`` accept a row only if it extends the chain at the head (seq = head + 1, prev_hash = head
  hash);
* refuses TRUNCATE of both tables on PostgreSQL (statement-level triggers).

Someone with DDL rights can still drop these triggers; ``audit verify`` reports missing or disabled triggers
and ``--expect-head SEQ:HASH`` (a head recorded outside the database) catches a consistent rewind.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS = "0" * 64  # same value as radiolens.serve.store.audit.GENESIS (migrations must not import app code)

_SEED = ("INSERT INTO audit_head (id, seq, row_hash) "
         f"SELECT 1, 0, '{GENESIS}' WHERE NOT EXISTS (SELECT 1 FROM audit_head)")

_HEAD_MSG = "audit_head can only advance to the newest audit_log row"
_CHAIN_MSG = "audit_log is append-only: a row must extend the chain at audit_head"

SQLITE_TRIGGERS = {
    "audit_head_no_insert": "CREATE TRIGGER audit_head_no_insert BEFORE INSERT ON audit_head "
                            f"BEGIN SELECT RAISE(ABORT, '{_HEAD_MSG}'); END",
    "audit_head_no_delete": "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
                            f"BEGIN SELECT RAISE(ABORT, '{_HEAD_MSG}'); END",
    "audit_head_advance_only": (
        "CREATE TRIGGER audit_head_advance_only BEFORE UPDATE ON audit_head "
        "WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq + 1 OR NOT EXISTS "
        "(SELECT 1 FROM audit_log WHERE seq = NEW.seq AND row_hash = NEW.row_hash) "
        f"BEGIN SELECT RAISE(ABORT, '{_HEAD_MSG}'); END"),
    "audit_log_extend_only": (
        "CREATE TRIGGER audit_log_extend_only BEFORE INSERT ON audit_log "
        "WHEN NEW.seq IS NOT (SELECT seq + 1 FROM audit_head WHERE id = 1) "
        "OR NEW.prev_hash IS NOT (SELECT row_hash FROM audit_head WHERE id = 1) "
        f"BEGIN SELECT RAISE(ABORT, '{_CHAIN_MSG}'); END"),
}

_PG_FUNCTIONS = [
    "CREATE FUNCTION audit_head_guard() RETURNS trigger AS $$ BEGIN "
    "IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.seq = OLD.seq + 1 AND EXISTS "
    "(SELECT 1 FROM audit_log WHERE seq = NEW.seq AND row_hash = NEW.row_hash) THEN RETURN NEW; END IF; "
    f"RAISE EXCEPTION '{_HEAD_MSG}'; END; $$ LANGUAGE plpgsql",
    "CREATE FUNCTION audit_log_extend_only() RETURNS trigger AS $$ DECLARE h RECORD; BEGIN "
    "SELECT seq, row_hash INTO h FROM audit_head WHERE id = 1; "
    "IF NOT FOUND OR NEW.seq IS DISTINCT FROM h.seq + 1 OR NEW.prev_hash IS DISTINCT FROM h.row_hash THEN "
    f"RAISE EXCEPTION '{_CHAIN_MSG}'; END IF; RETURN NEW; END; $$ LANGUAGE plpgsql",
    "CREATE FUNCTION audit_no_truncate() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION '% is append-only (TRUNCATE refused)', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql",
]
PG_TRIGGERS = {
    "audit_head_guard": "CREATE TRIGGER audit_head_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_head "
                        "FOR EACH ROW EXECUTE FUNCTION audit_head_guard()",
    "audit_log_extend_only": "CREATE TRIGGER audit_log_extend_only BEFORE INSERT ON audit_log "
                             "FOR EACH ROW EXECUTE FUNCTION audit_log_extend_only()",
    "audit_log_no_truncate": "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                             "FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()",
    "audit_head_no_truncate": "CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head "
                              "FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(_SEED)  # before the triggers: afterwards nothing may insert into audit_head
    if dialect == "sqlite":
        for stmt in SQLITE_TRIGGERS.values():
            op.execute(stmt)
    elif dialect == "postgresql":
        for stmt in _PG_FUNCTIONS + list(PG_TRIGGERS.values()):
            op.execute(stmt)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_head_guard ON audit_head")
        op.execute("DROP TRIGGER IF EXISTS audit_head_no_truncate ON audit_head")
        op.execute("DROP TRIGGER IF EXISTS audit_log_extend_only ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        for fn in ("audit_head_guard", "audit_log_extend_only", "audit_no_truncate"):
            op.execute(f"DROP FUNCTION IF EXISTS {fn}()")
    # 0001/0002 created the head lazily on the first append: drop the seeded genesis head of an empty log.
    op.execute("DELETE FROM audit_head WHERE seq = 0")

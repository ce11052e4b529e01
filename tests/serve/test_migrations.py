"""The Alembic migrations shipped in the package produce exactly the schema the ORM tables describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from radiolens.serve.audit import GENESIS, GUARD_TRIGGERS
from radiolens.serve.db import head_revision, make_engine, upgrade
from radiolens.serve.tables import Base


def test_migrations_match_orm_and_enable_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    head = head_revision()
    assert head and head != "0001"  # migrations after the initial one exist and are applied in order
    assert upgrade(url) == head
    assert upgrade(url) == head  # idempotent
    engine = make_engine(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        triggers = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='trigger'").scalars())
        head = tuple(conn.exec_driver_sql("SELECT id, seq, row_hash FROM audit_head").all())
    engine.dispose()
    assert diffs == []
    assert triggers == set(GUARD_TRIGGERS["sqlite"])  # what `audit verify` checks is what the migrations install
    assert head == ((1, 0, GENESIS),)  # the chain head exists from the start (migration 0003)

"""The Alembic migrations shipped in the package produce exactly the schema the ORM tables describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from radiolens.serve.store.audit import GENESIS, GUARD_TRIGGERS
from radiolens.serve.store.db import head_revision, make_engine, upgrade
from radiolens.serve.store.tables import Base


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return request.getfixturevalue("pg_url")


def test_upgrade_0004_to_0005_keeps_keys_and_checks_older_predictions(any_db):
    """A database used before 0005: its keys keep working (no expiry), and a prediction whose chained row has
    no result hash yet is still checked, field by field, against what that row recorded."""
    from alembic import command
    from sqlalchemy import inspect, text
    from sqlalchemy.orm import Session, sessionmaker

    from radiolens.serve.store import audit
    from radiolens.serve.store.auth import authenticate
    from radiolens.serve.store.db import alembic_config
    from radiolens.serve.store.tables import Prediction

    engine = make_engine(any_db)
    cfg = alembic_config(any_db)

    def to(rev: str, down: bool = False) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, rev)

    to("0004")
    import hashlib

    secret = "s" * 43
    with engine.begin() as conn:  # what a 0004-era `users create` stored
        conn.execute(text("INSERT INTO api_keys (key_id, key_hash, role, label, created_at) VALUES "
                          "('00112233aabbccdd', :h, 'admin', '', :t)"),
                     {"h": hashlib.sha256(secret.encode()).hexdigest(), "t": audit.utcnow()})
    result = {"status": "ok", "model": {"backend": "torch"}, "heatmap_url": None, "monitoring": {},
              "probabilities": [{"name": "pneumonia", "probability": 0.41, "threshold": 0.5, "positive": False}],
              "decision": {"label": "normal"}, "review": {"flag": True, "reason": "near threshold", "spread": 0.02}}
    pid = "ab" * 16
    with audit.writer(sessionmaker(bind=engine)) as s:  # a prediction as the service wrote it before 0005
        s.add(Prediction(id=pid, created_at=audit.utcnow(), user_id=1, model_sha256="m", input_sha256="i",
                         study_ref="s", result_json=audit.canonical_json(result), has_heatmap=False))
        s.flush()
        audit.append(s, audit.AuditEvent("prediction", 1, "clinician", pid, "m", "i", "s",
                                         audit.served_fields(result), 1.0))
    assert upgrade(any_db, engine) == head_revision()
    with Session(engine) as s:
        assert authenticate(s, f"rlk_00112233aabbccdd_{secret}").role.value == "admin"
    assert audit.verify(engine).ok
    result["decision"]["label"], result["review"]["flag"] = "pneumonia", False
    with engine.begin() as conn:
        conn.execute(text("UPDATE predictions SET result_json = :j"), {"j": audit.canonical_json(result)})
    assert audit.verify(engine).problems == [f"prediction {pid}: stored result differs from the chained outputs"]
    to("0004", down=True)  # and back: the downgrade drops what 0005 added
    with engine.connect() as conn:
        cols = [c["name"] for c in inspect(conn).get_columns("api_keys")]
    assert "expires_at" not in cols
    to("head")
    engine.dispose()

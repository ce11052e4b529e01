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


def _migrator(db_url: str):
    """(engine, to(revision, down=False)): moves the database at ``db_url`` to a given Alembic revision."""
    from alembic import command

    from radiolens.serve.store.db import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config(db_url)

    def to(rev: str, down: bool = False) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, rev)

    return engine, to


def test_upgrade_0004_to_0005_keeps_keys_and_checks_older_predictions(any_db):
    """A database used before 0005: its keys keep working (no expiry), and a prediction whose chained row has
    no result hash yet is still checked, field by field, against what that row recorded."""
    from sqlalchemy import inspect, text
    from sqlalchemy.orm import Session, sessionmaker

    from radiolens.serve.store import audit
    from radiolens.serve.store.auth import authenticate

    engine, to = _migrator(any_db)

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
        # plain SQL: the ORM describes the newest schema, whose columns a 0004 database lacks
        s.execute(text("INSERT INTO predictions (id, created_at, user_id, model_sha256, input_sha256, study_ref, "
                       "result_json, has_heatmap) VALUES (:i, :t, 1, 'm', 'i', 's', :j, false)"),
                  {"i": pid, "t": audit.utcnow(), "j": audit.canonical_json(result)})
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


def test_upgrade_0005_to_0006_fills_worklist_columns_and_keeps_one_current_feedback(any_db):
    """A database used before 0006: the worklist columns are filled from each stored result, and a reader's
    repeated feedback (allowed before) is kept, all but the newest marked superseded, with the chain intact."""
    from sqlalchemy import inspect, text
    from sqlalchemy.orm import Session, sessionmaker

    from radiolens.serve.store import audit
    from radiolens.serve.store.tables import Feedback, Prediction
    from radiolens.serve.store.worklist import WorklistFilter, worklist_page

    engine, to = _migrator(any_db)

    to("0005")
    results = {
        "ab" * 16: {"status": "ok", "decision": {"label": "pneumonia"}, "review": {"flag": False}},
        "cd" * 16: {"status": "out_of_distribution", "decision": {"label": "not assessed"}, "review": {"flag": True}},
    }
    sessions = sessionmaker(bind=engine)
    for pid, result in results.items():  # what a 0005-era service stored (only the columns it had)
        body = {"model": {"backend": "torch"}, "heatmap_url": None, "probabilities": [], "monitoring": {},
                **result, "review": {**result["review"], "reason": "r", "spread": None}}
        result_json = audit.canonical_json(body)
        with audit.writer(sessions) as s:
            s.execute(text("INSERT INTO predictions (id, created_at, user_id, model_sha256, input_sha256, study_ref, "
                           "result_json, has_heatmap) VALUES (:i, :t, 1, 'm', 'i', 's', :j, false)"),
                      {"i": pid, "t": audit.utcnow().replace(tzinfo=None), "j": result_json})  # naive = UTC
            audit.append(s, audit.AuditEvent("prediction", 1, "clinician", pid, "m", "i", "s",
                                             audit.prediction_outputs(body, result_json, {}), 1.0))
    pid = "ab" * 16
    for agree in (True, False, True):  # one reader's feedback sent three times, as 0005 allowed
        with audit.writer(sessions) as s:
            created = audit.utcnow().replace(tzinfo=None)
            s.execute(text("INSERT INTO feedback (prediction_id, created_at, user_id, agree) VALUES (:p, :t, 7, :a)"),
                      {"p": pid, "t": created, "a": agree})
            fid = s.execute(text("SELECT max(id) FROM feedback")).scalar()
            fb = Feedback(id=fid, prediction_id=pid, created_at=created, user_id=7, agree=agree)
            audit.append(s, audit.AuditEvent("feedback", 7, "clinician", pid, "m", "i", "s",
                                             audit.feedback_outputs(fb), 1.0))

    to("0006")
    with Session(engine) as s:
        rows = {p.id: (p.status, p.decision, p.review_flag) for p in s.query(Prediction)}
        assert rows == {"ab" * 16: ("ok", "pneumonia", False), "cd" * 16: ("out_of_distribution", "not assessed", True)}
        fbs = s.query(Feedback).order_by(Feedback.id).all()
        assert [f.superseded_at is None for f in fbs] == [False, False, True]
        page = worklist_page(s, 7, WorklistFilter(awaiting_feedback=False), 10)
        assert [(p.id, f.agree) for p, f in page.rows] == [(pid, True)]
        assert worklist_page(s, 8, WorklistFilter(awaiting_feedback=True), 10).rows[0][0].id == pid
    assert audit.verify(engine).ok  # every stored feedback row still matches its chained row
    to("0005", down=True)  # and back: the downgrade drops what 0006 added
    with engine.connect() as conn:
        cols = [c["name"] for c in inspect(conn).get_columns("predictions")]
        tables = inspect(conn).get_table_names()
    assert "decision" not in cols and "web_sessions" not in tables
    to("head")
    engine.dispose()

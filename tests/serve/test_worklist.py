"""The worklist (``GET /v1/predictions``) and the feedback rules: paging, filters, the reader's own feedback
state, auditing; one current feedback per reader (PUT replaces, audited with old and new values), refused on
studies the model did not assess; the database enforces it."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radiolens.serve.runtime.hooks import PredictionHooks
from radiolens.serve.store import audit
from radiolens.serve.store.auth import create_key


def _withhold_blank(ctx):
    """A stand-in for the input gate: a blank image is answered 'not assessed' (stored and audited)."""
    if ctx.image.pixels.mean() > 0.99:
        ctx.status, ctx.status_reason = "out_of_distribution", "blank image"


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def worklist(request, app_factory, kermany_samples):
    """A running app with 5 assessed predictions (real Kermany images) and 1 not assessed, oldest first."""
    from fastapi.testclient import TestClient

    kw = {} if request.param == "sqlite" else {"db_url": request.getfixturevalue("pg_url")}
    app, keys = app_factory(PredictionHooks(inference_hooks=[_withhold_blank]), mc_dropout_passes=0, **kw)
    with TestClient(app) as c:
        made = []
        for path, _ in kermany_samples[:5]:
            r = c.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
                       files={"file": ("u", path.read_bytes(), "image/jpeg")})
            assert r.status_code == 201, r.text
            made.append(r.json())
        r = c.post("/v1/predictions", headers=keys.h("clinician"), files={"file": ("u", _blank_png(), "image/png")})
        assert r.status_code == 201 and r.json()["status"] == "out_of_distribution", r.text
        made.append(r.json())
        yield c, keys, app, made


def _all(c, headers, **params) -> list[dict]:
    r = c.get("/v1/predictions", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_worklist_pages_newest_first_without_phi(worklist):
    c, keys, app, made = worklist
    items = _all(c, keys.h("clinician"))
    assert [i["id"] for i in items] == [m["id"] for m in reversed(made)]  # newest first
    by_id = {m["id"]: m for m in made}
    for item in items:
        full = by_id[item["id"]]
        assert item["decision"] == full["decision"]["label"] and item["status"] == full["status"]
        assert item["review"] == {"flag": full["review"]["flag"], "reason": full["review"]["reason"]}
        assert [(p["name"], p["probability"], p["positive"]) for p in item["probabilities"]] == \
            [(p["name"], p["probability"], p["positive"]) for p in full["probabilities"]]
        assert item["integrity"] == "ok"
    raw = c.get("/v1/predictions", headers=keys.h("clinician")).text
    for m in made:  # nothing that leads back to a study
        assert m["study_ref"] not in raw and m["input_sha256"] not in raw

    pages, cursor = [], None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        body = c.get("/v1/predictions", headers=keys.h("auditor"), params=params).json()
        pages.append([i["id"] for i in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [4, 2] and sum(pages, []) == [i["id"] for i in items]
    # a prediction made while paging does not shift the next page (keyset paging)
    first = c.get("/v1/predictions", headers=keys.h("clinician"), params={"limit": 3}).json()
    c.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
           files={"file": ("u", _blank_png(), "image/png")})
    second = c.get("/v1/predictions", headers=keys.h("clinician"),
                   params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [i["id"] for i in first["items"] + second["items"]] == [i["id"] for i in items]

    for bad in ({"cursor": "not-a-cursor"}, {"limit": 101}, {"limit": 0}, {"since": "yesterday"},
                {"flagged": "perhaps"}):
        r = c.get("/v1/predictions", headers=keys.h("clinician"), params=bad)
        assert r.status_code == 422 and r.json()["error"]["action"], (bad, r.text)
    assert c.get("/v1/predictions", headers=keys.h("admin")).status_code == 403
    assert c.get("/v1/predictions").status_code == 401


def test_worklist_filters_and_reader_feedback_state(worklist):
    c, keys, app, made = worklist
    h = keys.h("clinician")
    flagged = {m["id"] for m in made if m["review"]["flag"]}
    assert {i["id"] for i in _all(c, h, flagged="true")} == flagged
    assert {i["id"] for i in _all(c, h, flagged="false")} == {m["id"] for m in made} - flagged

    not_assessed = [i for i in _all(c, h, decision="not assessed")]
    assert [i["id"] for i in not_assessed] == [made[5]["id"]]
    assert not_assessed[0]["feedback"] == {"state": "not_allowed", "agree": None, "corrected_label": None,
                                           "given_at": None}
    assert not_assessed[0]["probabilities"] == [] and not_assessed[0]["review"]["flag"] is True
    label = made[0]["decision"]["label"]
    assert {i["id"] for i in _all(c, h, decision=label)} == {m["id"] for m in made if m["decision"]["label"] == label}

    awaiting = [i["id"] for i in _all(c, h, awaiting_feedback="true")]
    assert awaiting == [m["id"] for m in reversed(made[:5])]  # not-assessed studies never await feedback
    assert c.post(f"/v1/predictions/{made[2]['id']}/feedback", headers=h, json={"agree": True}).status_code == 201
    assert made[2]["id"] not in [i["id"] for i in _all(c, h, awaiting_feedback="true")]
    given = _all(c, h, awaiting_feedback="false")
    assert [i["id"] for i in given] == [made[2]["id"]]
    assert given[0]["feedback"]["state"] == "given" and given[0]["feedback"]["agree"] is True
    # the feedback state is the requesting reader's own: another clinician still awaits it
    with Session(app.state.service.engine) as s, s.begin():
        other = {"Authorization": f"Bearer {create_key(s, 'clinician')[1]}"}
    assert made[2]["id"] in [i["id"] for i in _all(c, other, awaiting_feedback="true")]

    times = [i["created_at"] for i in _all(c, h)]  # newest first
    assert [i["id"] for i in _all(c, h, since=times[2])] == [m["id"] for m in reversed(made[3:])]
    assert [i["id"] for i in _all(c, h, until=times[2])] == [m["id"] for m in reversed(made[:3])]
    assert _all(c, h, since=times[2], until=times[2]) == []

    # each listing is one audit row: who, the ids listed, the names (not values) of the filters
    n = len(list(audit.rows_between(app.state.service.engine)))
    _all(c, keys.h("auditor"), decision="pneumonia", flagged="true")
    new = list(audit.rows_between(app.state.service.engine))[n:]
    assert len(new) == 1 and new[0]["event"] == audit.READ and new[0]["role"] == "auditor"
    assert new[0]["outputs"]["resource"] == "worklist"
    assert sorted(new[0]["outputs"]["filters"]) == ["decision", "flagged"]
    assert "pneumonia" not in json.dumps(new[0]["outputs"]["filters"])


def test_worklist_withholds_a_tampered_result(worklist):
    c, keys, app, made = worklist
    engine = app.state.service.engine
    with engine.begin() as conn:
        conn.execute(text("UPDATE predictions SET result_json = replace(result_json, :a, :b) WHERE id = :p"),
                     {"a": '"flag":true', "b": '"flag":false', "p": made[5]["id"]})
    item = next(i for i in _all(c, keys.h("clinician")) if i["id"] == made[5]["id"])
    assert item["integrity"] == "failed" and item["decision"] is None and item["review"] is None
    rows = [r for r in audit.rows_between(engine) if r["event"] == audit.INTEGRITY_FAILED]
    assert rows and rows[-1]["prediction_id"] == made[5]["id"] and rows[-1]["outputs"]["resource"] == "worklist"


def test_one_feedback_per_reader_editable_and_audited(worklist):
    c, keys, app, made = worklist
    engine = app.state.service.engine
    pid, h = made[0]["id"], keys.h("clinician")
    url = f"/v1/predictions/{pid}/feedback"
    first = c.post(url, headers=h, json={"agree": True})
    assert first.status_code == 201
    again = c.post(url, headers=h, json={"agree": True})
    assert again.status_code == 409 and again.json()["error"]["code"] == "feedback_exists"
    assert "PUT" in again.json()["error"]["message"]

    n = len(list(audit.rows_between(engine)))
    changed = c.put(url, headers=h, json={"agree": False, "corrected_label": "pneumonia"})
    assert changed.status_code == 200 and changed.json()["corrected_label"] == "pneumonia"
    rows = list(audit.rows_between(engine))[n:]
    assert [r["event"] for r in rows] == ["feedback"]
    assert rows[0]["outputs"]["replaces"] == {"feedback_id": first.json()["id"], "agree": True,
                                              "corrected_label": None}
    assert rows[0]["outputs"]["agree"] is False and rows[0]["outputs"]["corrected_label"] == "pneumonia"
    assert rows[0]["study_uid"] == made[0]["study_ref"]  # the de-identified ref, as every feedback row

    n = len(list(audit.rows_between(engine)))
    same = c.put(url, headers=h, json={"agree": False, "corrected_label": "pneumonia"})
    assert same.status_code == 200 and same.json()["id"] == changed.json()["id"]
    assert len(list(audit.rows_between(engine))) == n  # nothing changed, nothing recorded

    fb = c.get(f"/v1/predictions/{pid}", headers=h).json()["feedback"]
    assert [(f["agree"], f["superseded_at"] is None) for f in fb] == [(True, False), (False, True)]

    fresh = c.put(f"/v1/predictions/{made[1]['id']}/feedback", headers=h, json={"agree": True})
    assert fresh.status_code == 201  # PUT as a first feedback

    for method in (c.post, c.put):  # not assessed: nothing to agree or disagree with
        r = method(f"/v1/predictions/{made[5]['id']}/feedback", headers=h, json={"agree": False})
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_assessed", r.text
        assert r.json()["error"]["action"].startswith("The model did not assess")
    assert audit.verify(engine, artefact_dir=app.state.service.artefact_dir).ok

    with pytest.raises(IntegrityError), engine.begin() as conn:  # the database allows one current row per reader
        conn.execute(text("INSERT INTO feedback (prediction_id, created_at, user_id, agree) "
                          "VALUES (:p, :t, :u, true)"), {"p": pid, "t": audit.utcnow(), "u": fb[0]["user_id"]})
    with engine.begin() as conn:  # the earlier answer made current again, by hand: caught when read
        conn.execute(text("UPDATE feedback SET superseded_at = :t WHERE id = :i"),
                     {"i": fb[1]["id"], "t": audit.utcnow()})
        conn.execute(text("UPDATE feedback SET superseded_at = NULL WHERE id = :i"), {"i": fb[0]["id"]})
    r = c.get(f"/v1/predictions/{pid}", headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "integrity_check_failed"
    assert any("superseded" in p for p in audit.verify(engine).problems)

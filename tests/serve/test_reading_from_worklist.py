"""End-to-end: a reader signed in with a username and password (no API key) reads from the worklist in the viewer:
Enter opens the prediction, the reading view shows its stored image and result, feedback is given and changed
(one current row, audited), N / P move through the worklist, a not-assessed study has feedback switched off, and
the way back to the list keeps its filters (headless Debian Chromium against a live uvicorn server)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session
from tests.serve.test_browser import (
    RECORD_CSP_VIOLATIONS,
    _grey,
    browser,  # noqa: F401  (the Chromium fixture)
)

from radiolens.serve.store.accounts import create_account

pytestmark = pytest.mark.browser
PASSWORD = "a long reading-room passphrase"


def _selected(page) -> str:
    return page.locator("#worklist tbody tr[aria-selected='true']").get_attribute("data-id")


def _opened(page, pid: str) -> None:
    page.wait_for_url(f"**/viewer/?prediction={pid}")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_selector("#zoom-level:has-text('scale')", timeout=30_000)  # the image is drawn


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    out_dir = os.environ.get("RADIOLENS_SCREENSHOT_DIR")
    if out_dir:
        shutil.copy(tmp_path / name, Path(out_dir) / name)


def test_read_from_the_worklist_with_a_session_and_give_feedback(browser, live, kermany_samples,  # noqa: F811
                                                                 pydicom_data_files, tmp_path):
    srv, keys = live(mc_dropout_passes=0)
    with Session(srv.server.config.app.state.service.engine) as s, s.begin():
        account = create_account(s, "dr.reader", PASSWORD, "clinician")
        s.flush()
        reader_id = account.id  # the user id the audit log and feedback rows carry
    uploads = [(p.read_bytes(), "image/jpeg") for p, _ in kermany_samples[:2]]
    ct = next(p for p in pydicom_data_files if p.name == "693_UNCR.dcm")  # a real CT slice: the gate refuses it
    uploads.append((ct.read_bytes(), "application/dicom"))
    made = []
    for data, mime in uploads:
        r = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "true"},
                       files={"file": ("u", data, mime)}, timeout=60)
        assert r.status_code == 201, r.text
        made.append(r.json())
    assert [m["status"] for m in made] == ["ok", "ok", "out_of_distribution"]
    chest_new, chest_old, not_assessed = made[1], made[0], made[2]  # the worklist lists newest first

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    api_calls: list[tuple[str, str | None]] = []
    page.on("request", lambda r: api_calls.append((r.method + " " + r.url, r.headers.get("authorization")))
            if "/v1/" in r.url else None)

    # A link to one study, not signed in: the viewer offers the username sign-in, which brings the reader back.
    page.goto(f"{srv.url}/viewer/?prediction={chest_old['id']}")
    page.wait_for_selector("#login:not([hidden])")
    _shot(page, tmp_path, "reading_sign_in_choice.png")
    page.click("text=Sign in with username")
    page.wait_for_url("**/viewer/signin?next=*")
    page.fill("#username", "dr.reader")
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    _opened(page, chest_old["id"])
    assert page.locator("#study").inner_text() == chest_old["study_ref"]
    assert "(clinician)" in page.locator("#who").inner_text()

    # The worklist, a filter (from today), the keyboard, Enter.
    page.goto(f"{srv.url}/viewer/worklist")
    page.wait_for_selector("#worklist tbody tr.selected")
    today = made[0]["created_at"][:10]  # the day the studies were read (UTC), as the date field takes it
    page.fill("#f-since", today)
    page.click("#f-apply")
    page.wait_for_url(f"**/viewer/worklist?since={today}")
    page.wait_for_selector("#worklist tbody tr.selected")
    ids = page.locator("#worklist tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == [not_assessed["id"], chest_new["id"], chest_old["id"]]
    page.keyboard.press("j")
    assert _selected(page) == chest_new["id"]
    page.keyboard.press("Enter")
    _opened(page, chest_new["id"])

    # The reading view shows that prediction: its image (a grey radiograph), its result, no feedback yet.
    assert page.locator("#study").inner_text() == chest_new["study_ref"]
    assert page.locator("#decision").inner_text() == chest_new["decision"]["label"]
    shown = float(page.locator("#probs tbody tr").first.locator("td").nth(1).inner_text())
    assert shown == pytest.approx(chest_new["probabilities"][0]["probability"], abs=5e-4)
    page.uncheck("#overlay")
    grey = _grey(page)
    assert grey.std() > 10  # a real radiograph, not a blank pane
    page.check("#overlay")
    assert "not given feedback" in page.locator("#feedback-current").inner_text()
    assert page.locator("#nav-pos").inner_text() == "study 2 of 3 in the worklist"
    assert "N / P" in page.locator("#shortcuts").inner_text()
    _shot(page, tmp_path, "reading_from_worklist.png")

    # Feedback: given (POST), then changed (PUT).
    page.click("#agree")
    page.wait_for_selector("#feedback-status:has-text('Feedback recorded (agree)')")
    assert "Your feedback: agree" in page.locator("#feedback-current").inner_text()
    page.select_option("#corrected", "normal")
    page.click("#disagree")
    page.wait_for_selector("#feedback-status:has-text('Feedback changed (disagree, corrected to normal)')")
    assert page.locator("#disagree").get_attribute("aria-pressed") == "true"
    assert page.locator("#agree").get_attribute("aria-pressed") == "false"
    _shot(page, tmp_path, "reading_feedback_changed.png")

    stored = httpx.get(f"{srv.url}/v1/predictions/{chest_new['id']}", headers=keys.h("auditor")).json()["feedback"]
    mine = [f for f in stored if f["user_id"] == reader_id]
    assert [(f["agree"], f["superseded_at"] is None) for f in mine] == [(True, False), (False, True)]
    assert [f for f in mine if f["superseded_at"] is None][0]["corrected_label"] == "normal"
    audit = [json.loads(line) for line in httpx.get(f"{srv.url}/v1/audit", headers=keys.h("auditor"),
                                                    params={"fmt": "jsonl"}).text.splitlines() if line]
    rows = [r for r in audit if r["event"] == "feedback" and r["prediction_id"] == chest_new["id"]]
    assert [r["user_id"] for r in rows] == [reader_id, reader_id]
    assert rows[1]["outputs"]["replaces"] == {"feedback_id": mine[0]["id"], "agree": True, "corrected_label": None}

    # N: the next study in the worklist, without going back to it. Meanwhile this reader gave feedback on it
    # elsewhere (another tab): the viewer's POST is refused, the API's words are shown, the next press changes it.
    page.locator("#viewport").focus()
    page.keyboard.press("n")
    _opened(page, chest_old["id"])
    assert page.locator("#study").inner_text() == chest_old["study_ref"]
    with httpx.Client(base_url=srv.url) as other_tab:
        signed = other_tab.post("/v1/session", json={"username": "dr.reader", "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        r = other_tab.post(f"/v1/predictions/{chest_old['id']}/feedback", json={"agree": True},
                           headers={"X-CSRF-Token": signed.json()["csrf_token"]})
        assert r.status_code == 201, r.text
    page.click("#disagree")
    page.wait_for_selector("#feedback-status:has-text('Feedback not recorded')")
    refused = page.locator("#feedback-status").inner_text()
    assert "PUT" in refused and "You already gave feedback" in refused  # the API's message and action
    page.wait_for_selector("#feedback-current:has-text('Your feedback: agree')")
    page.click("#disagree")
    page.wait_for_selector("#feedback-status:has-text('Feedback changed (disagree)')")

    # P twice: back past the first chest study to the not-assessed one, where feedback is off and says why.
    page.keyboard.press("p")
    _opened(page, chest_new["id"])
    assert "Your feedback: disagree, corrected to normal" in page.locator("#feedback-current").inner_text()
    page.keyboard.press("p")
    _opened(page, not_assessed["id"])
    assert page.locator("#not-assessed").is_visible()
    reason = page.locator("#feedback-disabled")
    assert reason.is_visible() and "did not assess" in reason.inner_text()
    for control in ("#agree", "#disagree", "#corrected"):
        assert page.locator(control).is_disabled()
    assert page.locator("#prev-item").is_disabled()  # the first item of the list
    _shot(page, tmp_path, "reading_not_assessed.png")

    # Back to the worklist: the filter kept, the study just read selected.
    page.click("#back-to-worklist")
    page.wait_for_url(f"**/viewer/worklist?since={today}&selected={not_assessed['id']}")
    page.wait_for_selector("#worklist tbody tr.selected")
    assert page.locator("#f-since").input_value() == today
    assert _selected(page) == not_assessed["id"]
    assert "disagreed (normal)" in page.locator(f"#row-{chest_new['id']}").inner_text()

    # Cookie-authenticated throughout: no request carried an Authorization header (a "Bearer null" is a 401).
    assert api_calls and all(auth is None for _, auth in api_calls), api_calls
    assert any(c.startswith("PUT ") for c, _ in api_calls)
    assert page.evaluate("window.__cspViolations") == []

"""End-to-end: a reader signs in with a username and password and moves through the worklist with the keyboard
(headless Debian Chromium against a live uvicorn server)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session
from tests.serve.test_browser import RECORD_CSP_VIOLATIONS, browser  # noqa: F401  (the Chromium fixture)

from radiolens.serve.store.accounts import create_account

pytestmark = pytest.mark.browser
PASSWORD = "a long reading-room passphrase"


def _selected(page) -> str:
    return page.locator("#worklist tbody tr[aria-selected='true']").get_attribute("data-id")


def test_sign_in_and_move_through_the_worklist_with_the_keyboard(browser, live, kermany_samples, tmp_path):  # noqa: F811
    srv, keys = live(mc_dropout_passes=0)
    with Session(srv.server.config.app.state.service.engine) as s, s.begin():
        create_account(s, "dr.reader", PASSWORD, "clinician")
    made = []
    for path, _ in kermany_samples[:4]:
        r = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
                       files={"file": ("u", path.read_bytes(), "image/jpeg")}, timeout=60)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    newest_first = made[::-1]
    # the reader gave feedback on one already (with an API key here; the worklist shows it as theirs only if the
    # same user id: it is not, so it still awaits the signed-in reader's feedback)
    assert httpx.post(f"{srv.url}/v1/predictions/{made[0]}/feedback", headers=keys.h("clinician"),
                      json={"agree": True}).status_code == 201

    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(f"{srv.url}/viewer/worklist")
    page.wait_for_url("**/viewer/signin?next=*")  # not signed in: sent to the sign-in page
    page.fill("#username", "dr.reader")
    page.fill("#password", "not the passphrase")
    page.click("#signin-submit")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "wrong username or password" in page.locator("#signin-error").inner_text().lower()
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_url("**/viewer/worklist")
    page.wait_for_selector("#worklist tbody tr.selected")
    session = next(c for c in page.context.cookies() if c["name"] == "radiolens_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"

    ids = page.locator("#worklist tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == newest_first
    assert "j" in page.locator("#shortcuts").inner_text() and "Enter" in page.locator("#shortcuts").inner_text()
    assert _selected(page) == newest_first[0]
    page.keyboard.press("j")
    assert _selected(page) == newest_first[1]
    page.keyboard.press("ArrowDown")
    assert _selected(page) == newest_first[2]
    page.keyboard.press("k")
    assert _selected(page) == newest_first[1]
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")  # stays on the first row
    assert _selected(page) == newest_first[0]
    page.keyboard.press("j")

    shot = tmp_path / "worklist_keyboard.png"
    page.screenshot(path=str(shot), full_page=True)
    out_dir = os.environ.get("RADIOLENS_SCREENSHOT_DIR")
    if out_dir:
        shutil.copy(shot, Path(out_dir) / shot.name)

    # a filter, applied from the form, then back to the keyboard
    page.check("#f-awaiting")
    # wait for the filtered page itself: the old rows (and their selection) are on screen until it arrives
    with page.expect_response(lambda r: "/v1/predictions?" in r.url and "awaiting_feedback" in r.url):
        page.click("#f-apply")
    # ... and for its rows: the new table starts with its first row selected (the old one had the second)
    page.wait_for_function("document.querySelectorAll('#worklist tbody tr').length === 4 && "
                           "document.querySelector('#worklist tbody tr.selected') === "
                           "document.querySelector('#worklist tbody tr')")
    assert page.locator("#worklist tbody tr").count() == 4  # the key's feedback is not this reader's
    assert page.evaluate("window.__cspViolations") == []

    page.keyboard.press("j")
    target = _selected(page)
    page.keyboard.press("Enter")  # opens the selected prediction in the viewer
    page.wait_for_url(f"**/viewer/?prediction={target}")
    assert target == newest_first[1]
    assert page.evaluate("window.__cspViolations") == []

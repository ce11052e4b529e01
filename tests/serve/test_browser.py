"""End-to-end: the web viewer in headless Chromium (Debian's package) against a live uvicorn server."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RADIOLENS_CHROMIUM", "/usr/bin/chromium")
#: Collects ``securitypolicyviolation`` events in ``window.__cspViolations`` (an init script: it runs before the
#: page's own scripts and is not subject to the page's CSP).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
"""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    "(scripts/install-system-deps.sh). Browser tests fail rather than skip.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def test_viewer_end_to_end(browser, live, phi_dicom_bytes, tmp_path):
    srv, keys = live()
    study = tmp_path / "study.dcm"
    study.write_bytes(phi_dicom_bytes)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.add_init_script(RECORD_CSP_VIOLATIONS)

    page.goto(f"{srv.url}/viewer/")
    assert "script-src 'self'" in page.request.get(f"{srv.url}/viewer/").headers["content-security-policy"]
    assert "not a diagnosis" in page.locator("#advisory").inner_text()

    page.fill("#api-key", "rlk_wrong_key")
    page.click("#sign-in")
    page.wait_for_selector("#login-error:not([hidden])")
    login_error = page.locator("#login-error").inner_text()
    assert "Unknown or revoked key" in login_error and "administrator" in login_error  # what to do about it

    page.fill("#api-key", "")
    page.click("#sign-in")
    page.wait_for_selector("#login-error:has-text('No API key entered')")

    page.fill("#api-key", keys.clinician)
    page.click("#sign-in")
    page.wait_for_selector("#app:not([hidden])")
    assert "clinician" in page.locator("#who").inner_text()

    page.set_input_files("#file", str(study))
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    rows = page.locator("#probs tbody tr")
    assert rows.count() == 1 and rows.first.locator("td").first.inner_text() == "pneumonia"
    prob = float(rows.first.locator("td").nth(1).inner_text())
    assert 0.0 <= prob <= 1.0
    assert page.locator("#decision").inner_text() in ("pneumonia", "normal")
    assert page.locator("#review").inner_text().startswith(("Human review recommended:", "No review flag:"))
    assert page.locator("#study").inner_text().strip()

    page.wait_for_selector("#zoom-level:has-text('scale')", timeout=30_000)  # the image is drawn
    pane = page.locator("#viewport-wrap")
    with_overlay = pane.screenshot()
    (tmp_path / "viewer_overlay_on.png").write_bytes(page.screenshot())
    page.uncheck("#overlay")
    without_overlay = pane.screenshot()
    diff = np.abs(_pixels(with_overlay) - _pixels(without_overlay))
    assert diff.mean() > 2.0, f"overlay barely changes the image (mean abs diff {diff.mean():.2f})"
    assert (diff.max(axis=2) > 20).mean() > 0.02  # a visible area is coloured, not just noise
    grey = _pixels(without_overlay)[2:-2, 2:-2]
    assert np.allclose(grey[..., 0], grey[..., 1], atol=1) and grey.std() > 10  # a real grey radiograph is drawn

    # a narrower window (numbers typed in the W field): more contrast
    page.fill("#ww", str(float(page.locator("#ww").input_value()) / 4))
    page.press("#ww", "Enter")
    narrowed = _pixels(pane.screenshot())[2:-2, 2:-2]
    assert narrowed.std() > grey.std()

    page.select_option("#corrected", "normal")
    page.click("#disagree")
    page.wait_for_selector("#feedback-status:has-text('recorded')")  # not wait_for_function: the CSP forbids eval
    assert "corrected to normal" in page.locator("#feedback-status").inner_text()
    page.screenshot(path=str(tmp_path / "viewer_final.png"))
    out_dir = os.environ.get("RADIOLENS_SCREENSHOT_DIR")
    if out_dir:
        for name in ("viewer_overlay_on.png", "viewer_final.png"):
            shutil.copy(tmp_path / name, Path(out_dir) / name)

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from radiolens.serve.store.tables import Feedback

    with Session(srv.server.config.app.state.service.engine) as s:
        fb = s.scalars(select(Feedback)).all()
    assert len(fb) == 1 and fb[0].agree is False and fb[0].corrected_label == "normal"
    assert not [e for e in console_errors if "401" not in e], console_errors
    assert page.evaluate("window.__cspViolations") == []  # the viewer works under its Content-Security-Policy


def test_viewer_shows_not_assessed_for_a_non_chest_image(browser, live, pydicom_data_files, tmp_path):
    srv, keys = live()
    ct = next(p for p in pydicom_data_files if p.name == "693_UNCR.dcm")  # a real CT slice
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{srv.url}/viewer/")
    page.fill("#api-key", keys.clinician)
    page.click("#sign-in")
    page.wait_for_selector("#app:not([hidden])")
    page.set_input_files("#file", str(ct))
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    banner = page.locator("#not-assessed")
    assert banner.is_visible() and "outside what the model was trained on" in banner.inner_text()
    assert not page.locator("#probs").is_visible()
    assert page.locator("#decision").inner_text() == "not assessed"
    review = page.locator("#review").inner_text()
    assert review.startswith("Human review recommended:") and "modality CT" in review
    assert page.locator("#overlay").is_disabled()  # no heatmap for a withheld output
    page.screenshot(path=str(tmp_path / "viewer_not_assessed.png"), full_page=True)
    out_dir = os.environ.get("RADIOLENS_SCREENSHOT_DIR")
    if out_dir:
        shutil.copy(tmp_path / "viewer_not_assessed.png", Path(out_dir) / "viewer_not_assessed.png")


def _sign_in(page, srv, key: str) -> None:
    page.goto(f"{srv.url}/viewer/")
    page.fill("#api-key", key)
    page.click("#sign-in")
    page.wait_for_selector("#app:not([hidden])")


def _save_screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    out_dir = os.environ.get("RADIOLENS_SCREENSHOT_DIR")
    if out_dir:
        shutil.copy(tmp_path / name, Path(out_dir) / name)


def _assert_result_cleared(page) -> None:
    """Nothing of an earlier study is on screen: panel hidden, and emptied, so unhiding it could show nothing."""
    assert page.locator("#result").is_hidden()
    assert page.locator("#probs tbody tr").count() == 0
    for sel in ("#decision", "#review", "#study", "#model-ref", "#not-assessed", "#feedback-status"):
        assert page.locator(sel).text_content() == "", sel
    drawn = page.evaluate("""() => Array.from(document.querySelectorAll('#result canvas')).some((c) => {
        const ctx = c.getContext('2d');
        return c.width > 0 && c.height > 0 && ctx.getImageData(0, 0, c.width, c.height).data.some(v => v !== 0); })""")
    assert not drawn, "the previous study's pixels (or its heatmap) are still on a canvas"
    for sel in ("#scope-warning", "#scope-note", "#zoom-level", "#pixel-info"):
        assert page.locator(sel).text_content() == "", sel
    assert page.locator("#scope-table tbody tr").count() == 0


def test_refused_upload_clears_the_previous_result(browser, live, phi_dicom_bytes, pydicom_data_files, tmp_path):
    """A clinician analyses a chest study, then uploads a real ultrasound (refused: burned-in text is common in
    US): the chest study's image and verdict must not stay on screen beside the ultrasound, and the refusal must
    say what to do without naming a command-line flag."""
    srv, keys = live()
    chest = tmp_path / "chest.dcm"
    chest.write_bytes(phi_dicom_bytes)
    us = next(p for p in pydicom_data_files if p.name == "US1_UNCR.dcm")  # a real ultrasound, no BurnedInAnnotation
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    _sign_in(page, srv, keys.clinician)

    page.set_input_files("#file", str(chest))
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.locator("#probs tbody tr").count() == 1

    # Upload the refused file with Analyse pressed straight away (no other interaction in between).
    page.set_input_files("#file", str(us))
    page.click("#predict")
    page.wait_for_selector("#upload-error:not([hidden])", timeout=60_000)
    _save_screenshot(page, tmp_path, "viewer_refused_upload.png")
    _assert_result_cleared(page)
    error = page.locator("#upload-error").inner_text()
    assert "patient details" in error and "US" in error
    assert "Upload a chest radiograph" in error  # what to do next
    assert "--" not in error and "allow-burned-in" not in error  # no command-line flag for a clinician

    # Choosing another file clears a shown result as well, before Analyse is pressed.
    page.set_input_files("#file", str(chest))
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.locator("#upload-error").is_hidden()
    page.set_input_files("#file", str(us))
    _assert_result_cleared(page)


def test_every_viewer_error_clears_the_result_and_says_what_to_do(browser, live, phi_dicom_bytes, tmp_path):
    """The other ways an upload fails after a shown result: a file that is no image, a key revoked meanwhile,
    the service unreachable. Each clears the result and shows a message plus an action, never a flag."""
    srv, keys = live()
    chest = tmp_path / "chest.dcm"
    chest.write_bytes(phi_dicom_bytes)
    junk = tmp_path / "notes.dcm"
    junk.write_bytes(b"this is a text file, not an image\n" * 20)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    _sign_in(page, srv, keys.clinician)

    def analyse(path: Path, meanwhile=lambda: None) -> str:
        page.set_input_files("#file", str(chest))
        page.click("#predict")
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        meanwhile()
        page.set_input_files("#file", str(path))
        page.click("#predict")
        page.wait_for_selector("#upload-error:not([hidden])", timeout=60_000)
        _assert_result_cleared(page)
        text = page.locator("#upload-error").inner_text()
        assert "--" not in text
        what, todo = (page.locator(f"#upload-error .{c}").inner_text() for c in ("what", "todo"))
        assert what.strip() and todo.strip()
        return text

    assert "Upload a chest radiograph as a DICOM file" in analyse(junk)

    # The service stops answering: no JSON body at all, the viewer's own wording.
    text = analyse(chest, meanwhile=lambda: page.route("**/v1/predictions", lambda route: route.abort()))
    assert "cannot be reached" in text and "network connection" in text
    page.unroute("**/v1/predictions")

    # The key is revoked (by an admin, through the API) while the reader is signed in.
    import httpx

    def revoke() -> None:
        key_id = keys.clinician.split("_")[1]
        assert httpx.delete(f"{srv.url}/v1/keys/{key_id}", headers=keys.h("admin")).status_code == 200

    assert "Sign in again" in analyse(chest, meanwhile=revoke)


# ---------------------------------------------------------------------- the reading view (Cornerstone3D)
def _analyse(page, path: Path) -> None:
    page.set_input_files("#file", str(path))
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_selector("#zoom-level:has-text('scale')", timeout=30_000)  # the image is drawn


def _shot(page, selector: str = "#viewport-wrap") -> np.ndarray:
    """The pane as drawn (image and heatmap layer), without its 1 px border."""
    return _pixels(page.locator(selector).screenshot())[2:-2, 2:-2]


def _grey(page, selector: str = "#viewport-wrap") -> np.ndarray:
    return _shot(page, selector)[..., 0]


def _set_window(page, width: float, level: float) -> None:
    page.fill("#ww", str(width))
    page.fill("#wc", str(level))
    page.press("#wc", "Enter")


def test_reading_view_window_level_zoom_invert(browser, live, pydicom_data_files, tmp_path):
    """A real 16-bit CT slice in the reading view: window/level set in numbers and by dragging changes the rendered
    pixel values as a window must; zoom changes the drawn size by the factor shown; invert reverses the greys."""
    srv, keys = live()
    ct = next(p for p in pydicom_data_files if p.name == "693_UNCR.dcm")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    _sign_in(page, srv, keys.clinician)
    _analyse(page, ct)
    import pydicom

    assert f"{pydicom.dcmread(str(ct)).BitsStored} bits stored" in page.locator("#pixel-info").inner_text()
    _save_screenshot(page, tmp_path, "reading_default.png")
    default = _grey(page)
    assert default.std() > 10  # a real image, in greys

    # Rendered values follow the window: all values above the window's top -> black; below its bottom -> white
    # (MONOCHROME2); a narrow window around the body's values -> more contrast than the default.
    _set_window(page, 10, 30000)
    assert _grey(page).max() < 5
    _set_window(page, 10, -30000)
    grey = _grey(page)
    assert np.percentile(grey, 50) > 250
    _set_window(page, 400, 40)  # a soft-tissue window in HU
    soft = _grey(page)
    assert not np.allclose(soft, default, atol=3)
    _save_screenshot(page, tmp_path, "reading_window_400_40.png")

    # Dragging with the left button changes the window (and the numbers shown).
    ww_before = float(page.locator("#ww").input_value())
    box = page.locator("#viewport").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 150, cy + 80, steps=8)
    page.mouse.up()
    assert float(page.locator("#ww").input_value()) != ww_before
    assert not np.allclose(_grey(page), soft, atol=3)

    # Presets put a different window in place, and say which.
    page.click("[data-preset=lung]")
    assert "lung" in page.locator("#preset-name").inner_text()
    assert (float(page.locator("#ww").input_value()), float(page.locator("#wc").input_value())) == (1500.0, -600.0)

    # Zoom: the drawn image shrinks by the factor the scale read-out states.
    page.keyboard.press("0")  # reset: fit, default window
    page.locator("#viewport").focus()
    fit_scale = float(page.locator("#zoom-level").get_attribute("data-scale"))
    fit_width = _drawn_width(_grey(page))
    page.keyboard.press("-")
    page.keyboard.press("-")
    scale = float(page.locator("#zoom-level").get_attribute("data-scale"))
    assert scale == pytest.approx(fit_scale * 0.64, rel=0.02)
    assert _drawn_width(_grey(page)) == pytest.approx(fit_width * 0.64, rel=0.06)
    _save_screenshot(page, tmp_path, "reading_zoomed_out.png")
    page.keyboard.press("a")  # 1:1
    assert float(page.locator("#zoom-level").get_attribute("data-scale")) == pytest.approx(1.0, rel=0.02)
    page.keyboard.press("f")
    assert float(page.locator("#zoom-level").get_attribute("data-scale")) == pytest.approx(fit_scale, rel=0.02)

    # Invert reverses the grey scale.
    before = _grey(page)
    page.keyboard.press("i")
    assert page.locator("#invert").get_attribute("aria-pressed") == "true"
    inverted = _grey(page)
    h, w = before.shape
    inside = (slice(h // 4, 3 * h // 4), slice(w // 2 - h // 4, w // 2 + h // 4))  # within the drawn image
    assert np.abs((255 - before[inside]) - inverted[inside]).mean() < 2 and before[inside].std() > 10
    assert "1 / 2 / 3" in page.locator("#shortcuts").inner_text()  # the shortcuts are listed on screen
    assert not console_errors, console_errors
    assert page.evaluate("window.__cspViolations") == []


def _drawn_width(grey: np.ndarray) -> int:
    """Width in screen pixels of the columns holding any image content (the background is black)."""
    cols = np.flatnonzero((grey > 8).mean(axis=0) > 0.02)
    return int(cols[-1] - cols[0] + 1) if cols.size else 0


def test_reading_view_warns_for_an_adult_film_on_a_paediatric_model(browser, live, phi_dicom_bytes, tmp_path):
    """The test model states Kermany's population (children aged 1-5, AP): the adult SIIM PA film gets a visible
    warning beside its result, with the age band, sex and view the de-identified header kept; the heatmap can be
    shown overlaid or side by side."""
    srv, keys = live()
    study = tmp_path / "adult.dcm"
    study.write_bytes(phi_dicom_bytes)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _sign_in(page, srv, keys.clinician)
    _analyse(page, study)
    warning = page.locator("#scope-warning")
    assert warning.is_visible()
    text = warning.inner_text()
    assert "OUTSIDE THE MODEL'S INTENDED POPULATION" in text and "Age outside" in text and "ages 1-5 years" in text
    scope = page.locator("#scope-table").inner_text()
    assert "adult (18-64)" in scope and "PA" in scope and "32 × 32 px" in scope and "Paediatric" in scope
    verdict = page.locator("#probs tbody tr td.verdict").inner_text()
    assert verdict in ("▲ POSITIVE (above threshold)", "negative (below threshold)")  # said in words
    _save_screenshot(page, tmp_path, "reading_adult_on_paediatric.png")

    with_heat = _shot(page)
    page.keyboard.press("h")
    without = _shot(page)
    assert np.abs(with_heat - without).mean() > 1.0
    page.keyboard.press("h")
    page.locator("#layout").select_option("side-by-side")
    page.wait_for_selector("#viewport-heat:not([hidden])")
    left = _shot(page)
    right = _shot(page, "#viewport-heat-wrap")
    assert np.allclose(left[..., 0], left[..., 2], atol=2)  # left: the plain grey image
    assert np.abs(right[..., 0] - right[..., 2]).mean() > 2  # right: coloured by the heatmap
    _save_screenshot(page, tmp_path, "reading_side_by_side.png")

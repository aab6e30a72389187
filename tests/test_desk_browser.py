"""The desk in a real headless Chromium (Selenium; Debian ``chromium`` and ``chromium-driver``).

The desk serves the real 2024 DKI Jakarta cases (the shipped documents through the offline replay).
A person logs in, opens a case with an OCR suggestion, accepts it, and finds the decision in the
audit log; a script in a note stays text; a visitor without a session gets the login page; pages
raise no browser errors (a Content-Security-Policy violation would be one).

``PANTAU_SCREENSHOTS=docs/img`` also saves the pages as PNG (the README's screenshots).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from pantau import demo_data
from pantau.desk import audit
from pantau.desk.auth import create_user
from pantau.desk.commands import serving
from pantau.desk.db import AlertRecord, Case, connect
from pantau.desk.feed import apply_message
from pantau.desk.web import create_app
from pantau.replay import records_of, replay
from pantau.stream.broker import free_port

from .conftest import needs_chromium

pytestmark = pytest.mark.browser

PASSWORD = "kotak-suara-2024!"
XSS = '<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">'


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory):
    needs_chromium()
    sessions = connect(f"sqlite:///{tmp_path_factory.mktemp('desk')}/desk.db")
    with sessions() as session:
        for record in records_of([str(demo_data())]):
            raw = record.envelope.model_dump_json(by_alias=True, exclude_unset=True).encode()
            apply_message(session, "file", f"demo:{record.line}", raw, is_alert=False)
        for alert in replay(records_of([str(demo_data())])):
            apply_message(session, "file", alert.alert_id, alert.to_json(), is_alert=True)
        create_user(session, "rina", PASSWORD, "verifier", "Rina (verifikator)")
        create_user(session, "ani", PASSWORD, "auditor", "Ani (auditor)")
        session.commit()
    with serving(create_app(sessions), "127.0.0.1", free_port()) as url:
        yield url, sessions


def login(driver, url: str, username: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    assert driver.find_element(By.ID, "queue")


#: The form photos are KPU's, loaded from its object store (lazily, so whether the browser has tried by the
#: time the log is read depends on timing); the test machines have no route to it.
PHOTO_HOST = "https://sirekap-obj-formc.kpu.go.id/"


def browser_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon" not in e["message"] and not e["message"].startswith(PHOTO_HOST)]  # fmt: skip


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("PANTAU_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1360, min(max(height, 900), 4000))
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def open_case_with(sessions, detector: str) -> int:
    with sessions() as session:
        return session.execute(select(Case.id).join(AlertRecord, AlertRecord.case_id == Case.id)
                               .where(AlertRecord.detector == detector, Case.status == "open").order_by(Case.id)).scalars().first()  # fmt: skip


def test_accepting_a_suggestion_lands_in_the_audit_log(desk, browser) -> None:
    from selenium.webdriver.common.by import By

    url, sessions = desk
    login(browser, url, "rina")
    screenshot(browser, "desk-queue")
    case_id = open_case_with(sessions, "ocr.misread")
    browser.find_element(By.CSS_SELECTOR, f'a.case-link[href="/cases/{case_id}"]').click()
    assert browser.find_elements(By.CSS_SELECTOR, "#form td.fail"), "the failing identity's numbers are highlighted"
    assert browser.find_elements(By.CSS_SELECTOR, "#fingerprint svg"), "the kecamatan fingerprint is drawn"
    screenshot(browser, "desk-case")
    field = browser.find_element(By.CSS_SELECTOR, '#suggestions input[name="field"]').get_attribute("value")
    proposed = browser.find_element(By.CSS_SELECTOR, '#suggestions input[name="proposed"]').get_attribute("value")
    browser.find_element(By.CSS_SELECTOR, "#suggestions button.accept").click()
    assert browser.find_element(By.ID, "saved")
    assert browser.find_element(By.ID, "case-status").text == "diputuskan"
    assert f"{field} = {proposed}" in browser.find_element(By.ID, "decisions").text
    browser.get(url + "/audit")
    assert "Rantai hash utuh" in browser.find_element(By.ID, "chain").text
    newest = browser.find_element(By.CSS_SELECTOR, "#audit tr:nth-child(2)").text
    assert "rina" in newest and "decide" in newest and f'"{field}":{proposed}' in newest.replace(" ", "")
    screenshot(browser, "desk-audit")
    assert browser_errors(browser) == []
    with sessions() as session:
        assert audit.verify(session).ok


def test_a_script_in_a_note_stays_text(desk, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, sessions = desk
    login(browser, url, "rina")
    case_id = open_case_with(sessions, "form.sum_total")
    browser.get(f"{url}/cases/{case_id}")
    Select(browser.find_element(By.ID, "decision")).select_by_value("false_alarm")
    browser.find_element(By.ID, "note").send_keys(XSS)
    browser.find_element(By.ID, "submit-decision").click()
    assert browser.find_element(By.ID, "saved")
    assert browser.find_element(By.CSS_SELECTOR, "#decisions td.note").text == XSS
    assert browser.execute_script("return window.__xss === undefined")
    browser.get(url + "/audit")
    assert "<script>window.__xss = 1</script>" in browser.find_element(By.ID, "audit").text  # as JSON text, quotes escaped
    assert browser.execute_script("return window.__xss === undefined")


def test_no_session_no_case_and_an_auditor_cannot_decide(desk, browser) -> None:
    from selenium.webdriver.common.by import By

    url, sessions = desk
    case_id = open_case_with(sessions, "form.sum_valid")
    browser.get(f"{url}/cases/{case_id}")
    assert browser.current_url.startswith(url + "/login")
    assert not browser.find_elements(By.ID, "alerts")
    login(browser, url, "ani")
    browser.get(f"{url}/cases/{case_id}")
    assert browser.find_element(By.ID, "alerts")
    assert not browser.find_elements(By.ID, "decision-form")
    browser.get(f"{url}/users")
    assert "tidak berwenang" in browser.find_element(By.TAG_NAME, "main").text

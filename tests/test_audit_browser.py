"""The audit report in a real headless Chromium: it opens from disk with nothing else, raises no
browser error, and shows what its files hold. Also the report of the real 2024 dev provinces."""

from __future__ import annotations

import csv

import pytest

from pantau import demo_data
from pantau.audit import audit

from .conftest import SIREKAP, shared_file


@pytest.mark.browser
def test_the_report_opens_in_chromium_without_errors_and_shows_its_flagged_tps(tmp_path, browser):
    from selenium.webdriver.common.by import By

    audit([demo_data()], tmp_path / "report")
    browser.get((tmp_path / "report" / "index.html").as_uri())
    assert "audit report" in browser.title
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    with open(tmp_path / "report" / "alerts.csv", encoding="utf-8", newline="") as rows:
        flagged = {(a["kode_tps"], a["jenis"]) for a in csv.DictReader(rows) if a["kode_tps"]}
    shown = browser.find_elements(By.CSS_SELECTOR, "#flagged tr[data-tps]")
    assert len(shown) == len(flagged) > 0
    assert browser.find_element(By.ID, "flagged").is_displayed()
    charts = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    assert len(charts) >= 4  # arrivals, alerts per hour, last digit, fingerprint
    assert all(chart.size["width"] > 100 for chart in charts)
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#flagged a")]
    assert links and all(link.startswith("https://") for link in links)


@pytest.mark.shared_data
def test_the_real_2024_dev_provinces_audit_with_their_revisions(tmp_path):
    revisions = shared_file("sirekap", "tps_revisions_dev.csv.gz")
    latest = SIREKAP / "tps_latest_dev.csv.gz"
    run, _ = audit([revisions, latest], tmp_path / "report", jobs=2)
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    with open(tmp_path / "report" / "regions.csv", encoding="utf-8", newline="") as rows:
        regions = {r["provinsi"]: r for r in csv.DictReader(rows)}
    assert set(regions) == {"34", "51", "99"}
    assert int(regions["34"]["tps_ballots"]) + int(regions["51"]["tps_ballots"]) > 20_000
    assert run.summary.alerts["form.sum_valid"] > 100 and run.summary.alerts["ocr.misread"] > 50
    assert "DAERAH ISTIMEWA YOGYAKARTA" in page and "LUAR NEGERI" in page

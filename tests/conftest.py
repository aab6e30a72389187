"""Shared fixtures: the shipped DKI sample (always there) and ../shared/data (skipped where absent)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from pantau import demo_data
from pantau.schemas import Tally, normalize, parse_envelope

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SIREKAP = SHARED / "sirekap"
CURATED = SIREKAP / "curated"


def load_bench(name: str):
    """A script of bench/ (not a package), loaded from its file as a module."""
    spec = importlib.util.spec_from_file_location(f"pantau_bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def needs_chromium() -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")


@pytest.fixture
def browser():
    """A headless Chromium (Selenium) that keeps the browser console's log."""
    needs_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared/data reference set, absent in a user's clone)")
    return path


@pytest.fixture(scope="session")
def dki_envelopes() -> list[dict]:
    """The 1,000 shipped real DKI Jakarta envelopes, decoded."""
    with gzip.open(demo_data(), "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def curated() -> dict[str, dict]:
    """The curated real edge-case documents by name (e.g. ``ocr_misread_paslon03_551``), as envelopes."""
    if not CURATED.exists():
        pytest.skip(f"needs {CURATED} (the ../shared/data reference set)")
    documents = {}
    for path in sorted(CURATED.glob("*.json")):
        name, kode = path.stem.rsplit("__", 1)
        documents[name] = {"kode_tps": kode, "jenis": "ppwp", "doc": json.loads(path.read_text())}
    return documents


def tally_of(kode_tps: str = "3173011005116", jenis: str = "ppwp", **doc) -> Tally:
    """A tally from document fields given as keyword arguments."""
    return normalize(parse_envelope({"kode_tps": kode_tps, "jenis": jenis, "doc": doc}))


#: A real consistent document (complete_consistent__3173011005116), inlined so tests need no ../shared.
CONSISTENT_DOC = {
    "chart": {"null": None, "100025": 53, "100026": 118, "100027": 36},
    "administrasi": {
        "suara_sah": 207, "suara_total": 209, "pemilih_dpt_j": 276, "pemilih_dpt_l": 138, "pemilih_dpt_p": 138,
        "pengguna_dpt_j": 202, "pengguna_dpt_l": 96, "pengguna_dpt_p": 106, "pengguna_dptb_j": 0,
        "pengguna_dptb_l": 0, "pengguna_dptb_p": 0, "suara_tidak_sah": 2, "pengguna_total_j": 209,
        "pengguna_total_l": 102, "pengguna_total_p": 107, "pengguna_non_dpt_j": 7, "pengguna_non_dpt_l": 6,
        "pengguna_non_dpt_p": 1,
    },
    "psu": None, "ts": "2024-02-15 00:41:44", "status_suara": True, "status_adm": True,
}  # fmt: skip


#: The real misread TPS 3173011002090 (curated ocr_misread_paslon03_551): paslon 03's 10 read as 551.
MISREAD_DOC = {
    "chart": {"null": None, "100025": 105, "100026": 48, "100027": 551},
    "administrasi": {
        "suara_sah": 163, "suara_total": 167, "pemilih_dpt_j": 210, "pemilih_dpt_l": 106, "pemilih_dpt_p": 104,
        "pengguna_dpt_j": 167, "pengguna_dpt_l": 85, "pengguna_dpt_p": 82, "pengguna_dptb_j": 0,
        "pengguna_dptb_l": 0, "pengguna_dptb_p": 0, "suara_tidak_sah": 4, "pengguna_total_j": 167,
        "pengguna_total_l": 85, "pengguna_total_p": 82, "pengguna_non_dpt_j": 0, "pengguna_non_dpt_l": 0,
        "pengguna_non_dpt_p": 0,
    },
    "psu": None, "ts": "2024-02-16 12:51:22", "status_suara": True, "status_adm": True,
}  # fmt: skip


@pytest.fixture(scope="module")
def broker():
    """A Tansu broker on a free loopback port for the module (tests/test_stream.py has its own, which also
    stops the workers it started)."""
    from pantau.stream.broker import EmbeddedBroker

    instance = EmbeddedBroker(stop_timeout=5.0)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()

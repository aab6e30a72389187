"""The verification desk: its web API (login, sessions, CSRF, roles, queue, case page, decisions) and its
domain (case life cycle, verdicts in the outbox, the hash-chained audit log, metrics, the Kafka feed).

The input is real: the 1,000 shipped DKI documents and the offline replay's 172 alerts on them, loaded
once (``load_files``) into a template database with one account per role; every test works on its own
copy (a SQLite file in its ``tmp_path``). Small alerts are crafted where the sample has none (regional
alerts, revisions, hostile text).
"""

from __future__ import annotations

import copy
import hashlib
import html
import io
import itertools
import json
import re
import shutil
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jsonschema
import orjson
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import sessionmaker

from pantau import demo_data
from pantau.cli import main as cli_main
from pantau.desk import audit, auth, cases
from pantau.desk.cases import QueueFilter, decide, ingest_alert, ingest_submission, queue, reopen
from pantau.desk.db import AlertRecord, AuditEntry, Case, Decision, LoginFailure, LoginSession, Outbox, Submission, User, connect
from pantau.desk.feed import Feed, apply_message, load_files
from pantau.desk.metrics import DESK, DeskMetrics
from pantau.desk.web import SESSION_COOKIE, create_app
from pantau.detectors.form import Capacity
from pantau.detectors.inspector import TpsInspector
from pantau.replay import records_of, replay
from pantau.schemas import Alert, Verdict, parse_envelope, parse_verdict
from pantau.schemas.alert import alert_id
from pantau.sources import Record

from .conftest import MISREAD_DOC, ROOT

PASSWORD = "kotak suara 2024 aman"
USERS = {"verifier": "rina", "supervisor": "sari", "auditor": "budi"}
#: Real TPSs of the sample: sum of votes ≠ valid votes (critical), and two voter identities (warning, info).
SUM_VALID_TPS = "3101011001003"
#: ocr.misread suggests administrasi.pengguna_total_p 85 → 86; the photo of page 2 is missing (null).
OCR_TPS = "3101011003006"
#: Not in the sample: the real misread document (paslon 03's 10 read as 551) is filed under this code.
FRESH_TPS = "3171011001001"
VERDICT_SCHEMA = json.loads((ROOT / "schemas" / "json" / "pantau.verdicts.schema.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@dataclass(frozen=True)
class Demo:
    db: Path
    alerts: list[Alert]
    envelopes: dict[str, dict]

    def alerts_of(self, kode_tps: str) -> list[Alert]:
        return [a for a in self.alerts if a.kode_tps == kode_tps]


def close(sessions: sessionmaker) -> None:
    sessions.kw["bind"].dispose()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, dki_envelopes: list[dict]) -> Demo:
    """The shipped sample replayed and loaded once, with rina (verifier), sari (supervisor), budi (auditor)."""
    root = tmp_path_factory.mktemp("desk-template")
    alerts = list(replay(records_of([str(demo_data())])))
    alerts_file = root / "alerts.jsonl"
    alerts_file.write_bytes(b"".join(a.to_json() + b"\n" for a in alerts))
    path = root / "desk.db"
    sessions = connect(f"sqlite:///{path}")
    assert load_files(sessions, [alerts_file], [str(demo_data())]) == (1000, 172)
    with sessions() as session:
        for role, username in USERS.items():
            auth.create_user(session, username, PASSWORD, role, display_name=username.title())
        session.commit()
        session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))  # everything in the file the tests copy
    close(sessions)
    envelopes = {e["kode_tps"]: e for e in dki_envelopes}
    assert FRESH_TPS not in envelopes
    return Demo(path, alerts, envelopes)


@pytest.fixture
def sessions(demo: Demo, tmp_path: Path):
    path = tmp_path / "desk.db"
    shutil.copyfile(demo.db, path)
    factory = connect(f"sqlite:///{path}")
    yield factory
    close(factory)


@pytest.fixture
def db_url(sessions: sessionmaker, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'desk.db'}"


@pytest.fixture
def app(sessions: sessionmaker):
    return create_app(sessions)


def form_csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


class Browser:
    """One person's browser: its own cookies; ``post`` adds the session's CSRF token unless given."""

    def __init__(self, app, username: str | None = None, password: str = PASSWORD, client: tuple[str, int] = ("testclient", 50000)):
        self.client = TestClient(app, follow_redirects=False, client=client)
        self.csrf: str | None = None
        if username:
            response = self.login(username, password)
            assert response.status_code == 303, response.text
            self.csrf = form_csrf(self.get("/").text)

    def login(self, username: str, password: str, next: str = "/"):
        token = form_csrf(self.client.get("/login").text)
        return self.client.post("/login", data={"username": username, "password": password, "csrf": token, "next": next})

    def get(self, url: str, **params: Any):
        return self.client.get(url, params=params or None)

    def post(self, url: str, **data: Any):
        data.setdefault("csrf", self.csrf)
        return self.client.post(url, data=data)


def user(session, username: str) -> User:
    return session.execute(select(User).where(User.username == username)).scalar_one()


def tps_case(session, kode_tps: str, jenis: str = "ppwp") -> Case:
    return session.execute(select(Case).where(Case.key == f"tps:{kode_tps}:{jenis}")).scalar_one()


def case_id(sessions: sessionmaker, kode_tps: str) -> int:
    with sessions() as session:
        return tps_case(session, kode_tps).id


def count(session, model, *where) -> int:
    return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def audit_entries(session) -> list[AuditEntry]:
    return list(session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())


def crafted(kode_tps: str | None, detector: str, severity: str = "warning", *, level: str = "tps", region: str | None = None,
            jenis: str = "ppwp", evidence: dict | None = None, reason: str = "Temuan uji.", resolves: list[str] = ()) -> Alert:  # fmt: skip
    """A hand-made alert, its id computed as the detectors do."""
    evidence = evidence if evidence is not None else {"test": detector}
    region = region or kode_tps
    return Alert(alert_id=alert_id(detector, jenis, region, evidence), detector=detector, severity=severity, jenis=jenis,
                 kode_tps=kode_tps, region=region, level=level, score=1.0, reason=reason, reason_en=reason, evidence=evidence,
                 resolves=list(resolves), observed_at=None)  # fmt: skip


def kecamatan_alert(region: str = "310101", detector: str = "stat.last_digit", **kw: Any) -> Alert:
    evidence = {"test": "last_digit", "statistic": 31.5, "expected": 9.0, "textbook": 9.0, "pvalue": 1e-5,
                "adjusted_pvalue": 1e-3, "n": 120, "top_tps": [SUM_VALID_TPS]}  # fmt: skip
    return crafted(None, detector, level="kecamatan", region=region, evidence=evidence, **kw)


def tps_alerts(envelopes: list[dict]) -> list[Alert]:
    """What the TPS detectors find in these versions, in order (revision alerts included)."""
    records = [Record("test", n, b"", parse_envelope(e)) for n, e in enumerate(envelopes, 1)]
    return list(replay(records, inspector=TpsInspector(Capacity())))


def submit_versions(session, kode_tps: str, docs: list[dict]) -> list[Alert]:
    """As the stream delivers them: each version of the form, then the alerts it raised."""
    envelopes: list[dict] = []
    alerts: list[Alert] = []
    for n, doc in enumerate(docs, 1):
        envelopes.append({"kode_tps": kode_tps, "jenis": "ppwp", "doc": copy.deepcopy(doc)})
        ingest_submission(session, f"test:{kode_tps}:{n}", envelopes[-1])
        for alert in tps_alerts(envelopes):
            if ingest_alert(session, alert):
                alerts.append(alert)
    return alerts


def fixed_misread() -> dict:
    doc = copy.deepcopy(MISREAD_DOC)
    doc["chart"]["100027"] = 10  # as on the photo: every identity holds again
    return doc


def decide_as(sessions: sessionmaker, kode_tps: str, username: str = "rina", decision: str = "false_alarm",
              note: str = "sesuai foto C.Hasil", **kw: Any) -> Decision:  # fmt: skip
    with sessions() as session:
        row = decide(session, tps_case(session, kode_tps), user(session, username), decision, note, **kw)
        session.commit()
        return row


def form_cells(page: str) -> dict[str, tuple[set[str], str]]:
    """The case page's form: path → (CSS classes, text) of each number's cell."""
    cells = re.findall(r'<td class="(num[^"]*)" title="([^"]+)">([^<]*)</td>', page)
    return {path: (set(classes.split()), html.unescape(value)) for classes, path, value in cells}


def photos(page: str) -> list[tuple[str, int]]:
    return [(html.unescape(url), int(n)) for url, n in re.findall(r'<a href="([^"]*)" rel="noopener noreferrer" target="_blank">halaman (\d+)<br>', page)]


def case_links(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'class="case-link" href="/cases/(\d+)"', page)]


def error_of(page: str) -> str:
    found = re.search(r'<div class="error" id="(?:error|login-error)">(.*?)</div>', page, re.DOTALL)
    return html.unescape(found.group(1)) if found else ""


# --------------------------------------------------------------------------------------------------
# 1. Login required everywhere but /health


def test_every_route_but_health_requires_login(app, sessions: sessionmaker):
    target = case_id(sessions, SUM_VALID_TPS)
    anonymous = TestClient(app, follow_redirects=False)
    covered = set()
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in ("/health", "/login"):
            continue
        url = route.path.replace("{case_id}", str(target))
        for method in route.methods:
            covered.add((method, route.path))
            if method == "GET":
                response = anonymous.get(url)
                assert response.status_code == 303, (method, url)
                assert response.headers["location"] == "/login?" + urlencode({"next": url})
            else:  # a complete, otherwise acceptable form: only the missing login stops it
                response = anonymous.request(method, url, data={
                    "csrf": "x", "decision": "false_alarm", "note": "n", "field": "chart.100025", "proposed": "1",
                    "username": "mallory", "password": PASSWORD, "role": "supervisor"})  # fmt: skip
                assert response.status_code == 401, (method, url)
                assert response.json() == {"detail": "login required"}
    assert covered >= {("GET", "/"), ("GET", "/cases/{case_id}"), ("GET", "/audit"), ("GET", "/users"), ("POST", "/logout"),
                       ("POST", "/cases/{case_id}/decide"), ("POST", "/cases/{case_id}/accept"), ("POST", "/cases/{case_id}/reopen"),
                       ("POST", "/users")}  # fmt: skip
    with sessions() as session:
        assert count(session, Decision) == count(session, AuditEntry) == 0
        assert count(session, User, User.username == "mallory") == 0
    health = anonymous.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"

    # The same pages open once logged in (so the redirects above came from the login check).
    supervisor = Browser(app, "sari")
    for route in app.routes:
        if isinstance(route, APIRoute) and "GET" in route.methods and route.path not in ("/health", "/login"):
            assert supervisor.get(route.path.replace("{case_id}", str(target))).status_code == 200, route.path


def test_pages_carry_security_headers(app):
    response = Browser(app, "rina").get("/")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------------------------------
# 2. Login


def test_wrong_password_and_unknown_user_get_the_same_refusal_and_no_session(app, sessions: sessionmaker):
    browser = Browser(app)
    wrong = browser.login("rina", PASSWORD + "!")
    unknown = browser.login("nobody", PASSWORD)
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert SESSION_COOKIE not in response.cookies
        assert error_of(response.text) == "Nama pengguna atau kata sandi salah."
    assert browser.get("/").status_code == 303
    with sessions() as session:
        assert count(session, LoginSession) == 0
        assert count(session, LoginFailure) == 2


def test_five_failures_bar_a_username_even_with_the_right_password(app, sessions: sessionmaker):
    browser = Browser(app)
    for _ in range(auth.MAX_FAILURES):
        assert browser.login("rina", "tebakan yang salah").status_code == 401
    barred = browser.login("rina", PASSWORD)
    assert barred.status_code == 429
    assert "Terlalu banyak percobaan gagal" in error_of(barred.text) and SESSION_COOKIE not in barred.cookies
    # Per username: from another address too; per address: another user from this one.
    assert Browser(app, client=("192.0.2.7", 40000)).login("rina", PASSWORD).status_code == 429
    assert browser.login("sari", PASSWORD).status_code == 429
    assert Browser(app, client=("192.0.2.8", 40000)).login("sari", PASSWORD).status_code == 303
    with sessions() as session:
        assert count(session, LoginSession, LoginSession.user_id == user(session, "rina").id) == 0
        # After the window the right password works again, and clears the username's failures.
        session.execute(update(LoginFailure).values(at=datetime.now(timezone.utc) - auth.FAILURE_WINDOW - timedelta(minutes=1)))
        session.commit()
    assert browser.login("rina", PASSWORD).status_code == 303
    with sessions() as session:
        assert count(session, LoginFailure, LoginFailure.username == "rina") == 0


def test_fewer_failures_than_the_limit_do_not_bar(app, sessions: sessionmaker):
    browser = Browser(app)
    for _ in range(auth.MAX_FAILURES - 1):
        assert browser.login("rina", "tebakan yang salah").status_code == 401
    assert browser.login("rina", PASSWORD).status_code == 303
    assert browser.get("/").status_code == 200


def test_login_needs_its_csrf_token(app, sessions: sessionmaker):
    browser = Browser(app)
    token = form_csrf(browser.client.get("/login").text)
    credentials = {"username": "rina", "password": PASSWORD}
    assert browser.client.post("/login", data=credentials).status_code == 403
    assert browser.client.post("/login", data={**credentials, "csrf": token[::-1]}).status_code == 403
    # A form token without its cookie (another site's page posting a stolen form) is refused too.
    assert Browser(app).client.post("/login", data={**credentials, "csrf": token}).status_code == 403
    with sessions() as session:
        assert count(session, LoginSession) == 0
        assert count(session, LoginFailure) == 0  # refused before the password was even tried
    assert browser.client.post("/login", data={**credentials, "csrf": token}).status_code == 303


@pytest.mark.parametrize("target, expected", [
    ("//evil.com", "/"), ("//evil.com/cases/1", "/"), ("https://evil.com/", "/"), ("/\\evil.com", "/"), ("javascript:alert(1)", "/"),
    ("/cases/7?saved=1", "/cases/7?saved=1"), ("/audit", "/audit"),
])  # fmt: skip
def test_login_redirects_only_to_local_paths(app, target: str, expected: str):
    browser = Browser(app)
    page = browser.client.get("/login", params={"next": target})
    assert f'name="next" value="{html.escape(expected)}"' in page.text
    response = browser.login("rina", PASSWORD, next=target)
    assert response.status_code == 303 and response.headers["location"] == expected


# --------------------------------------------------------------------------------------------------
# 3. Sessions


def move_session(sessions: sessionmaker, **ago: timedelta) -> None:
    now = datetime.now(timezone.utc)
    with sessions() as session:
        session.execute(update(LoginSession).values(**{column: now - delta for column, delta in ago.items()}))
        session.commit()


def test_an_idle_session_expires(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    move_session(sessions, last_seen=auth.IDLE - timedelta(minutes=1))
    assert browser.get("/").status_code == 200  # still within the idle limit: and the request touches it
    with sessions() as session:
        last_seen = session.execute(select(LoginSession.last_seen)).scalar_one()
        assert datetime.now(timezone.utc) - last_seen < timedelta(minutes=1)
    move_session(sessions, last_seen=auth.IDLE + timedelta(minutes=1))
    response = browser.get("/audit")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Faudit"
    with sessions() as session:
        assert count(session, LoginSession) == 0  # an expired session is gone, not just refused


def test_a_session_ends_after_its_absolute_lifetime_however_active(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    move_session(sessions, created_at=auth.ABSOLUTE + timedelta(minutes=1), last_seen=timedelta(seconds=5))
    assert browser.get("/").status_code == 303
    assert browser.post(f"/cases/{case_id(sessions, SUM_VALID_TPS)}/decide", decision="false_alarm", note="x").status_code == 401


def test_a_deactivated_account_loses_its_session(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    with sessions() as session:
        user(session, "rina").active = False
        session.commit()
    assert browser.get("/").status_code == 303
    assert Browser(app).login("rina", PASSWORD).status_code == 401


def test_logout_ends_the_session_for_good(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    token = browser.client.cookies[SESSION_COOKIE]
    response = browser.post("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    stolen = TestClient(app, follow_redirects=False, cookies={SESSION_COOKIE: token})
    assert stolen.get("/").status_code == 303
    assert stolen.post(f"/cases/{case_id(sessions, SUM_VALID_TPS)}/decide",
                       data={"decision": "false_alarm", "note": "x", "csrf": browser.csrf}).status_code == 401  # fmt: skip
    with sessions() as session:
        assert count(session, LoginSession) == 0
        assert [(e.actor, e.action) for e in audit_entries(session)] == [("rina", "login"), ("rina", "logout")]
        assert count(session, Decision) == 0


def test_the_session_token_is_not_stored_in_clear(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    token = browser.client.cookies[SESSION_COOKIE]
    assert len(token) >= 40
    with sessions() as session:
        row = session.execute(select(LoginSession)).scalar_one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert row.csrf_token != token and browser.csrf == row.csrf_token
        dump = "\n".join(session.connection().connection.driver_connection.iterdump())
    assert token not in dump
    # The cookie is HttpOnly and SameSite=Strict.
    cookie = Browser(app).login("rina", PASSWORD).headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


# --------------------------------------------------------------------------------------------------
# 4. Passwords


def test_passwords_are_stored_as_salted_scrypt(sessions: sessionmaker):
    with sessions() as session:
        ani = auth.create_user(session, "ani", PASSWORD, "verifier")
        eko = auth.create_user(session, "eko", PASSWORD, "verifier")
        hashes = [ani.password_hash, eko.password_hash, user(session, "rina").password_hash]
    assert all(h.startswith("scrypt$16384$8$1$") for h in hashes)
    assert len(set(hashes)) == 3  # the same password, three salts
    assert all(PASSWORD not in h for h in hashes)
    assert auth.check_password(PASSWORD, ani.password_hash)
    assert not auth.check_password(PASSWORD + " ", ani.password_hash)
    assert not auth.check_password(PASSWORD, "plain$" + PASSWORD)


@pytest.mark.parametrize("username, password, message", [
    ("ani", "pendek sekali"[:11], "at least 12 characters"),
    ("ani", "password1234", "too common"),
    ("ani", "Indonesia1945", "too common"),
    ("ani", "aaaaaaaaaaaaaaaaab", "too repetitive"),
    ("ani", "saya ANI dari jakarta", "must not contain the username"),
    ("ani", "x" * 300, "at most 256"),
])  # fmt: skip
def test_the_password_policy_refuses_with_a_reason(sessions: sessionmaker, username: str, password: str, message: str):
    with sessions() as session:
        with pytest.raises(auth.PolicyError, match=message):
            auth.create_user(session, username, password, "verifier")
        session.commit()
        assert count(session, User, User.username == username) == 0


def test_accounts_are_checked_before_they_are_created(sessions: sessionmaker):
    with sessions() as session:
        for username, role, message in (("rina", "verifier", "already exists"), ("ani", "admin", "role must be one of"),
                                        ("a b", "verifier", "username"), ("", "verifier", "username")):  # fmt: skip
            with pytest.raises(auth.PolicyError, match=message):
                auth.create_user(session, username, PASSWORD, role)


def test_the_create_user_command_applies_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    command = ["desk", "--db", url, "create-user", "ani", "--role", "verifier", "--password-stdin"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("terlalu\n"))
    assert cli_main(command) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert cli_main(command) == 0
    sessions = connect(url)
    try:
        with sessions() as session:
            ani = user(session, "ani")
            assert ani.role == "verifier" and auth.check_password(PASSWORD, ani.password_hash)
            assert [(e.actor, e.action, e.subject) for e in audit_entries(session)] == [("admin-cli", "create_user", "user:ani")]
    finally:
        close(sessions)


# --------------------------------------------------------------------------------------------------
# 5. CSRF


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_every_state_changing_post_needs_the_session_csrf_token(app, sessions: sessionmaker, token: str | None):
    decide_as(sessions, SUM_VALID_TPS)  # a decided case, for the reopen
    open_case, decided_case = case_id(sessions, OCR_TPS), case_id(sessions, SUM_VALID_TPS)
    supervisor = Browser(app, "sari")  # allowed to do every one of them
    posts = [
        (f"/cases/{open_case}/decide", {"decision": "false_alarm", "note": "cek foto"}),
        (f"/cases/{open_case}/accept", {"field": "administrasi.pengguna_total_p", "proposed": "86", "note": "cek foto"}),
        (f"/cases/{decided_case}/reopen", {"note": "periksa lagi"}),
        ("/users", {"username": "ani", "password": PASSWORD, "role": "supervisor"}),
        ("/logout", {}),
    ]
    with sessions() as session:
        before = (count(session, Decision), count(session, Outbox), count(session, AuditEntry))
    for url, data in posts:
        if token is not None:
            data = {**data, "csrf": token}
        assert supervisor.client.post(url, data=data).status_code == 403, url
    with sessions() as session:
        assert (count(session, Decision), count(session, Outbox), count(session, AuditEntry)) == before
        assert count(session, User, User.username == "ani") == 0
        assert session.get(Case, open_case).status == "open" and session.get(Case, decided_case).status == "decided"
    assert supervisor.get("/").status_code == 200  # the logout did not happen either
    # Another session's token is no better than none.
    other = Browser(app, "rina")
    assert supervisor.client.post(f"/cases/{open_case}/decide", data={**posts[0][1], "csrf": other.csrf}).status_code == 403


# --------------------------------------------------------------------------------------------------
# 6. Roles


def test_an_auditor_reads_but_cannot_decide(app, sessions: sessionmaker):
    auditor = Browser(app, "budi")
    target = case_id(sessions, OCR_TPS)
    page = auditor.get(f"/cases/{target}").text
    assert 'id="decision-form"' not in page and "/accept" not in page and "/reopen" not in page
    assert "Peran Anda hanya dapat membaca." in page
    assert auditor.post(f"/cases/{target}/decide", decision="false_alarm", note="cek").status_code == 403
    assert auditor.post(f"/cases/{target}/accept", field="administrasi.pengguna_total_p", proposed="86", note="cek").status_code == 403
    assert auditor.get("/users").status_code == 403
    assert auditor.get("/audit").status_code == 200
    with sessions() as session:
        assert count(session, Decision) == count(session, Outbox) == 0
        assert session.get(Case, target).status == "open"
        with pytest.raises(cases.DeskError, match="may read cases but not decide"):
            decide(session, session.get(Case, target), user(session, "budi"), "false_alarm", "cek")


def test_a_verifier_decides_but_cannot_manage_users_or_reopen(app, sessions: sessionmaker):
    verifier = Browser(app, "rina")
    target = case_id(sessions, SUM_VALID_TPS)
    assert 'href="/users"' not in verifier.get("/").text
    assert verifier.get("/users").status_code == 403
    assert verifier.post("/users", username="ani", password=PASSWORD, role="supervisor").status_code == 403
    assert verifier.post(f"/cases/{target}/decide", decision="field_check", note="foto buram").status_code == 303
    page = verifier.get(f"/cases/{target}").text
    assert "/reopen" not in page and 'id="decision-form"' not in page
    assert verifier.post(f"/cases/{target}/reopen", note="saya ragu").status_code == 403
    with sessions() as session:
        assert count(session, User, User.username == "ani") == 0
        assert session.get(Case, target).status == "decided"
        with pytest.raises(cases.DeskError, match="only a supervisor"):
            reopen(session, session.get(Case, target), user(session, "rina"), "saya ragu")


def test_a_supervisor_creates_users_and_reopens_cases(app, sessions: sessionmaker):
    supervisor = Browser(app, "sari")
    assert 'href="/users"' in supervisor.get("/").text
    listing = supervisor.get("/users").text
    assert all(f"<td>{name}</td>" in listing for name in USERS.values())
    assert supervisor.post("/users", username="ani", password=PASSWORD, role="auditor", display_name="Ani").status_code == 303
    assert Browser(app, "ani").get("/").status_code == 200
    refused = supervisor.post("/users", username="eko", password="pendek", role="verifier")
    assert refused.status_code == 400 and "at least 12 characters" in error_of(refused.text)
    duplicate = supervisor.post("/users", username="rina", password=PASSWORD, role="supervisor")
    assert duplicate.status_code == 400 and "already exists" in error_of(duplicate.text)

    target = case_id(sessions, SUM_VALID_TPS)
    decide_as(sessions, SUM_VALID_TPS, "rina", "false_alarm")
    assert f'action="/cases/{target}/reopen"' in supervisor.get(f"/cases/{target}").text
    assert supervisor.post(f"/cases/{target}/reopen", note="  ").status_code == 400
    assert supervisor.post(f"/cases/{target}/reopen", note="angka suara sah perlu dicek ulang").status_code == 303
    with sessions() as session:
        case = session.get(Case, target)
        assert case.status == "open" and case.severity_rank == 2
        assert {r.status for r in cases.case_alerts(session, case)} == {"open"}
        assert count(session, User, User.username == "eko") == 0
        assert user(session, "ani").role == "auditor"
        assert [(e.actor, e.action) for e in audit_entries(session) if e.action in ("create_user", "decide", "reopen")] == [
            ("sari", "create_user"), ("rina", "decide"), ("sari", "reopen")]  # fmt: skip
    # Sent back: it can be decided again.
    assert Browser(app, "rina").post(f"/cases/{target}/decide", decision="confirmed", note="dicek ulang").status_code == 303


# --------------------------------------------------------------------------------------------------
# 7. Queue


def open_tps_by_detector(demo: Demo) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for alert in demo.alerts:
        found[alert.detector].add(alert.kode_tps)
    return found


def all_pages(session, f: QueueFilter) -> tuple[list[Case], int]:
    rows, total = [], None
    for page in range(1, 100):
        found, total = queue(session, QueueFilter(**{**f.__dict__, "page": page}))
        if not found:
            break
        rows += found
    return rows, total


def test_the_queue_puts_severe_cases_first_then_old_ones(sessions: sessionmaker, demo: Demo):
    with sessions() as session:
        everything = session.execute(select(Case)).scalars().all()
        base = datetime(2024, 2, 15, 12, tzinfo=timezone.utc)
        for i, case in enumerate(everything):  # ages that do not follow the ids
            case.opened_at = base + timedelta(minutes=(i * 37) % 101)
        session.commit()
        rows, total = all_pages(session, QueueFilter())
        assert total == len(rows) == len({a.kode_tps for a in demo.alerts}) == 78
        assert [r.id for r in rows] == [c.id for c in sorted(rows, key=lambda c: (-c.severity_rank, c.opened_at, c.id))]
        severity = {}
        for alert in demo.alerts:
            severity[alert.kode_tps] = max(severity.get(alert.kode_tps, 0), cases.SEVERITY_RANK[alert.severity])
        assert {r.kode_tps: r.severity_rank for r in rows} == severity
        assert rows[0].severity_rank == 2 and rows[-1].severity_rank == 0
        # The oldest critical case comes first even when opened last of all by id.
        newest_id = max((r for r in rows if r.severity_rank == 2), key=lambda c: c.id)
        newest_id.opened_at = base - timedelta(days=1)
        session.commit()
        assert queue(session, QueueFilter())[0][0].id == newest_id.id


def test_the_queue_pages_by_fifty(app, sessions: sessionmaker):
    with sessions() as session:
        first, total = queue(session, QueueFilter(page=1))
        second, _ = queue(session, QueueFilter(page=2))
        third, _ = queue(session, QueueFilter(page=3))
        assert (len(first), len(second), len(third), total) == (cases.PAGE, total - cases.PAGE, 0, 78)
        assert not {c.id for c in first} & {c.id for c in second}
    browser = Browser(app, "rina")
    page_one, page_two = browser.get("/").text, browser.get("/", page=2).text
    assert case_links(page_one) == [c.id for c in first] and case_links(page_two) == [c.id for c in second]
    assert 'href="/?status=open&amp;page=2"' in page_one and "page=3" not in page_two
    assert case_links(browser.get("/", page=10**30).text) == []  # far past the end: empty, not an error
    assert browser.get("/audit", page=10**30).status_code == 200


def test_the_queue_filters(app, sessions: sessionmaker, demo: Demo):
    by_detector = open_tps_by_detector(demo)
    kodes = {a.kode_tps for a in demo.alerts}
    with sessions() as session:
        ingest_alert(session, crafted(SUM_VALID_TPS, "form.sum_valid", "critical", jenis="pdpr"))
        ingest_alert(session, kecamatan_alert())
        session.commit()
    decide_as(sessions, OCR_TPS)

    def tps(**f: Any) -> set[str | None]:
        with sessions() as session:
            rows, total = all_pages(session, QueueFilter(**f))
            assert total == len(rows)
            return {r.kode_tps for r in rows}

    assert tps() == kodes - {OCR_TPS} | {None}
    assert tps(status="decided") == {OCR_TPS}
    assert tps(status="") == kodes | {None}
    assert tps(status="closed") == set()
    assert tps(region="3101") == {k for k in kodes if k.startswith("3101") and k != OCR_TPS} | {None}
    assert tps(region="310101") == {k for k in kodes if k.startswith("310101") and k != OCR_TPS} | {None}
    assert tps(detector="ocr.misread") == by_detector["ocr.misread"] - {OCR_TPS}
    assert tps(detector="ocr.misread", region="3173") == {k for k in by_detector["ocr.misread"] if k.startswith("3173")}
    assert tps(detector="form.capacity", status="") == by_detector["form.capacity"]
    assert tps(kind="regional") == {None}
    assert tps(kind="tps") == kodes - {OCR_TPS}
    with sessions() as session:
        assert [(c.kode_tps, c.jenis) for c in queue(session, QueueFilter(jenis="pdpr"))[0]] == [(SUM_VALID_TPS, "pdpr")]
        assert len(queue(session, QueueFilter(jenis="ppwp"))[0]) == cases.PAGE
    assert tps(search=SUM_VALID_TPS) == {SUM_VALID_TPS}
    assert tps(search="3101011001") == {k for k in kodes if k.startswith("3101011001")}
    assert tps(search="9999") == set()

    browser = Browser(app, "rina")
    found = browser.get("/", q=SUM_VALID_TPS, jenis="ppwp").text
    assert case_links(found) == [case_id(sessions, SUM_VALID_TPS)]
    assert 'value="3101011001003"' in found  # the filter is shown as applied
    assert len(case_links(browser.get("/", status="decided").text)) == 1


def test_regional_alerts_get_their_own_case(app, sessions: sessionmaker):
    with sessions() as session:
        before = count(session, Case)
        assert ingest_alert(session, kecamatan_alert())
        assert ingest_alert(session, kecamatan_alert(detector="stat.turnout_tail", severity="critical"))
        assert ingest_alert(session, kecamatan_alert(region="310102"))
        session.commit()
        regional = session.execute(select(Case).where(Case.key == "kecamatan:310101:ppwp")).scalar_one()
        assert (regional.kind, regional.kode_tps, regional.level, regional.region) == ("regional", None, "kecamatan", "310101")
        assert regional.severity_rank == 2 and regional.detectors == "stat.last_digit stat.turnout_tail"
        assert count(session, Case) == before + 2
        assert count(session, AlertRecord, AlertRecord.case_id == tps_case(session, SUM_VALID_TPS).id) == 3  # untouched
        target = regional.id
    browser = Browser(app, "rina")
    assert case_links(browser.get("/", kind="regional").text)[0] == target
    page = browser.get(f"/cases/{target}").text
    assert "kecamatan 310101" in page and "bukan bukti kecurangan" in page
    assert f'href="/?q={SUM_VALID_TPS}&amp;status="' in page  # the TPSs that weigh most, to look at
    wrong = browser.post(f"/cases/{target}/decide", decision="corrected", note="x", corrections="chart.100025=1")
    assert wrong.status_code == 400 and "a regional case has no form to correct" in error_of(wrong.text)
    assert browser.post(f"/cases/{target}/decide", decision="field_check", note="minta cek lapangan").status_code == 303
    with sessions() as session:
        verdicts = [parse_verdict(row.value) for row in session.execute(select(Outbox)).scalars()]
        keys = {row.key for row in session.execute(select(Outbox)).scalars()}
    assert len(verdicts) == 2 and keys == {"3101"}
    assert {(v.kode_tps, v.region, v.decision) for v in verdicts} == {(None, "310101", "field_check")}


# --------------------------------------------------------------------------------------------------
# 8. The case page


def test_the_case_page_marks_the_failing_identities_numbers(app, sessions: sessionmaker, demo: Demo):
    page = Browser(app, "rina").get(f"/cases/{case_id(sessions, SUM_VALID_TPS)}").text
    cells = form_cells(page)
    failing = {path: value for a in demo.alerts_of(SUM_VALID_TPS) for f in a.evidence["failures"] for path, value in f["values"].items()}
    assert "chart.100025" in failing and "administrasi.suara_sah" in failing
    for path, value in failing.items():
        assert "fail" in cells[path][0] and cells[path][1] == str(value), path
    assert {path for path, (classes, _) in cells.items() if "fail" in classes} == set(failing)
    assert cells["administrasi.pemilih_dpt_l"][1] == str(demo.envelopes[SUM_VALID_TPS]["doc"]["administrasi"]["pemilih_dpt_l"])
    for alert in demo.alerts_of(SUM_VALID_TPS):
        assert html.escape(alert.reason) in page


def test_the_case_page_offers_the_ocr_suggestions(app, sessions: sessionmaker):
    page = Browser(app, "rina").get(f"/cases/{case_id(sessions, OCR_TPS)}").text
    cells = form_cells(page)
    assert cells["administrasi.pengguna_total_p"] == ({"num", "fail", "suggest"}, "85 → 86?")
    form = re.search(r'<form method="post" action="/cases/\d+/accept">(.*?)</form>', page, re.DOTALL).group(1)
    assert 'name="field" value="administrasi.pengguna_total_p"' in form and 'name="proposed" value="86"' in form
    assert 'name="csrf" value="' in form


def test_the_case_page_shows_the_tally_page_photo_first(app, sessions: sessionmaker, demo: Demo):
    browser = Browser(app, "rina")
    images = demo.envelopes[SUM_VALID_TPS]["doc"]["images"]
    assert photos(browser.get(f"/cases/{case_id(sessions, SUM_VALID_TPS)}").text) == [(images[1], 2), (images[0], 1), (images[2], 3)]
    # Real: page 2 not uploaded (null). The page-3 photo must not pass for the tally page.
    images = demo.envelopes[OCR_TPS]["doc"]["images"]
    assert images[1] is None
    assert photos(browser.get(f"/cases/{case_id(sessions, OCR_TPS)}").text) == [(images[0], 1), (images[2], 3)]


def test_the_case_page_links_only_http_photos(app, sessions: sessionmaker):
    doc = copy.deepcopy(MISREAD_DOC)
    doc["images"] = ["javascript:alert(1)", "https://example.org/c-hasil-2.jpg", "data:text/html,<script>alert(2)</script>",
                     "http://example.org/c-hasil-4.jpg", "//evil.example/5.jpg"]  # fmt: skip
    with sessions() as session:
        submit_versions(session, FRESH_TPS, [doc])
        session.commit()
    page = Browser(app, "rina").get(f"/cases/{case_id(sessions, FRESH_TPS)}").text
    assert photos(page) == [("https://example.org/c-hasil-2.jpg", 2), ("http://example.org/c-hasil-4.jpg", 4)]
    assert "javascript:" not in page and "data:text/html" not in page and "evil.example" not in page


def test_the_case_page_shows_the_history_of_versions(app, sessions: sessionmaker, demo: Demo):
    second = copy.deepcopy(demo.envelopes[SUM_VALID_TPS])
    second["doc"]["chart"]["100025"] = 78
    with sessions() as session:
        assert ingest_submission(session, "test:v2", second)
        session.commit()
    page = Browser(app, "rina").get(f"/cases/{case_id(sessions, SUM_VALID_TPS)}").text
    history = re.search(r'<section id="history">(.*?)</section>', page, re.DOTALL).group(1)
    rows = re.findall(r"<tr><td>(\d+)</td>", history)
    assert rows == ["2", "1"]  # newest first
    assert "chart.100025: 86 → 78" in history and "versi pertama" in history
    assert form_cells(page)["chart.100025"][1] == "78"  # the form as in the latest version


def test_an_unknown_case_is_404(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    assert browser.get("/cases/999999").status_code == 404
    assert browser.post("/cases/999999/decide", decision="false_alarm", note="x").status_code == 404
    with sessions() as session:
        assert count(session, Decision) == 0


# --------------------------------------------------------------------------------------------------
# 9. Decisions


@pytest.mark.parametrize("form, message", [
    ({"decision": "false_alarm", "note": "   "}, "a note is required"),
    ({"decision": "corrected", "note": "dari foto"}, "give the corrected value(s)"),
    ({"decision": "corrected", "note": "dari foto", "corrections": "chart.999999=5"}, "'chart.999999' is not a number on this form"),
    ({"decision": "corrected", "note": "dari foto", "corrections": "chart.100025 78"}, "write corrections as field=value"),
    ({"decision": "corrected", "note": "dari foto", "corrections": "chart.100025=-3"}, "write corrections as field=value"),
    ({"decision": "corrected", "note": "dari foto", "corrections": "chart.100025=²"}, "write corrections as field=value"),
    ({"decision": "corrected", "note": "dari foto", "corrections": "chart.100025=" + "9" * 30}, "a count is a whole number from 0 to 9,999,999"),
    ({"decision": "false_alarm", "note": "dari foto", "corrections": "chart.100025=78"}, "with the decision 'corrected' only"),
    ({"decision": "approved", "note": "dari foto"}, "decision must be one of"),
    ({"decision": "confirmed", "note": "x" * 4001}, "not valid"),
])  # fmt: skip
def test_an_invalid_decision_is_refused_with_its_reason_and_leaves_no_trace(app, sessions: sessionmaker, form: dict, message: str):
    browser = Browser(app, "rina")
    target = case_id(sessions, SUM_VALID_TPS)
    response = browser.post(f"/cases/{target}/decide", **form)
    assert response.status_code == 400
    assert message in error_of(response.text)
    assert 'id="decision-form"' in response.text  # the form is shown again, to fix and resend
    with sessions() as session:
        assert count(session, Decision) == count(session, Outbox) == 0
        assert [e.action for e in audit_entries(session)] == ["login"]
        assert session.get(Case, target).status == "open"
        assert audit.verify(session).ok


def test_a_decision_queues_one_verdict_per_open_alert(app, sessions: sessionmaker, demo: Demo):
    browser = Browser(app, "rina")
    target = case_id(sessions, SUM_VALID_TPS)
    alerts = {a.alert_id: a for a in demo.alerts_of(SUM_VALID_TPS)}
    assert len(alerts) == 3
    response = browser.post(f"/cases/{target}/decide", decision="false_alarm", note="  cocok dengan foto halaman 2 ")
    assert response.status_code == 303 and response.headers["location"] == f"/cases/{target}?saved=1"
    page = browser.get(response.headers["location"]).text
    assert 'id="saved"' in page and 'id="decision-form"' not in page and "cocok dengan foto halaman 2" in page

    with sessions() as session:
        row = session.execute(select(Decision)).scalar_one()
        assert (row.decision, row.note, row.username, row.role) == ("false_alarm", "cocok dengan foto halaman 2", "rina", "verifier")
        assert sorted(row.alert_ids) == sorted(alerts)
        entry = session.get(AuditEntry, row.audit_seq)
        assert (entry.actor, entry.action, entry.subject) == ("rina", "decide", f"case:{target}")
        assert orjson.loads(entry.payload) == audit.decision_payload(row)
        outbox = session.execute(select(Outbox).order_by(Outbox.id)).scalars().all()
        case = session.get(Case, target)
        assert case.status == "decided"
        assert {r.status for r in cases.case_alerts(session, case)} == {"decided"}
    assert len(outbox) == 3 and {o.key for o in outbox} == {SUM_VALID_TPS[:4]} and all(o.sent_at is None for o in outbox)
    verdicts = [parse_verdict(o.value) for o in outbox]
    for verdict, message in zip(verdicts, outbox):
        jsonschema.validate(orjson.loads(message.value), VERDICT_SCHEMA)
        assert isinstance(verdict, Verdict)
        alert = alerts[verdict.alert_id]
        assert (verdict.detector, verdict.kode_tps, verdict.region, verdict.jenis) == (alert.detector, SUM_VALID_TPS, SUM_VALID_TPS, "ppwp")
        assert (verdict.decision, verdict.note, verdict.decided_by, verdict.role) == ("false_alarm", row.note, "rina", "verifier")
        assert (verdict.audit_seq, verdict.audit_hash) == (entry.seq, entry.hash)
        assert verdict.decided_at == row.decided_at and verdict.decided_at.utcoffset() is not None
        assert verdict.corrected_values == {}
    assert {v.alert_id for v in verdicts} == set(alerts) and len({v.verdict_id for v in verdicts}) == 3

    # Decided: a second decision is refused and queues nothing.
    again = browser.post(f"/cases/{target}/decide", decision="confirmed", note="berubah pikiran")
    assert again.status_code == 400 and "not open" in error_of(again.text)
    with sessions() as session:
        assert count(session, Decision) == 1 and count(session, Outbox) == 3
        with pytest.raises(cases.DeskError, match="not open"):
            decide(session, session.get(Case, target), user(session, "sari"), "confirmed", "x")
        assert audit.verify(session).ok


def test_a_correction_carries_its_values(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    target = case_id(sessions, SUM_VALID_TPS)
    response = browser.post(f"/cases/{target}/decide", decision="corrected", note="foto: 78", corrections="chart.100025=78\n\n")
    assert response.status_code == 303
    with sessions() as session:
        assert session.execute(select(Decision.corrected_values)).scalar_one() == {"chart.100025": 78}
        verdicts = [parse_verdict(v) for v in session.execute(select(Outbox.value)).scalars()]
    assert len(verdicts) == 3 and {(v.decision, tuple(v.corrected_values.items())) for v in verdicts} == {("corrected", (("chart.100025", 78),))}


def test_accepting_an_ocr_suggestion_records_a_correction(app, sessions: sessionmaker):
    browser = Browser(app, "rina")
    target = case_id(sessions, OCR_TPS)
    form = re.search(r'<form method="post" action="/cases/\d+/accept">(.*?)</form>', browser.get(f"/cases/{target}").text, re.DOTALL).group(1)
    fields = {name: html.unescape(value) for name, value in re.findall(r'name="(\w+)"[^>]*value="([^"]*)"', form)}
    assert fields["csrf"] == browser.csrf
    refused = browser.post(f"/cases/{target}/accept", field=fields["field"], proposed=fields["proposed"], note="")
    assert refused.status_code == 400 and "a note is required" in error_of(refused.text)
    negative = browser.post(f"/cases/{target}/accept", field=fields["field"], proposed="-1", note=fields["note"])
    assert negative.status_code == 400 and "whole number" in error_of(negative.text)
    response = browser.post(f"/cases/{target}/accept", field=fields["field"], proposed=fields["proposed"], note=fields["note"])
    assert response.status_code == 303
    with sessions() as session:
        row = session.execute(select(Decision)).scalar_one()
        assert (row.decision, row.corrected_values) == ("corrected", {"administrasi.pengguna_total_p": 86})
        assert row.note == "administrasi.pengguna_total_p = 86: sesuai foto C.Hasil halaman 2"
        verdicts = [parse_verdict(v) for v in session.execute(select(Outbox.value)).scalars()]
        assert session.get(Case, target).status == "decided"
    assert len(verdicts) == 3 and all(v.corrected_values == {"administrasi.pengguna_total_p": 86} for v in verdicts)


# --------------------------------------------------------------------------------------------------
# 10. Life cycle


def test_the_same_alert_is_filed_once(sessions: sessionmaker, demo: Demo):
    alert = demo.alerts_of(SUM_VALID_TPS)[0]
    repeats = DESK.registry.get_sample_value("pantau_desk_alerts_consumed_total", {"outcome": "repeat"}) or 0
    with sessions() as session:
        assert not ingest_alert(session, alert)
        assert apply_message(session, "pantau.alerts", "pantau.alerts:0:1", alert.to_json(), is_alert=True) == 0
        assert apply_message(session, "pantau.alerts", "pantau.alerts:0:2", b"{not json", is_alert=True) == 0
        session.commit()
        assert count(session, AlertRecord) == 172 and count(session, AlertRecord, AlertRecord.alert_id == alert.alert_id) == 1
        assert count(session, AuditEntry) == 0
    assert DESK.registry.get_sample_value("pantau_desk_alerts_consumed_total", {"outcome": "repeat"}) == repeats + 1


def test_a_correction_that_resolves_every_open_alert_closes_the_case(app, sessions: sessionmaker):
    with sessions() as session:
        first = submit_versions(session, FRESH_TPS, [MISREAD_DOC])
        case = tps_case(session, FRESH_TPS)
        assert (case.status, case.severity_rank, case.detectors) == ("open", 2, "form.capacity form.sum_valid ocr.misread")
        session.commit()
    with sessions() as session:
        later = submit_versions(session, FRESH_TPS, [MISREAD_DOC, fixed_misread()])
        session.commit()
        [notice] = later
        assert notice.detector == "revision.resolved" and sorted(notice.resolves) == sorted(a.alert_id for a in first)
        case = tps_case(session, FRESH_TPS)
        assert case.status == "closed"
        assert case.closed_reason == f"resolved by a later submission (revision.resolved {notice.alert_id})"
        assert (case.severity_rank, case.detectors) == (0, "")
        statuses = {r.alert_id: (r.status, r.resolved_by) for r in cases.case_alerts(session, case)}
        assert statuses == {**{a.alert_id: ("resolved", notice.alert_id) for a in first}, notice.alert_id: ("notice", None)}
        [entry] = audit_entries(session)
        assert (entry.actor, entry.action, entry.subject) == ("system", "close", f"case:{case.id}")
        assert orjson.loads(entry.payload)["why"] == case.closed_reason
        assert count(session, Decision) == count(session, Outbox) == 0  # done by the system, not a human decision
        assert audit.verify(session).ok
        assert case.id not in {c.id for c in queue(session, QueueFilter())[0]}
        assert [c.id for c in queue(session, QueueFilter(status="closed"))[0]] == [case.id]
        target = case.id
    page = Browser(app, "rina").get(f"/cases/{target}").text
    assert "Ditutup karena" in page and 'id="decision-form"' not in page


def test_a_correction_of_some_findings_leaves_the_case_open_with_the_rest(sessions: sessionmaker, demo: Demo):
    alerts = {a.detector: a for a in demo.alerts_of(SUM_VALID_TPS)}
    with sessions() as session:
        notice = crafted(SUM_VALID_TPS, "revision.resolved", "info", resolves=[alerts["form.sum_valid"].alert_id])
        assert ingest_alert(session, notice)
        case = tps_case(session, SUM_VALID_TPS)
        assert (case.status, case.severity_rank, case.detectors) == ("open", 1, "form.gender_split form.voters_total")
        assert count(session, AuditEntry) == 0


def test_a_new_alert_reopens_a_decided_case(sessions: sessionmaker):
    decide_as(sessions, SUM_VALID_TPS)
    with sessions() as session:
        changed = crafted(SUM_VALID_TPS, "revision.changed", "warning", evidence={"changes": {"chart.100025": [86, 96]}, "swing": 0.05})
        assert ingest_alert(session, changed)
        session.commit()
        case = tps_case(session, SUM_VALID_TPS)
        assert (case.status, case.severity_rank, case.detectors) == ("open", 1, "revision.changed")
        entry = audit_entries(session)[-1]
        assert (entry.actor, entry.action, orjson.loads(entry.payload)["why"]) == ("system", "reopen", "new alert revision.changed")
        assert count(session, Decision) == 1  # the system's reopen is no decision
        second = decide(session, case, user(session, "sari"), "confirmed", "angka memang berubah")
        session.commit()
        assert second.alert_ids == [changed.alert_id]  # only what is new is decided again
        assert count(session, Outbox) == 4
        assert audit.verify(session).ok


def test_a_new_version_of_the_form_reopens_a_decided_case(app, sessions: sessionmaker, demo: Demo):
    decide_as(sessions, SUM_VALID_TPS, decision="field_check", note="minta foto baru")
    second = copy.deepcopy(demo.envelopes[SUM_VALID_TPS])
    second["doc"]["images"] = [u.replace(".jpg", "-baru.jpg") for u in second["doc"]["images"]]  # new photos, same numbers
    with sessions() as session:
        assert ingest_submission(session, "sirekap.submissions:3:1001", second)
        session.commit()
        case = tps_case(session, SUM_VALID_TPS)
        assert case.status == "open"
        entry = audit_entries(session)[-1]
        assert (entry.actor, entry.action, orjson.loads(entry.payload)["why"]) == ("system", "reopen", "new version 2 of the form")
        assert case.severity_rank == 2 and {r.status for r in cases.case_alerts(session, case)} == {"open"}
    # Back in the queue, and decidable again: on the same findings, with the new photos.
    browser = Browser(app, "rina")
    assert case.id in case_links(browser.get("/", q=SUM_VALID_TPS).text)
    assert photos(browser.get(f"/cases/{case.id}").text)[0][0].endswith("-baru.jpg")
    assert browser.post(f"/cases/{case.id}/decide", decision="false_alarm", note="foto baru: cocok").status_code == 303
    with sessions() as session:
        assert count(session, Decision) == 2 and count(session, Outbox) == 6
        assert len(set(session.execute(select(Outbox.value)).scalars())) == 6


def test_an_identical_resubmission_changes_nothing(sessions: sessionmaker, demo: Demo):
    decide_as(sessions, SUM_VALID_TPS)
    with sessions() as session:
        entries = count(session, AuditEntry)
        assert not ingest_submission(session, "sirekap.submissions:3:2000", copy.deepcopy(demo.envelopes[SUM_VALID_TPS]))
        session.commit()
        assert tps_case(session, SUM_VALID_TPS).status == "decided"
        assert count(session, Submission, Submission.kode_tps == SUM_VALID_TPS) == 1
        assert count(session, AuditEntry) == entries


def test_the_same_submission_message_is_applied_once(sessions: sessionmaker, demo: Demo):
    first, second = copy.deepcopy(demo.envelopes[SUM_VALID_TPS]), copy.deepcopy(demo.envelopes[SUM_VALID_TPS])
    first["doc"]["chart"]["100025"], second["doc"]["chart"]["100025"] = 78, 79
    with sessions() as session:
        assert apply_message(session, "s", "sirekap.submissions:3:77", orjson.dumps(first), is_alert=False) == 1
        # redelivered (even if it somehow read differently): the source was applied already
        assert apply_message(session, "s", "sirekap.submissions:3:77", orjson.dumps(second), is_alert=False) == 0
        session.commit()
        versions = cases.history(session, SUM_VALID_TPS, "ppwp")
        assert [v.version for v in versions] == [1, 2] and versions[-1].doc["chart"]["100025"] == 78
        # a refused document is skipped, not an error, and not marked consumed
        assert apply_message(session, "s", "sirekap.submissions:3:78", b'{"kode_tps": "12"}', is_alert=False) == 0
    # The template's own sources: loading the same file again changes nothing.
    assert load_files(sessions, [], [str(demo_data())]) == (0, 0)


def test_a_receipt_time_without_offset_does_not_break_the_batch(sessions: sessionmaker, demo: Demo):
    later = copy.deepcopy(demo.envelopes[SUM_VALID_TPS])
    later["doc"]["chart"]["100025"] = 78
    stamped = copy.deepcopy(demo.envelopes[OCR_TPS])
    stamped["doc"]["administrasi"]["suara_tidak_sah"] += 1
    stamped["received_at"] = "2024-02-15T10:00:00+07:00"
    with sessions() as session:
        # valid for the schema (an archive's or another producer's), but of no known zone
        assert apply_message(session, "s", "sirekap.submissions:3:90", orjson.dumps({**later, "received_at": "2024-02-15T10:00:00"}), is_alert=False) == 1
        assert apply_message(session, "s", "sirekap.submissions:3:91", orjson.dumps(stamped), is_alert=False) == 1
        session.commit()
        kept = cases.latest_submission(session, SUM_VALID_TPS, "ppwp")
        assert kept.version == 2 and kept.received_at is None and kept.doc["chart"]["100025"] == 78
        assert cases.latest_submission(session, OCR_TPS, "ppwp").received_at == datetime(2024, 2, 15, 3, tzinfo=timezone.utc)


def test_a_supervisor_sends_a_closed_case_back_to_the_queue(app, sessions: sessionmaker):
    with sessions() as session:
        first = submit_versions(session, FRESH_TPS, [MISREAD_DOC, fixed_misread()])[:3]
        session.commit()
        target = tps_case(session, FRESH_TPS).id
    supervisor = Browser(app, "sari")
    assert supervisor.post(f"/cases/{target}/reopen", note="koreksi 551 → 10 perlu dicek dengan foto").status_code == 303
    with sessions() as session:
        case = session.get(Case, target)
        assert (case.status, case.closed_reason, case.severity_rank) == ("open", None, 2)
        open_ids = {r.alert_id for r in cases.case_alerts(session, case) if r.status == "open"}
        assert open_ids == {a.alert_id for a in first}
    response = Browser(app, "rina").post(f"/cases/{target}/decide", decision="corrected", note="foto: 51", corrections="chart.100027=51")
    assert response.status_code == 303
    with sessions() as session:
        assert session.get(Case, target).status == "decided" and count(session, Outbox) == 3
        assert audit.verify(session).ok


# --------------------------------------------------------------------------------------------------
# 11. The audit log


@pytest.fixture
def audited(sessions: sessionmaker) -> sessionmaker:
    """Five entries: 1 login, 2 decide (decision 1), 3 decide (decision 2), 4 reopen, 5 logout."""
    with sessions() as session:
        rina, sari = user(session, "rina"), user(session, "sari")
        audit.append(session, "rina", "login", "user:rina", {"client": "testclient"})
        decide(session, tps_case(session, SUM_VALID_TPS), rina, "false_alarm", "sesuai foto")
        decide(session, tps_case(session, OCR_TPS), rina, "confirmed", "angka tidak cocok")
        reopen(session, tps_case(session, SUM_VALID_TPS), sari, "periksa lagi")
        audit.append(session, "sari", "logout", "user:sari", {})
        session.commit()
        assert [(e.seq, e.action) for e in audit_entries(session)] == [(1, "login"), (2, "decide"), (3, "decide"), (4, "reopen"), (5, "logout")]
        assert [d.audit_seq for d in session.execute(select(Decision).order_by(Decision.id)).scalars()] == [2, 3]
    return sessions


def tamper(sessions: sessionmaker, *statements: str) -> None:
    with sessions() as session:
        for statement in statements:
            session.execute(text(statement))
        session.commit()


def problems(sessions: sessionmaker, head: tuple[int, str] | None = None) -> list[str]:
    with sessions() as session:
        report = audit.verify(session, head)
    assert report.ok == (not report.problems)
    return report.problems


def head_of(sessions: sessionmaker) -> tuple[int, str]:
    with sessions() as session:
        return audit.verify(session).head


def test_an_intact_log_verifies(audited: sessionmaker, db_url: str, capsys: pytest.CaptureFixture):
    with audited() as session:
        report = audit.verify(session)
        entries = audit_entries(session)
        verdict = parse_verdict(session.execute(select(Outbox.value).order_by(Outbox.id)).scalars().first())
    assert report.ok and report.entries == 5 and report.head == (5, entries[-1].hash)
    assert entries[0].prev_hash == audit.GENESIS and all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert problems(audited, (verdict.audit_seq, verdict.audit_hash)) == []  # the head a verdict published
    assert cli_main(["desk", "--db", db_url, "verify-audit"]) == 0
    assert f"audit log intact: 5 entries, head 5:{entries[-1].hash}" in capsys.readouterr().out
    assert cli_main(["desk", "--db", db_url, "verify-audit", "--head", f"2:{entries[1].hash}"]) == 0
    assert cli_main(["desk", "--db", db_url, "verify-audit", "--head", "2:abc"]) == 2


@pytest.mark.parametrize("statements, expected", [
    (["UPDATE audit SET payload = replace(payload, 'periksa lagi', 'tidak perlu') WHERE seq = 4"],
     ["entry 4: its content was changed after it was written"]),
    (["UPDATE audit SET actor = 'sari' WHERE seq = 1"], ["entry 1: its content was changed after it was written"]),
    (["UPDATE audit SET at = '2024-02-14 00:00:00.000000' WHERE seq = 5"], ["entry 5: its content was changed after it was written"]),
    (["DELETE FROM audit WHERE seq = 4"],
     ["entries 4..4 are missing (deleted or renumbered)", "entry 5: does not follow the entry before it (reordered, or one deleted)"]),
    (["DELETE FROM audit WHERE seq = 3"],
     ["entries 3..3 are missing (deleted or renumbered)", "entry 4: does not follow the entry before it (reordered, or one deleted)",
      "decision 2: its audit entry 3 is missing"]),
    (["UPDATE audit SET seq = 100 WHERE seq = 4", "UPDATE audit SET seq = 4 WHERE seq = 5", "UPDATE audit SET seq = 5 WHERE seq = 100"],
     ["entry 4: does not follow the entry before it (reordered, or one deleted)", "entry 4: its content was changed after it was written",
      "entry 5: does not follow the entry before it (reordered, or one deleted)", "entry 5: its content was changed after it was written"]),
    (["UPDATE decisions SET note = 'tidak ada masalah' WHERE id = 1"], ["decision 1: differs from what the audit log recorded"]),
    (["UPDATE decisions SET decision = 'confirmed' WHERE id = 1"], ["decision 1: differs from what the audit log recorded"]),
    (["UPDATE decisions SET username = 'sari' WHERE id = 2"], ["decision 2: differs from what the audit log recorded"]),
    (["UPDATE decisions SET decided_at = '2024-02-15 01:00:00.000000' WHERE id = 2"], ["decision 2: differs from what the audit log recorded"]),
    (["UPDATE decisions SET audit_seq = 4 WHERE id = 2"],
     ["decision 2: its audit entry 4 is missing", "entry 3: records a decision that is missing from the decisions"]),
    (["DELETE FROM decisions WHERE id = 1"], ["entry 2: records a decision that is missing from the decisions"]),
])  # fmt: skip
def test_tampering_is_detected(audited: sessionmaker, db_url: str, statements: list[str], expected: list[str], capsys: pytest.CaptureFixture):
    tamper(audited, *statements)
    assert problems(audited) == expected
    assert cli_main(["desk", "--db", db_url, "verify-audit"]) == 1
    err = capsys.readouterr().err
    assert "audit log BROKEN" in err and expected[0] in err


def test_cutting_off_the_last_entry_of_a_decision_is_detected(audited: sessionmaker):
    with audited() as session:
        decide(session, tps_case(session, SUM_VALID_TPS), user(session, "sari"), "confirmed", "dicek ulang")
        session.commit()
    tamper(audited, "DELETE FROM audit WHERE seq = 6")
    assert problems(audited) == ["decision 3: its audit entry 6 is missing"]


def test_cutting_off_the_tail_is_detected_against_a_published_head(audited: sessionmaker, db_url: str):
    head = head_of(audited)
    tamper(audited, "DELETE FROM audit WHERE seq = 5")
    assert problems(audited) == []  # a shorter chain holds together: only the published head shows the cut
    assert problems(audited, head) == ["entry 5 (a published head) is missing: the log was cut short"]
    assert cli_main(["desk", "--db", db_url, "verify-audit", "--head", f"{head[0]}:{head[1]}"]) == 1
    assert problems(audited, (4, "0" * 64)) == ["entry 4 does not match its published hash"]


def test_the_audit_page_shows_a_broken_chain(app, audited: sessionmaker):
    browser = Browser(app, "budi")
    assert "Rantai hash utuh" in browser.get("/audit").text
    tamper(audited, "UPDATE audit SET payload = '{}' WHERE seq = 2")
    page = browser.get("/audit").text
    assert "Rantai hash RUSAK" in page and "entry 2: its content was changed" in page


# --------------------------------------------------------------------------------------------------
# 12. Hostile input


XSS = "<script>alert(1)</script>"


def test_notes_and_alert_texts_are_escaped(app, sessions: sessionmaker):
    hostile = crafted(SUM_VALID_TPS, '<img src=x onerror="alert(2)">', "critical", reason=f"{XSS} alasan",
                      evidence={"note": XSS, "values": {"chart.100025": 86}})  # fmt: skip
    with sessions() as session:
        assert ingest_alert(session, hostile)
        session.commit()
    target = case_id(sessions, SUM_VALID_TPS)
    browser = Browser(app, "rina")
    assert browser.post(f"/cases/{target}/decide", decision="confirmed", note=f"catatan {XSS}").status_code == 303
    pages = {url: browser.get(url).text for url in (f"/cases/{target}", "/?status=decided", "/audit")}
    for url, page in pages.items():
        assert "<script" not in page.lower() and "<img src=x" not in page, url
    assert "catatan &lt;script&gt;alert(1)&lt;/script&gt;" in pages[f"/cases/{target}"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; alasan" in pages[f"/cases/{target}"]
    assert "&lt;img src=x onerror=" in pages["/?status=decided"]
    with sessions() as session:
        assert session.execute(select(Decision.note)).scalar_one() == f"catatan {XSS}"  # stored as written


HOSTILE = "<script>alert(1)</script>' OR 1=1 --"


def test_every_other_input_takes_hostile_text_as_text(app, sessions: sessionmaker):
    """Login, account, decision, correction, suggestion, reopening and audit inputs: refused or stored as
    written, never a server error, never markup on a page, the database intact."""
    anonymous = Browser(app)
    assert anonymous.login(HOSTILE, HOSTILE).status_code == 401
    supervisor, verifier = Browser(app, "sari"), Browser(app, "rina")
    target = case_id(sessions, SUM_VALID_TPS)
    responses = {
        "users": supervisor.post("/users", username=HOSTILE, password=HOSTILE + "x" * 12, role="verifier", display_name=HOSTILE),
        "role": supervisor.post("/users", username="dewi", password="kotak-suara-yang-panjang", role=HOSTILE),
        "corrections": verifier.post(f"/cases/{target}/decide", decision="corrected", note="n", corrections=HOSTILE),
        "decision": verifier.post(f"/cases/{target}/decide", decision=HOSTILE, note="n"),
        "field": verifier.post(f"/cases/{target}/accept", field=HOSTILE, proposed="1", note="n"),
        "audit": verifier.get("/audit", subject=HOSTILE, page="1"),
    }
    for name, response in responses.items():
        assert response.status_code in (200, 400, 403), (name, response.status_code)
        assert "<script>alert" not in response.text, name
    with sessions() as session:
        assert count(session, User, User.username == HOSTILE) == 0 and count(session, Decision) == 0
        assert count(session, Case) == 78 and count(session, AlertRecord) == 172
        assert tps_case(session, SUM_VALID_TPS).status == "open"
    assert verifier.post(f"/cases/{target}/decide", decision="field_check", note=HOSTILE).status_code == 303
    supervisor_view = supervisor.get(f"/cases/{target}").text
    assert "<script>alert" not in supervisor_view and "&lt;script&gt;alert(1)&lt;/script&gt;&#39; OR 1=1 --" in supervisor_view
    assert supervisor.post(f"/cases/{target}/reopen", note=HOSTILE).status_code == 303
    with sessions() as session:
        assert session.execute(select(Decision.note)).scalar_one() == HOSTILE
        assert tps_case(session, SUM_VALID_TPS).status == "open" and audit.verify(session).ok


@pytest.mark.parametrize("field", ["region", "detector", "q", "jenis", "status", "kind"])
def test_queue_filters_take_text_literally(app, sessions: sessionmaker, field: str):
    browser = Browser(app, "rina")
    with sessions() as session:
        default = [c.id for c in queue(session, QueueFilter())[0]]
        underscored = [c.id for c in all_pages(session, QueueFilter())[0] if "_" in c.detectors][: cases.PAGE]
    assert underscored
    for value in ("' OR 1=1 --", '" OR ""="', "%", "_", "31%", "%'; DROP TABLE cases; --", "\\"):
        response = browser.get("/", **{field: value})
        assert response.status_code == 200, (field, value)
        shown = case_links(response.text)
        if field in ("status", "kind"):  # not one of the choices: the default
            assert shown == default, value
        elif field == "detector" and value == "_":  # taken literally: the detectors with an underscore in their name
            assert shown == underscored
        else:
            assert shown == [], (field, value)
    with sessions() as session:
        assert count(session, Case) == 78 and count(session, AlertRecord) == 172


def test_like_wildcards_are_escaped_in_the_domain_queue(sessions: sessionmaker):
    with sessions() as session:
        for f in (QueueFilter(region="%"), QueueFilter(region="_"), QueueFilter(search="3101%"), QueueFilter(search="310101100100_"),
                  QueueFilter(detector="%"), QueueFilter(detector="form.sum%valid")):  # fmt: skip
            assert queue(session, f) == ([], 0), f
        assert queue(session, QueueFilter(search="3101011001003"))[1] == 1


# --------------------------------------------------------------------------------------------------
# 13. Metrics


def scrape(metrics: DeskMetrics) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }


def test_metrics_read_the_backlog_from_the_database(sessions: sessionmaker):
    metrics = DeskMetrics()  # DESK, the process's, may watch only one database
    metrics.watch(sessions)
    with sessions() as session:
        by_rank = {rank: count(session, Case, Case.status == "open", Case.severity_rank == rank) for rank in range(3)}
        oldest = session.execute(select(Case).where(Case.severity_rank == 2)).scalars().first()
        oldest.opened_at = datetime.now(timezone.utc) - timedelta(hours=2)
        session.commit()
    assert by_rank == {0: 1, 1: 18, 2: 59}
    samples = scrape(metrics)
    for rank, severity in enumerate(("info", "warning", "critical")):
        assert samples[("pantau_desk_open_cases", (("severity", severity),))] == by_rank[rank]
    assert 7200 <= samples[("pantau_desk_oldest_open_case_age_seconds", ())] < 7300
    assert samples[("pantau_desk_decisions_total", (("decision", "false_alarm"),))] == 0
    assert samples[("pantau_desk_verdicts_unsent", ())] == 0

    decide_as(sessions, SUM_VALID_TPS, decision="false_alarm")
    samples = scrape(metrics)
    assert samples[("pantau_desk_open_cases", (("severity", "critical"),))] == by_rank[2] - 1
    assert samples[("pantau_desk_decisions_total", (("decision", "false_alarm"),))] == 1
    assert samples[("pantau_desk_decisions_total", (("decision", "confirmed"),))] == 0
    assert samples[("pantau_desk_verdicts_unsent", ())] == 3


# --------------------------------------------------------------------------------------------------
# The feed without a broker: a batch that fails is polled again, not skipped


class _FakeConsumer:
    """Hands out batches like kafka-python's poll; ``seek`` rewinds; records commits."""

    def __init__(self, messages: list[tuple[str, int, bytes]]):
        from kafka.structs import TopicPartition

        self.tp = TopicPartition("pantau.alerts", 0)
        self.messages = messages
        self.position = 0
        self.commits = 0

    def poll(self, timeout_ms: int = 0):
        from types import SimpleNamespace

        batch = [SimpleNamespace(offset=o, value=v) for _, o, v in self.messages[self.position:]]
        self.position = len(self.messages)
        return {self.tp: batch} if batch else {}

    def seek(self, tp, offset: int) -> None:
        assert tp == self.tp
        self.position = offset

    def commit(self) -> None:
        self.commits += 1


def test_a_failed_batch_is_consumed_again(sessions: sessionmaker, demo: Demo, monkeypatch: pytest.MonkeyPatch):
    fresh = [kecamatan_alert(region=f"3101{n:02d}") for n in range(1, 4)]
    feed = Feed.__new__(Feed)  # no broker: the consumer is a stand-in
    feed.sessions, feed.alerts_topic, feed.submissions_topic = sessions, "pantau.alerts", "sirekap.submissions"
    feed.consumer = _FakeConsumer([("pantau.alerts", n, a.to_json()) for n, a in enumerate(fresh)])
    real = cases.ingest_alert
    calls = {"n": 0}

    def flaky(session, alert, now=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("database is locked")
        return real(session, alert, now)

    monkeypatch.setattr(cases, "ingest_alert", flaky)
    with pytest.raises(RuntimeError):
        feed.consume_once()
    assert feed.consumer.commits == 0
    with sessions() as session:
        assert count(session, Case, Case.kind == "regional") == 0  # the batch's transaction was rolled back
    assert feed.consume_once() == 3  # the same batch again
    assert feed.consumer.commits == 1 and feed.consume_once() == 0
    with sessions() as session:
        assert count(session, Case, Case.kind == "regional") == 3


def test_a_message_the_database_refuses_is_skipped_not_retried_forever(sessions: sessionmaker, demo: Demo,
                                                                        monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    from sqlalchemy.exc import DataError

    fresh = [kecamatan_alert(region=f"3101{n:02d}") for n in range(1, 4)]
    feed = Feed.__new__(Feed)
    feed.sessions, feed.alerts_topic, feed.submissions_topic = sessions, "pantau.alerts", "sirekap.submissions"
    feed.consumer = _FakeConsumer([("pantau.alerts", n, a.to_json()) for n, a in enumerate(fresh)])
    real = cases.ingest_alert

    def refuses_the_second(session, alert, now=None):
        if alert.alert_id == fresh[1].alert_id:
            raise DataError("INSERT", {}, Exception("value too long for type character varying(13)"))
        return real(session, alert, now)

    monkeypatch.setattr(cases, "ingest_alert", refuses_the_second)
    assert feed.consume_once() == 2
    assert feed.consumer.commits == 1 and feed.consume_once() == 0
    with sessions() as session:
        regions = set(session.execute(select(Case.region).where(Case.kind == "regional")).scalars())
    assert regions == {fresh[0].region, fresh[2].region}


# --------------------------------------------------------------------------------------------------
# 14. Through a real broker


def consume_until(feed: Feed, sessions: sessionmaker, done, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        feed.consume_once(timeout_ms=500)
        with sessions() as session:
            if done(session):
                return
        assert time.monotonic() < deadline, "the desk's feed did not consume everything in time"


@pytest.mark.broker
def test_the_feed_consumes_and_publishes_through_a_broker(broker, tmp_path: Path, demo: Demo, dki_envelopes: list[dict],
                                                          monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    import kafka
    from kafka import KafkaProducer

    from pantau.stream.broker import create_topics
    from pantau.stream.ingest import topic_consumer

    # Tansu holds a group join ~20 s with kafka-python's default 10 s session timeout, 3 s with 6 s
    real_consumer = kafka.KafkaConsumer
    monkeypatch.setattr(kafka, "KafkaConsumer", lambda *topics, **options: real_consumer(
        *topics, session_timeout_ms=6000, heartbeat_interval_ms=1000, **options))  # fmt: skip
    unique = uuid.uuid4().hex[:8]
    topics = {name: f"desk-{unique}.{name}" for name in ("alerts", "submissions", "verdicts")}
    create_topics(broker.bootstrap, {topic: 2 for topic in topics.values()})
    envelopes = [e for e in dki_envelopes if e["kode_tps"].startswith("3101")]
    alerts = [a for a in demo.alerts if a.kode_tps.startswith("3101")]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for envelope in envelopes:
        producer.send(topics["submissions"], key=envelope["kode_tps"][:4].encode(), value=orjson.dumps(envelope))
    for alert in alerts:
        producer.send(topics["alerts"], key=alert.region.encode(), value=alert.to_json())
    producer.send(topics["alerts"], key=b"3101", value=b"{not an alert")
    producer.flush()
    producer.close()

    sessions = connect(f"sqlite:///{tmp_path / 'desk.db'}")
    group = f"desk-{unique}"
    feeds: list[Feed] = []

    def feed(group: str) -> Feed:
        feeds.append(Feed(sessions, broker.bootstrap, topics["alerts"], topics["submissions"], topics["verdicts"], group=group))
        return feeds[-1]

    def totals(session) -> tuple[int, int, int]:
        return count(session, Submission), count(session, AlertRecord), count(session, Case)

    def repeats(kind: str) -> float:
        return DESK.registry.get_sample_value(f"pantau_desk_{kind}_consumed_total", {"outcome": "repeat"}) or 0

    expected = (len(envelopes), len(alerts), len({a.kode_tps for a in alerts}))
    try:
        first = feed(group)
        consume_until(first, sessions, lambda s: totals(s) == expected)
        with sessions() as session:
            auth.create_user(session, "rina", PASSWORD, "verifier")
            decide(session, tps_case(session, SUM_VALID_TPS), user(session, "rina"), "false_alarm", "sesuai foto")
            session.commit()
        assert first.publish_once() == 3 and first.publish_once() == 0
        with sessions() as session:
            assert count(session, Outbox, Outbox.sent_at.is_(None)) == 0
            queued = {row.value for row in session.execute(select(Outbox)).scalars()}
        reader = topic_consumer(broker.bootstrap, topics["verdicts"], poll_timeout=2.0)
        try:
            messages = []
            deadline = time.monotonic() + 30
            while len(messages) < 3 and time.monotonic() < deadline:
                messages += list(reader)
        finally:
            reader.close()
        assert {m.value.decode() for m in messages} == queued and len(messages) == 3
        assert {m.key for m in messages} == {b"3101"}
        assert {parse_verdict(m.value).alert_id for m in messages} == {a.alert_id for a in demo.alerts_of(SUM_VALID_TPS)}
        first.close()
        feeds.remove(first)

        # The same group resumes after the committed offsets: nothing is new.
        again = feed(group)
        applied, deadline = 0, time.monotonic() + 45
        while not again.consumer.assignment() and time.monotonic() < deadline:  # joining the group takes a while
            applied += again.consume_once(timeout_ms=500)
        applied += sum(again.consume_once(timeout_ms=500) for _ in range(3))
        assert applied == 0 and again.consumer.assignment()  # it did join: and found nothing left to read
        # ... at the offsets the first one committed: after every message published (Tansu's end_offsets
        # are not the high watermark, so count instead)
        positions = defaultdict(int)
        for tp in again.consumer.assignment():
            assert again.consumer.committed(tp) == again.consumer.position(tp)
            positions[tp.topic] += again.consumer.position(tp)
        assert dict(positions) == {topics["alerts"]: len(alerts) + 1, topics["submissions"]: len(envelopes)}
        # A new group reads everything again; the database ignores every repeat.
        before = {kind: repeats(kind) for kind in ("alerts", "submissions")}
        fresh = feed(f"{group}-replay")
        consume_until(fresh, sessions, lambda _: repeats("alerts") - before["alerts"] >= len(alerts)
                      and repeats("submissions") - before["submissions"] >= len(envelopes))  # fmt: skip
        with sessions() as session:
            assert totals(session) == expected and count(session, Decision) == 1 and count(session, Outbox) == 3
            assert tps_case(session, SUM_VALID_TPS).status == "decided"
            assert audit.verify(session).ok
    finally:
        for f in feeds:
            f.close()
        close(sessions)

"""The desk's web application (FastAPI, server-rendered pages).

Every route but ``/health`` requires a logged-in user; every POST checks the session's CSRF token
(the login form a double-submit cookie). Responses carry a strict Content-Security-Policy (no
script at all; styles by per-response nonce), and Jinja2 escapes everything a document or a person
wrote. The language is Bahasa Indonesia unless ``?lang=en`` switches it (remembered in a cookie).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from pantau import __version__

from . import audit, auth, cases
from .casepage import case_context
from .db import AuditEntry, Case, User
from .i18n import LANGUAGES, translator

SESSION_COOKIE = "pantau_session"
LOGIN_CSRF_COOKIE = "pantau_login_csrf"
LANG_COOKIE = "pantau_lang"
AUDIT_PAGE = 100
#: Highest page number served: a larger one (``?page=10**30``) would overflow the database's OFFSET.
MAX_PAGE = 100_000
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    pass


def create_app(sessions: sessionmaker, secure_cookies: bool = False) -> FastAPI:
    """The desk on the database behind ``sessions`` (``secure_cookies`` behind HTTPS)."""
    app = FastAPI(title="pantau desk", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    def db():
        with sessions() as session:
            yield session

    def lang_of(request: Request) -> str:
        wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or "id"
        return wanted if wanted in LANGUAGES else "id"

    def current(request: Request, session: Session = Depends(db)) -> tuple[User, Any]:
        found = auth.resume_session(session, request.cookies.get(SESSION_COOKIE))
        session.commit()
        if found is None:
            raise LoginRequired()
        return found

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        lang = lang_of(request)
        nonce = secrets.token_urlsafe(16)
        response = TEMPLATES.TemplateResponse(request, template, {
            "t": translator(lang), "lang": lang, "nonce": nonce, "version": __version__, **context}, status_code=status_code)  # fmt: skip
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' https: data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", secure=secure_cookies, httponly=True)
        return response

    @app.middleware("http")
    async def headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        if request.method != "GET":
            return JSONResponse({"detail": "login required"}, status_code=401)
        return RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, _exc: Forbidden) -> Response:
        return render(request, "message.html", 403, title="forbidden", message=translator(lang_of(request))("forbidden"), user=None)

    def check_csrf(login_session: Any, token: str) -> None:
        if not auth.csrf_ok(login_session.csrf_token, token):
            raise Forbidden()

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    @app.get("/health")
    def health(session: Session = Depends(db)) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        token = secrets.token_urlsafe(32)
        response = render(request, "login.html", csrf=token, next=_safe_next(next), error=None, user=None)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies)
        return response

    @app.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...), csrf: str = Form(""),
              next: str = Form("/"), session: Session = Depends(db)) -> Response:  # fmt: skip
        t = translator(lang_of(request))
        if not auth.csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
            raise Forbidden()
        if auth.throttled(session, username, client_of(request)):
            return render(request, "login.html", 429, csrf=csrf, next=_safe_next(next), error=t("throttled"), user=None)
        user = auth.authenticate(session, username, password, client_of(request))
        if user is None:
            session.commit()
            return render(request, "login.html", 401, csrf=csrf, next=_safe_next(next), error=t("login_failed"), user=None)
        token, _ = auth.start_session(session, user)
        audit.append(session, user.username, "login", f"user:{user.username}", {"client": client_of(request)})
        session.commit()
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies)
        response.delete_cookie(LOGIN_CSRF_COOKIE)
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form(""), who=Depends(current), session: Session = Depends(db)) -> Response:
        user, login_session = who
        check_csrf(login_session, csrf)
        auth.end_session(session, request.cookies.get(SESSION_COOKIE))
        audit.append(session, user.username, "logout", f"user:{user.username}", {})
        session.commit()
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, status: str = "open", region: str = "", detector: str = "", jenis: str = "", kind: str = "",
                   q: str = "", page: int = 1, who=Depends(current), session: Session = Depends(db)) -> HTMLResponse:  # fmt: skip
        user, login_session = who
        f = cases.QueueFilter(status=status if status in ("open", "decided", "closed", "") else "open", region=region.strip()[:13],
                              detector=detector.strip()[:64], jenis=jenis.strip()[:8], kind=kind if kind in ("tps", "regional") else "",
                              search=q.strip()[:13], page=min(max(page, 1), MAX_PAGE))  # fmt: skip
        rows, total = cases.queue(session, f)
        counts = dict(session.execute(select(Case.status, func.count()).group_by(Case.status)).all())
        now = datetime.now(timezone.utc)
        return render(request, "queue.html", user=user, csrf=login_session.csrf_token, cases=rows, total=total, f=f,
                      counts=counts, page_size=cases.PAGE, now=now, age=_age, query=_query(f))  # fmt: skip

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    def case_page(request: Request, case_id: int, who=Depends(current), session: Session = Depends(db)) -> HTMLResponse:
        user, login_session = who
        case = session.get(Case, case_id)
        if case is None:
            return render(request, "message.html", 404, user=user, csrf=login_session.csrf_token, title="not_found",
                          message=translator(lang_of(request))("not_found"))  # fmt: skip
        context = case_context(session, case, translator(lang_of(request)), lang_of(request))
        return render(request, "case.html", user=user, csrf=login_session.csrf_token, case=case, saved=request.query_params.get("saved"),
                      error=None, can_decide=user.role in auth.DECIDERS, **context)  # fmt: skip

    def _act(request: Request, session: Session, user: User, case_id: int, action) -> Response:  # type: ignore[no-untyped-def]
        case = session.get(Case, case_id, with_for_update=True)  # two deciders on PostgreSQL: the second waits, then sees it decided
        if case is None:
            return JSONResponse({"detail": "no such case"}, status_code=404)
        try:
            action(case)
            session.commit()
        except cases.DeskError as exc:
            session.rollback()
            case = session.get(Case, case_id)
            context = case_context(session, case, translator(lang_of(request)), lang_of(request))
            login_session = auth.resume_session(session, request.cookies.get(SESSION_COOKIE))
            session.commit()
            return render(request, "case.html", 400, user=user, csrf=login_session[1].csrf_token if login_session else "",
                          case=case, saved=None, error=str(exc), can_decide=user.role in auth.DECIDERS, **context)  # fmt: skip
        return RedirectResponse(f"/cases/{case_id}?saved=1", status_code=303)

    @app.post("/cases/{case_id}/decide")
    def decide(request: Request, case_id: int, decision: str = Form(...), note: str = Form(""), corrections: str = Form(""),
               csrf: str = Form(""), who=Depends(current), session: Session = Depends(db)) -> Response:  # fmt: skip
        user, login_session = who
        check_csrf(login_session, csrf)
        if user.role not in auth.DECIDERS:
            raise Forbidden()
        return _act(request, session, user, case_id,
                    lambda case: cases.decide(session, case, user, decision, note, cases.parse_corrections(corrections)))

    @app.post("/cases/{case_id}/accept")
    def accept(request: Request, case_id: int, field: str = Form(...), proposed: int = Form(...), note: str = Form(""),
               csrf: str = Form(""), who=Depends(current), session: Session = Depends(db)) -> Response:  # fmt: skip
        user, login_session = who
        check_csrf(login_session, csrf)
        if user.role not in auth.DECIDERS:
            raise Forbidden()
        return _act(request, session, user, case_id, lambda case: cases.decide(session, case, user, "corrected", note, {field: proposed}))

    @app.post("/cases/{case_id}/reopen")
    def reopen(request: Request, case_id: int, note: str = Form(""), csrf: str = Form(""), who=Depends(current),
               session: Session = Depends(db)) -> Response:  # fmt: skip
        user, login_session = who
        check_csrf(login_session, csrf)
        if user.role != "supervisor":
            raise Forbidden()
        return _act(request, session, user, case_id, lambda case: cases.reopen(session, case, user, note))

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, page: int = 1, subject: str = "", who=Depends(current), session: Session = Depends(db)) -> HTMLResponse:
        user, login_session = who
        page = min(max(page, 1), MAX_PAGE)
        report = audit.verify(session)
        query = select(AuditEntry)
        if subject:
            query = query.where(AuditEntry.subject == subject[:64])
        entries = session.execute(query.order_by(AuditEntry.seq.desc()).limit(AUDIT_PAGE).offset(AUDIT_PAGE * (page - 1))).scalars().all()
        return render(request, "audit.html", user=user, csrf=login_session.csrf_token, report=report, entries=entries, page=page,
                      subject=subject, page_size=AUDIT_PAGE)  # fmt: skip

    @app.get("/users", response_class=HTMLResponse)
    def users_page(request: Request, who=Depends(current), session: Session = Depends(db)) -> HTMLResponse:
        user, login_session = who
        if user.role != "supervisor":
            raise Forbidden()
        users = session.execute(select(User).order_by(User.username)).scalars().all()
        return render(request, "users.html", user=user, csrf=login_session.csrf_token, users=users, roles=auth.ROLES, error=None)

    @app.post("/users")
    def create_user(request: Request, username: str = Form(...), password: str = Form(...), role: str = Form(...),
                    display_name: str = Form(""), csrf: str = Form(""), who=Depends(current), session: Session = Depends(db)) -> Response:  # fmt: skip
        user, login_session = who
        check_csrf(login_session, csrf)
        if user.role != "supervisor":
            raise Forbidden()
        try:
            created = auth.create_user(session, username, password, role, display_name or None)
            audit.append(session, user.username, "create_user", f"user:{created.username}", {"role": created.role})
            session.commit()
        except auth.PolicyError as exc:
            session.rollback()
            users = session.execute(select(User).order_by(User.username)).scalars().all()
            return render(request, "users.html", 400, user=user, csrf=login_session.csrf_token, users=users, roles=auth.ROLES, error=str(exc))
        return RedirectResponse("/users", status_code=303)

    return app


def _safe_next(target: str) -> str:
    """Only local paths: a login link must not redirect to another site."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _age(then: datetime, now: datetime) -> str:
    seconds = max(int((now - then).total_seconds()), 0)
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _query(f: cases.QueueFilter) -> str:
    return urlencode({k: v for k, v in (("status", f.status), ("region", f.region), ("detector", f.detector),
                                        ("jenis", f.jenis), ("kind", f.kind), ("q", f.search)) if v})  # fmt: skip

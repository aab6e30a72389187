"""Accounts, passwords, sessions, CSRF tokens and login rate limiting.

Passwords are stored as scrypt hashes (RFC 7914; N=2¹⁴, r=8, p=1, 16-byte salt), the policy follows
NIST SP 800-63B (length over composition rules; no common or self-describing passwords). Sessions
are server-side: the cookie carries a random token, the database only its SHA-256, so a leaked
database does not hand out live sessions. Sessions expire after ``IDLE`` without a request and
``ABSOLUTE`` after login. Every state-changing form carries the session's CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .db import LoginFailure, LoginSession, User

ROLES = ("verifier", "supervisor", "auditor")
#: Roles that may decide cases (auditors read only).
DECIDERS = frozenset({"verifier", "supervisor"})
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 12
COMMON_PASSWORDS = frozenset({
    "password1234", "123456789012", "qwertyuiopas", "passwordpassword", "iloveyou1234", "adminadmin12",
    "pemilu2024pemilu", "indonesia1945", "bismillah123", "1234567890ab", "jakarta12345", "kpu123456789",
})  # fmt: skip
IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)
#: Failed logins allowed per username, and per client address, in ``FAILURE_WINDOW``.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)


class PolicyError(ValueError):
    """A password or account that the policy refuses; the message says why."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return "scrypt${n}${r}${p}${salt}${digest}".format(
        **SCRYPT, salt=base64.b64encode(salt).decode(), digest=base64.b64encode(digest).decode())


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    computed = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(computed, base64.b64decode(digest))


def check_policy(username: str, password: str) -> None:
    """Raise :class:`PolicyError` unless the password may be used by ``username``."""
    if len(password) < MIN_PASSWORD:
        raise PolicyError(f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > 256:
        raise PolicyError("password must be at most 256 characters")
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(lowered)) < 4:
        raise PolicyError("password is too common or too repetitive")
    if username.lower() in lowered:
        raise PolicyError("password must not contain the username")


def create_user(session: Session, username: str, password: str, role: str, display_name: str | None = None) -> User:
    username = username.strip()
    if not username or len(username) > 64 or not username.replace(".", "").replace("_", "").replace("-", "").isalnum():
        raise PolicyError("username: 1-64 letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise PolicyError(f"role must be one of {', '.join(ROLES)}")
    if session.execute(select(User).where(User.username == username)).scalar_one_or_none() is not None:
        raise PolicyError(f"user {username!r} already exists")
    check_policy(username, password)
    user = User(username=username, display_name=(display_name or username)[:128], role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def throttled(session: Session, username: str, client: str, now: datetime | None = None) -> bool:
    """Whether too many recent failures (for this username or from this client) bar another try."""
    since = (now or datetime.now(timezone.utc)) - FAILURE_WINDOW
    for column, value in ((LoginFailure.username, username), (LoginFailure.client, client)):
        count = session.execute(select(func.count()).select_from(LoginFailure).where(column == value, LoginFailure.at >= since)).scalar_one()
        if count >= MAX_FAILURES:
            return True
    return False


def authenticate(session: Session, username: str, password: str, client: str) -> User | None:
    """The active user with these credentials, else None (and the failure is counted)."""
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    # hash even for unknown users, so timing does not reveal which usernames exist
    valid = check_password(password, user.password_hash if user else _DUMMY)
    if user is None or not valid or not user.active:
        session.add(LoginFailure(username=username[:64], client=client[:64]))
        return None
    session.execute(delete(LoginFailure).where(LoginFailure.username == username))
    return user


def start_session(session: Session, user: User) -> tuple[str, LoginSession]:
    """A new session for ``user``: the cookie token (shown once) and its row."""
    token = secrets.token_urlsafe(32)
    row = LoginSession(token_hash=_digest(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32))
    session.add(row)
    return token, row


def resume_session(session: Session, token: str | None, now: datetime | None = None) -> tuple[User, LoginSession] | None:
    """The user and session of a cookie token, if the session is still valid (and touch it)."""
    if not token:
        return None
    row = session.get(LoginSession, _digest(token))
    if row is None:
        return None
    now = now or datetime.now(timezone.utc)
    user = session.get(User, row.user_id)
    if now - row.last_seen > IDLE or now - row.created_at > ABSOLUTE or user is None or not user.active:
        session.delete(row)
        return None
    row.last_seen = now
    return user, row


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(expected.encode(), given.encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_DUMMY = hash_password(secrets.token_urlsafe(16))

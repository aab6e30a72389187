"""The desk's database: SQLite by default, PostgreSQL (or any SQLAlchemy URL) by ``PANTAU_DESK_DB``.

Tables
    ``users``, ``login_sessions``, ``login_failures``   accounts, server-side sessions, rate limiting
    ``cases``      one per TPS and ballot type (``tps:KODE:JENIS``) or per region and ballot type for the
                   statistical alerts (``LEVEL:REGION:JENIS``)
    ``alerts``     every alert consumed, by its id (consuming one twice changes nothing)
    ``consumed_messages`` submission messages already applied (at-least-once delivery made idempotent)
    ``submissions`` every distinct version of a TPS's document (the case view's form, photos, history)
    ``stations``   the latest turnout and leader share per TPS and ballot type (region context, fingerprints)
    ``decisions``  what a person decided, why, when
    ``outbox``     verdicts waiting to be published to ``pantau.verdicts`` (written with the decision, in
                   one transaction, so a crash never loses a verdict)
    ``audit``      the append-only, hash-chained log (:mod:`pantau.desk.audit`)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

DEFAULT_URL = "sqlite:///pantau-desk.sqlite3"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator):
    """Timezone-aware in and out, whatever the backend (SQLite keeps no zone): stored as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the desk stores aware times only")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime(), dict: JSON, list: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginSession(Base):
    __tablename__ = "login_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class LoginFailure(Base):
    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # tps | regional
    kode_tps: Mapped[str | None] = mapped_column(String(13), index=True)
    jenis: Mapped[str] = mapped_column(String(8))
    level: Mapped[str] = mapped_column(String(12))
    region: Mapped[str] = mapped_column(String(13), index=True)
    status: Mapped[str] = mapped_column(String(12), index=True)  # open | decided | closed
    severity_rank: Mapped[int] = mapped_column(Integer, default=0)
    detectors: Mapped[str] = mapped_column(Text, default="")  # space-separated, of the open alerts
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_cases_queue", "status", "severity_rank", "opened_at"),)


class AlertRecord(Base):
    __tablename__ = "alerts"
    alert_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    detector: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(10))  # open | resolved | decided | notice
    resolved_by: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[dict] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(primary_key=True)
    kode_tps: Mapped[str] = mapped_column(String(13))
    jenis: Mapped[str] = mapped_column(String(8))
    digest: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    doc: Mapped[dict] = mapped_column()
    received_at: Mapped[datetime | None] = mapped_column()
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("kode_tps", "jenis", "version"),)


class ConsumedMessage(Base):
    """Messages already applied (``topic:partition:offset``, ``file:line``): redelivery is a no-op."""

    __tablename__ = "consumed_messages"
    source: Mapped[str] = mapped_column(String(160), primary_key=True)


class Station(Base):
    __tablename__ = "stations"
    kode_tps: Mapped[str] = mapped_column(String(13), primary_key=True)
    jenis: Mapped[str] = mapped_column(String(8), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    turnout: Mapped[float | None] = mapped_column(Float)
    leader: Mapped[str | None] = mapped_column(String(16))
    leader_share: Mapped[float | None] = mapped_column(Float)
    counts: Mapped[list] = mapped_column()  # [[candidate, votes], ...] of a complete, consistent form


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    corrected_values: Mapped[dict] = mapped_column(default=dict)
    alert_ids: Mapped[list] = mapped_column(default=list)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    audit_seq: Mapped[int] = mapped_column(Integer)


class Outbox(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(index=True)


class AuditEntry(Base):
    __tablename__ = "audit"
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def connect(url: str = DEFAULT_URL) -> sessionmaker:
    """A session factory on ``url`` with every table created."""
    engine = create_engine(url, future=True, **({"connect_args": {"check_same_thread": False}} if url.startswith("sqlite") else {}))
    if url.startswith("sqlite"):
        _sqlite_pragmas(engine)
    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # WAL lets the web pages read while the consumer writes; a busy timeout instead of "database is locked"
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

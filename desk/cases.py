"""Cases: alerts grouped for a person to decide, their life cycle, and the decisions.

A case is every alert of one TPS and ballot type (``tps:KODE:JENIS``), or every statistical alert of
one region and ballot type (``LEVEL:REGION:JENIS``). It is

``open``     it holds at least one open alert: it is in the queue;
``decided``  a person decided it; new data for the TPS (a new version of its form, a new alert)
             reopens it;
``closed``   a later submission resolved every open alert (``revision.resolved``, ``stat.cleared``):
             recorded as done by the system, not as a human decision.

Consuming the same alert or the same message twice changes nothing (alert ids; a submission's source
offset). A decision writes, in one transaction, the decision, its audit entry and one verdict per
open alert in the outbox, which :mod:`pantau.desk.feed` publishes to ``pantau.verdicts``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from pantau.detectors.form import Capacity, check_form
from pantau.detectors.regional import profile
from pantau.schemas import Alert, Verdict, normalize, parse_envelope
from pantau.schemas.sirekap import MAX_COUNT
from pantau.schemas.verdict import verdict_key

from . import audit
from .auth import DECIDERS
from .db import AlertRecord, Case, ConsumedMessage, Decision, Outbox, Station, Submission, User

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: Alerts that only report that earlier ones no longer hold: history of a case, never a reason to open it.
NOTICES = frozenset({"revision.resolved", "stat.cleared"})
DECISIONS = ("confirmed", "false_alarm", "field_check", "corrected")
SYSTEM = "system"
PAGE = 50


class DeskError(ValueError):
    """A request the desk refuses; the message is for the person who made it."""


def case_key(alert: Alert) -> tuple[str, str]:
    if alert.level == "tps":
        return f"tps:{alert.kode_tps}:{alert.jenis}", "tps"
    return f"{alert.level}:{alert.region}:{alert.jenis}", "regional"


# -- consuming -------------------------------------------------------------------------------------


def ingest_alert(session: Session, alert: Alert, now: datetime | None = None) -> bool:
    """File ``alert`` into its case; False if it was already there."""
    if session.get(AlertRecord, alert.alert_id) is not None:
        return False
    now = now or datetime.now(timezone.utc)
    key, kind = case_key(alert)
    case = session.execute(select(Case).where(Case.key == key)).scalar_one_or_none()
    notice = alert.detector in NOTICES
    if case is None:
        case = Case(key=key, kind=kind, kode_tps=alert.kode_tps, jenis=alert.jenis, level=alert.level,
                    region=alert.region, status="open", opened_at=now, updated_at=now)  # fmt: skip
        session.add(case)
        session.flush()
    elif not notice and case.status != "open":
        _reopen(session, case, now, SYSTEM, f"new alert {alert.detector}")
    session.add(AlertRecord(alert_id=alert.alert_id, case_id=case.id, detector=alert.detector, severity=alert.severity,
                            status="notice" if notice else "open", body=alert.model_dump(mode="json"), received_at=now))  # fmt: skip
    for earlier in alert.resolves:
        record = session.get(AlertRecord, earlier)
        if record is not None and record.status in ("open", "decided"):
            record.status, record.resolved_by = "resolved", alert.alert_id
    session.flush()
    _refresh(session, case, now, resolved_by=alert if alert.resolves else None)
    return True


def ingest_submission(session: Session, source: str, raw: dict[str, Any], now: datetime | None = None) -> bool:
    """Keep a new version of a TPS's document (``source``: where it was read, e.g. topic:partition:offset).

    Returns False for a message already consumed or a document identical to the latest version.
    Raises :class:`~pantau.schemas.InvalidSubmission` for a document that is not a valid submission.
    """
    if session.get(ConsumedMessage, source) is not None:
        return False
    envelope = parse_envelope(raw)
    session.add(ConsumedMessage(source=source))
    now = now or datetime.now(timezone.utc)
    doc = envelope.doc.model_dump(mode="json", by_alias=True, exclude_unset=True)
    digest = hashlib.blake2b(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    latest = session.execute(
        select(Submission).where(Submission.kode_tps == envelope.kode_tps, Submission.jenis == envelope.jenis)
        .order_by(Submission.version.desc()).limit(1)
    ).scalar_one_or_none()  # fmt: skip
    if latest is not None and latest.digest == digest:
        return False
    version = latest.version + 1 if latest else 1
    # A receipt time without UTC offset is valid for the schema (an archive's, another producer's) but of no
    # known zone: keep the document, not the time (a naive time fails the flush, and with it the feed's whole
    # batch at every redelivery).
    received_at = envelope.received_at if envelope.received_at is None or envelope.received_at.utcoffset() is not None else None
    session.add(Submission(kode_tps=envelope.kode_tps, jenis=envelope.jenis, digest=digest, version=version,
                           doc=doc, received_at=received_at, ingested_at=now))  # fmt: skip
    tally = normalize(envelope)
    station = session.get(Station, (envelope.kode_tps, envelope.jenis)) or Station(kode_tps=envelope.kode_tps, jenis=envelope.jenis)
    found = profile(tally, check_form(tally, Capacity()))
    station.version = version
    if found is None:
        station.turnout = station.leader = station.leader_share = None
        station.counts = []
    else:
        leader, votes = max(found.counts, key=lambda c: c[1])
        station.turnout, station.leader, station.leader_share = found.turnout, leader, votes / found.valid
        station.counts = [list(c) for c in found.counts]
    session.add(station)
    case = session.execute(select(Case).where(Case.key == f"tps:{envelope.kode_tps}:{envelope.jenis}")).scalar_one_or_none()
    if case is not None and case.status == "decided" and version > 1:
        # its decided alerts go back to open with it: else the case sits in the queue with nothing left to
        # decide (and, being open, beyond a supervisor's reopen), and the new photos are never looked at
        _send_back(session, case, now, SYSTEM, f"new version {version} of the form")
    return True


def _reopen(session: Session, case: Case, now: datetime, actor: str, why: str) -> None:
    case.status, case.opened_at, case.updated_at, case.closed_reason = "open", now, now, None
    audit.append(session, actor, "reopen", f"case:{case.id}", {"case": case.id, "key": case.key, "why": why}, now)


def _send_back(session: Session, case: Case, now: datetime, actor: str, why: str) -> None:
    """Reopen ``case`` with the alerts it was decided (or closed) on, for a person to decide again."""
    # A closed case's alerts were resolved by a later submission: reopening it questions that
    # correction, so they are open again (else _refresh would close the case again at once).
    again = ("decided", "resolved") if case.status == "closed" else ("decided",)
    for record in session.execute(select(AlertRecord).where(AlertRecord.case_id == case.id, AlertRecord.status.in_(again))).scalars():
        record.status, record.resolved_by = "open", None
    _reopen(session, case, now, actor, why)
    _refresh(session, case, now)


def _refresh(session: Session, case: Case, now: datetime, resolved_by: Alert | None = None) -> None:
    """Recompute the case's severity and detectors from its open alerts; close it when none is left."""
    open_alerts = session.execute(select(AlertRecord).where(AlertRecord.case_id == case.id, AlertRecord.status == "open")).scalars().all()
    case.updated_at = now
    case.severity_rank = max((SEVERITY_RANK[a.severity] for a in open_alerts), default=0)
    case.detectors = " ".join(sorted({a.detector for a in open_alerts}))
    if case.status == "open" and not open_alerts:
        case.status = "closed"
        case.closed_reason = (f"resolved by a later submission ({resolved_by.detector} {resolved_by.alert_id})"
                              if resolved_by else "no open alert")  # fmt: skip
        audit.append(session, SYSTEM, "close", f"case:{case.id}", {"case": case.id, "key": case.key, "why": case.closed_reason}, now)


# -- deciding --------------------------------------------------------------------------------------


def decide(session: Session, case: Case, user: User, decision: str, note: str,
           corrected_values: dict[str, int] | None = None, now: datetime | None = None) -> Decision:  # fmt: skip
    """Record ``user``'s decision on every open alert of ``case``; queue one verdict per alert."""
    if user.role not in DECIDERS:
        raise DeskError("your role may read cases but not decide them")
    if decision not in DECISIONS:
        raise DeskError(f"decision must be one of {', '.join(DECISIONS)}")
    if case.status != "open":
        raise DeskError("this case is not open (it was decided or closed meanwhile)")
    note = (note or "").strip()
    if not note:
        raise DeskError("a note is required: say what you checked")
    corrected_values = corrected_values or {}
    if decision == "corrected":
        _check_corrections(session, case, corrected_values)
    elif corrected_values:
        raise DeskError("corrected values go with the decision 'corrected' only")
    alerts = session.execute(select(AlertRecord).where(AlertRecord.case_id == case.id, AlertRecord.status == "open")
                             .order_by(AlertRecord.alert_id)).scalars().all()  # fmt: skip
    if not alerts:
        raise DeskError("this case has no open alert left")
    now = now or datetime.now(timezone.utc)
    row = Decision(case_id=case.id, user_id=user.id, username=user.username, role=user.role, decision=decision, note=note,
                   corrected_values=corrected_values, alert_ids=[a.alert_id for a in alerts], decided_at=now, audit_seq=0)  # fmt: skip
    entry = audit.append(session, user.username, "decide", f"case:{case.id}", audit.decision_payload(row), now)
    row.audit_seq = entry.seq
    session.add(row)
    session.flush()
    for record in alerts:
        body = record.body
        try:
            verdict = Verdict(
                verdict_id=hashlib.blake2b(f"{row.id}:{record.alert_id}".encode(), digest_size=16).hexdigest(),
                alert_id=record.alert_id, detector=record.detector, jenis=body["jenis"], kode_tps=body.get("kode_tps"),
                region=body["region"], decision=decision, corrected_values=corrected_values, note=note,
                decided_by=user.username, role=user.role, decided_at=now, audit_seq=entry.seq, audit_hash=entry.hash,
            )  # fmt: skip
        except ValidationError as exc:
            raise DeskError(f"the verdict is not valid: {exc.errors()[0]['msg']}") from exc
        session.add(Outbox(key=verdict_key(verdict).decode(), value=verdict.model_dump_json(), created_at=now))
        record.status = "decided"
    case.status, case.updated_at = "decided", now
    return row


def _check_corrections(session: Session, case: Case, values: dict[str, int]) -> None:
    if not values:
        raise DeskError("give the corrected value(s) read from the form photo")
    if case.kode_tps is None:
        raise DeskError("a regional case has no form to correct")
    latest = latest_submission(session, case.kode_tps, case.jenis)
    known = set(normalize(parse_envelope({"kode_tps": case.kode_tps, "jenis": case.jenis, "doc": latest.doc})).counts) if latest else set()
    for field, value in values.items():
        if known and field not in known:
            raise DeskError(f"{field!r} is not a number on this form")
        # a verdict holds no count beyond MAX_COUNT (nor the audit's JSON an int beyond 64 bits): say so here
        if not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise DeskError(f"{field}: a count is a whole number from 0 to {MAX_COUNT:,}")


def reopen(session: Session, case: Case, user: User, note: str, now: datetime | None = None) -> None:
    """A supervisor sends a decided or closed case back to the queue."""
    if user.role != "supervisor":
        raise DeskError("only a supervisor may reopen a case")
    if case.status == "open":
        raise DeskError("this case is already open")
    if not (note or "").strip():
        raise DeskError("a note is required: say why the case is reopened")
    now = now or datetime.now(timezone.utc)
    _send_back(session, case, now, user.username, note.strip())


def parse_corrections(text: str) -> dict[str, int]:
    """``field=value`` per line (or comma-separated) → mapping; clear errors for anything else."""
    values: dict[str, int] = {}
    for part in text.replace(",", "\n").splitlines():
        part = part.strip()
        if not part:
            continue
        field, sep, value = part.partition("=")
        # ASCII digits only: str.isdigit() also takes '²', which int() refuses
        if not sep or not field.strip() or not (value.strip().isascii() and value.strip().isdigit()):
            raise DeskError(f"{part!r}: write corrections as field=value, e.g. chart.100027=51")
        values[field.strip()] = int(value.strip())
    return values


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class QueueFilter:
    status: str = "open"
    region: str = ""
    detector: str = ""
    jenis: str = ""
    kind: str = ""
    search: str = ""
    page: int = 1


def queue(session: Session, f: QueueFilter) -> tuple[list[Case], int]:
    """Cases by severity, then age (oldest first); and how many match in all."""
    query = select(Case)
    if f.status:
        query = query.where(Case.status == f.status)
    if f.region:
        query = query.where(Case.region.startswith(f.region, autoescape=True))
    if f.detector:
        query = query.where(Case.detectors.contains(f.detector, autoescape=True))
    if f.jenis:
        query = query.where(Case.jenis == f.jenis)
    if f.kind:
        query = query.where(Case.kind == f.kind)
    if f.search:
        query = query.where(or_(Case.kode_tps.startswith(f.search, autoescape=True), Case.region.startswith(f.search, autoescape=True)))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(Case.severity_rank.desc(), Case.opened_at, Case.id)
                           .limit(PAGE).offset(PAGE * (max(f.page, 1) - 1))).scalars().all()  # fmt: skip
    return list(rows), total


def case_alerts(session: Session, case: Case) -> list[AlertRecord]:
    return list(session.execute(select(AlertRecord).where(AlertRecord.case_id == case.id)
                                .order_by(AlertRecord.received_at, AlertRecord.alert_id)).scalars())  # fmt: skip


def history(session: Session, kode_tps: str, jenis: str) -> list[Submission]:
    return list(session.execute(select(Submission).where(Submission.kode_tps == kode_tps, Submission.jenis == jenis).order_by(Submission.version)).scalars())  # fmt: skip


def latest_submission(session: Session, kode_tps: str, jenis: str) -> Submission | None:
    return session.execute(select(Submission).where(Submission.kode_tps == kode_tps, Submission.jenis == jenis)
                           .order_by(Submission.version.desc()).limit(1)).scalar_one_or_none()  # fmt: skip


def peers(session: Session, region: str, jenis: str, limit: int = 200_000) -> list[Station]:
    return list(session.execute(select(Station).where(Station.kode_tps.startswith(region, autoescape=True), Station.jenis == jenis,
                                                      Station.turnout.is_not(None)).limit(limit)).scalars())  # fmt: skip


def decisions(session: Session, case: Case) -> list[Decision]:
    return list(session.execute(select(Decision).where(Decision.case_id == case.id).order_by(Decision.id)).scalars())

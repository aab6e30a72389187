"""The append-only, hash-chained audit log: who did what, when; any later edit shows.

Entry ``n`` stores ``hash = SHA-256(prev_hash ‖ canonical JSON of [n, at, actor, action, subject,
payload])`` with ``prev_hash`` the hash of entry ``n - 1`` (64 zeros for the first). Editing an
entry breaks its hash; deleting one leaves a gap in the sequence or a ``prev_hash`` that points at
nothing; reordering breaks both. Deleting the *last* entries leaves a consistent shorter chain, so
:func:`verify` also checks every decision row against the entry it was recorded with, and accepts
the head (sequence number and hash) published elsewhere — every verdict on ``pantau.verdicts``
carries it — to prove nothing was cut off.

``pantau desk verify-audit`` runs :func:`verify` on the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import AuditEntry, Decision

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, subject: str, payload: str) -> str:
    stamp = at.astimezone(timezone.utc).isoformat(timespec="microseconds")
    body = canonical([seq, stamp, actor, action, subject, payload])
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def append(session: Session, actor: str, action: str, subject: str, payload: dict[str, Any], at: datetime | None = None) -> AuditEntry:
    """Add the next entry (in the caller's transaction: it commits with what it records).

    Two writers racing for the same sequence number make one transaction fail on the primary key;
    the chain never forks.
    """
    last = session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).scalar_one_or_none()
    seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
    at = at or datetime.now(timezone.utc)
    text = canonical(payload)
    entry = AuditEntry(seq=seq, at=at, actor=actor, action=action, subject=subject, payload=text, prev_hash=prev,
                       hash=entry_hash(prev, seq, at, actor, action, subject, text))  # fmt: skip
    session.add(entry)
    session.flush()
    return entry


@dataclass
class AuditReport:
    """Result of :func:`verify`: ``ok`` when the chain and every decision hold."""

    entries: int = 0
    head: tuple[int, str] = (0, GENESIS)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session, expected_head: tuple[int, str] | None = None) -> AuditReport:
    """Walk the chain from the first entry; report every break, gap, edited entry or decision."""
    report = AuditReport()
    prev_seq, prev_hash = 0, GENESIS
    entries: dict[int, AuditEntry] = {}
    for entry in session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars():
        report.entries += 1
        entries[entry.seq] = entry
        if entry.seq != prev_seq + 1:
            report.problems.append(f"entries {prev_seq + 1}..{entry.seq - 1} are missing (deleted or renumbered)")
        if entry.prev_hash != prev_hash:
            report.problems.append(f"entry {entry.seq}: does not follow the entry before it (reordered, or one deleted)")
        recomputed = entry_hash(entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action, entry.subject, entry.payload)
        if recomputed != entry.hash:
            report.problems.append(f"entry {entry.seq}: its content was changed after it was written")
        prev_seq, prev_hash = entry.seq, entry.hash
    report.head = (prev_seq, prev_hash)
    recorded: set[int] = set()
    for decision in session.execute(select(Decision).order_by(Decision.id)).scalars():
        recorded.add(decision.audit_seq)
        entry = entries.get(decision.audit_seq)
        if entry is None or entry.action != "decide":
            report.problems.append(f"decision {decision.id}: its audit entry {decision.audit_seq} is missing")
        # the decision's time is the entry's (both written with one ``now``): the case page shows it
        elif orjson.loads(entry.payload) != decision_payload(decision) or entry.actor != decision.username or entry.at != decision.decided_at:
            report.problems.append(f"decision {decision.id}: differs from what the audit log recorded")
    # and the other way round: a decision row deleted (the case page no longer shows it) leaves its entry behind
    for seq, entry in entries.items():
        if entry.action == "decide" and seq not in recorded:
            report.problems.append(f"entry {seq}: records a decision that is missing from the decisions")
    if expected_head is not None:
        seq, digest = expected_head
        have = entries.get(seq)
        if have is None:
            report.problems.append(f"entry {seq} (a published head) is missing: the log was cut short")
        elif have.hash != digest:
            report.problems.append(f"entry {seq} does not match its published hash")
    return report


def decision_payload(decision: Decision) -> dict[str, Any]:
    """What the audit log records of a decision (and :func:`verify` compares)."""
    return {
        "case": decision.case_id, "decision": decision.decision, "note": decision.note, "role": decision.role,
        "corrected_values": decision.corrected_values, "alerts": decision.alert_ids,
    }  # fmt: skip

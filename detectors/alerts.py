"""Building alerts: deterministic ids, observation times, and the reasons people read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from collections.abc import Iterable

from pantau.schemas import Alert, Severity, Suggestion, Tally
from pantau.schemas.alert import alert_id

#: Sirekap's ``ts`` is Western Indonesia Time.
WIB = timezone(timedelta(hours=7), "WIB")


def observed_at(tally: Tally) -> datetime | None:
    """When the data was seen: receipt time if known, else the document's publication batch time."""
    if tally.received_at is not None:
        return tally.received_at
    if tally.ts:
        try:
            return datetime.strptime(tally.ts, "%Y-%m-%d %H:%M:%S").replace(tzinfo=WIB)
        except ValueError:
            return None
    return None


def tps_alert(
    tally: Tally,
    detector: str,
    severity: Severity,
    score: float,
    reason: str,
    reason_en: str,
    evidence: dict[str, Any],
    suggestions: Iterable[Suggestion] = (),
    resolves: Iterable[str] = (),
) -> Alert:
    """An alert about one TPS; its id is a digest of detector, ballot, TPS and evidence."""
    return Alert.model_construct(
        alert_id=alert_id(detector, tally.jenis, tally.kode_tps, evidence),
        detector=detector,
        severity=severity,
        jenis=tally.jenis,
        kode_tps=tally.kode_tps,
        region=tally.kode_tps,
        level="tps",
        score=round(float(score), 6),
        reason=reason,
        reason_en=reason_en,
        evidence=evidence,
        suggestions=list(suggestions),
        resolves=sorted(resolves),
        observed_at=observed_at(tally),
    )

"""Verdict feedback: a desk verdict ``false_alarm`` on an alert suppresses that finding on that data.

An alert id is a digest of detector, ballot, subject and evidence, so "the same finding on the same
data" is the same id. A suppressed id is not published again when a resubmitted form, a reprocessed
batch or a form flip-flopping back to earlier numbers (A → B → A) repeats it; a finding on other
numbers has another id and is published as usual.

Desks revise their decisions, and verdicts can arrive out of order (several desks, retries): the
verdict in force on an alert is the latest by ``decided_at`` (ties: the larger ``verdict_id``); an
older verdict arriving late changes nothing. Any decision other than ``false_alarm`` lifts a
suppression.

Only TPS alerts are suppressed. Verdicts are keyed by kabupaten/kota like the submissions, so the
worker inspecting a TPS holds the verdicts on its alerts; regional alerts come from the assessor,
which reads another partition and never sees them. The offline replay suppresses the same way.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pantau.schemas import Alert, Verdict


@dataclass(frozen=True, slots=True)
class Ruling:
    """The verdict in force on one alert: when it was decided, which verdict, and whether it is a false alarm."""

    decided_at: datetime
    verdict_id: str
    false_alarm: bool

    @classmethod
    def of(cls, verdict: Verdict) -> Ruling:
        if verdict.decided_at.utcoffset() is None:
            # verdicts from several desks are ordered by time: a local time without offset has no place in that order
            raise ValueError(f"verdict {verdict.verdict_id}: decided_at {verdict.decided_at.isoformat()} has no UTC offset")
        return cls(verdict.decided_at.astimezone(timezone.utc), verdict.verdict_id, verdict.decision == "false_alarm")

    def supersedes(self, other: Ruling) -> bool:
        return (self.decided_at, self.verdict_id) > (other.decided_at, other.verdict_id)

    def to_state(self) -> dict[str, Any]:
        return {"decided_at": self.decided_at.isoformat(), "verdict_id": self.verdict_id, "false_alarm": self.false_alarm}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ruling:
        return cls(datetime.fromisoformat(state["decided_at"]), state["verdict_id"], bool(state["false_alarm"]))


class Suppressions:
    """The desk's verdict in force per alert id, and whether an alert may be published.

    ``states`` maps alert ids to :meth:`Ruling.to_state` dicts: a dict offline, a changelog-backed
    table in the stream.

    >>> from datetime import datetime, timezone
    >>> def verdict(n, decision, hour):
    ...     return Verdict(verdict_id=f"v-{n}", alert_id="afd42a8ed3a17673b246f9bc8b7151bd", detector="form.sum_valid",
    ...                    jenis="ppwp", kode_tps="3173011002090", region="3173011002090", decision=decision,
    ...                    note="Foto C.Hasil sesuai", decided_by="rina", role="verifier",
    ...                    decided_at=datetime(2024, 2, 16, hour, tzinfo=timezone.utc))
    >>> alert = Alert.model_construct(alert_id="afd42a8ed3a17673b246f9bc8b7151bd", kode_tps="3173011002090")
    >>> suppressions = Suppressions()
    >>> suppressions.learn(verdict(1, "false_alarm", 9)), suppressions.allows(alert)
    (True, False)
    >>> suppressions.learn(verdict(2, "confirmed", 8)), suppressions.allows(alert)  # older, arriving late
    (False, False)
    >>> suppressions.learn(verdict(3, "confirmed", 10)), suppressions.allows(alert)
    (True, True)
    """

    def __init__(self, states: MutableMapping[str, dict[str, Any]] | None = None):
        self.states: MutableMapping[str, dict[str, Any]] = {} if states is None else states

    def learn(self, verdict: Verdict) -> bool:
        """Take a verdict into account; whether it is now the one in force on its alert."""
        ruling = Ruling.of(verdict)
        state = self.states.get(verdict.alert_id)
        if state is not None and not ruling.supersedes(Ruling.from_state(state)):
            return False
        self.states[verdict.alert_id] = ruling.to_state()
        return True

    def allows(self, alert: Alert) -> bool:
        """False for a TPS alert whose verdict in force is ``false_alarm``."""
        if alert.kode_tps is None:
            return True
        state = self.states.get(alert.alert_id)
        return state is None or not Ruling.from_state(state).false_alarm

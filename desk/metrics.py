"""The desk's Prometheus metrics: what it consumed, and its backlog and throughput read from the database.

The database figures (open cases, oldest open case, decisions, unsent verdicts) are computed at scrape
time, so they are right after a restart and across several desk processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from .db import Case, Decision, Outbox

SEVERITIES = ("info", "warning", "critical")


class DeskMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.alerts = Counter("pantau_desk_alerts_consumed", "Alerts consumed by the desk, by outcome (new, repeat)",
                              ["outcome"], registry=self.registry)  # fmt: skip
        self.submissions = Counter("pantau_desk_submissions_consumed", "Submissions consumed by the desk, by outcome (new, repeat)",
                                   ["outcome"], registry=self.registry)  # fmt: skip
        self.skipped = Counter("pantau_desk_messages_skipped", "Invalid messages the desk skipped, by topic", ["topic"], registry=self.registry)
        self.verdicts_published = Counter("pantau_desk_verdicts_published", "Verdicts published to pantau.verdicts", registry=self.registry)

    def watch(self, sessions: sessionmaker) -> None:
        """Export the backlog and decisions of the database behind ``sessions``."""
        self.registry.register(_Backlog(sessions))


class _Backlog:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        open_cases = GaugeMetricFamily("pantau_desk_open_cases", "Cases waiting for a decision, by severity", labels=["severity"])
        oldest = GaugeMetricFamily("pantau_desk_oldest_open_case_age_seconds", "Age of the oldest open case")
        decisions = CounterMetricFamily("pantau_desk_decisions", "Decisions recorded, by decision", labels=["decision"])
        unsent = GaugeMetricFamily("pantau_desk_verdicts_unsent", "Verdicts recorded but not yet acknowledged by the broker")
        with self.sessions() as session:
            by_rank = dict(session.execute(select(Case.severity_rank, func.count()).where(Case.status == "open").group_by(Case.severity_rank)).all())
            first = session.execute(select(func.min(Case.opened_at)).where(Case.status == "open")).scalar_one()
            counts = dict(session.execute(select(Decision.decision, func.count()).group_by(Decision.decision)).all())
            waiting = session.execute(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))).scalar_one()
        for rank, severity in enumerate(SEVERITIES):
            open_cases.add_metric([severity], by_rank.get(rank, 0))
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=timezone.utc)
        oldest.add_metric([], (datetime.now(timezone.utc) - first).total_seconds() if first else 0.0)
        for decision in ("confirmed", "false_alarm", "field_check", "corrected"):
            decisions.add_metric([decision], counts.get(decision, 0))
        unsent.add_metric([], waiting)
        yield from (open_cases, oldest, decisions, unsent)


DESK = DeskMetrics()

"""The worker's Prometheus metrics (served at ``/metrics``).

Prometheus conventions: base units (seconds), ``_total`` counters, bounded label values (outcomes,
detector names, severities, rejection codes, partition numbers; never TPS codes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from pantau.schemas import JENIS

# ``*_created`` series double the exposition for no use on a dashboard.
disable_created_metrics()

#: Receipt → alert latency: a desk wants seconds; the buckets span sub-millisecond to a minute.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


def expected_tps(path: str | Path | None = None) -> dict[str, int]:
    """TPS per province: ``path`` (JSON ``{"tps": {"PP": count}}``) or the shipped 2024 table."""
    raw = Path(path).read_bytes() if path else resources.files("pantau").joinpath("data/tps_expected.json").read_bytes()
    return {str(k): int(v) for k, v in json.loads(raw)["tps"].items()}


class Metrics:
    """One registry per worker app, so tests can run several apps in one process."""

    def __init__(self, registry: CollectorRegistry | None = None, expected: dict[str, int] | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.submissions = Counter(
            "pantau_submissions", "Submissions consumed, by outcome (processed; deadlettered; redelivered: consumed "
            "again after a worker crash, its state already held it, skipped).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.alerts = Counter(
            "pantau_alerts", "Alerts published, by detector, severity and province (2-digit code).",
            ["detector", "severity", "provinsi"], registry=r,
        )  # fmt: skip
        self.suppressed = Counter(
            "pantau_alerts_suppressed", "TPS alerts not published: the desk's verdict in force on their id is a false alarm.",
            ["detector"], registry=r,
        )  # fmt: skip
        self.verdicts = Counter(
            "pantau_verdicts", "Desk verdicts consumed, by outcome (applied; outdated: it or a later verdict on the alert "
            "was already in force; deadlettered).", ["outcome"], registry=r,
        )  # fmt: skip
        self.deadletters = Counter(
            "pantau_deadletters", "Messages dead-lettered, by reason code.", ["reason"], registry=r
        )
        self.alert_latency = Histogram(
            "pantau_alert_latency_seconds", "Time from a submission's receipt (received_at) to its alert being published.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.processing = Histogram(
            "pantau_processing_seconds", "Detector time per submission (validation, detectors, state).",
            buckets=PROCESSING_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "pantau_batch_submissions", "Submissions per processed batch.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000), registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "pantau_consumer_lag_messages", "Messages on the submissions topic not yet processed, by partition.",
            ["partition"], registry=r,
        )  # fmt: skip
        self.partitions_stalled = Gauge(
            "pantau_partitions_stalled", "Submissions partitions held that are behind their end offset and have not "
            "moved for PANTAU_STALL_SECONDS (/health says 503 'stalled'; a restart reassigns them).", registry=r,
        )  # fmt: skip
        self.tps_first_seen = Counter(
            "pantau_tps_first_seen", "TPS and ballot types seen for the first time, by province and ballot type "
            "(a worker restart resets it; use increase() over the night).", ["provinsi", "jenis"], registry=r,
        )  # fmt: skip
        self.tps_expected = Gauge(
            "pantau_tps_expected", "Polling stations (TPS) each province has, from KPU's registry (coverage = seen / expected).",
            ["provinsi"], registry=r,
        )  # fmt: skip
        for provinsi, count in (expected if expected is not None else expected_tps()).items():
            self.tps_expected.labels(provinsi).set(count)
            for jenis in JENIS:  # from zero, so increase() counts the first TPS of a province too
                self.tps_first_seen.labels(provinsi, jenis)
        for outcome in ("processed", "deadlettered", "redelivered"):
            self.submissions.labels(outcome)
        for outcome in ("applied", "outdated", "deadlettered"):
            self.verdicts.labels(outcome)


@dataclass
class StallWatch:
    """Which partitions are behind their end offset and have not moved for ``after`` seconds.

    A consumer can silently stop fetching one partition while it goes on with the others (a
    partition left paused after a restore: seen once in 100,000-submission crash runs on the
    embedded broker, and reported against Faust and other Kafka clients). Its lag then grows while
    the worker looks healthy; this names it, so that /health can say so and an orchestrator restart
    the worker (its partitions are then reassigned and fetched again).

    >>> watch = StallWatch(after=60.0)
    >>> watch.update(0, mark=(100, 100), behind=True, now=0.0)
    False
    >>> watch.update(0, mark=(100, 100), behind=True, now=61.0)
    True
    >>> watch.update(0, mark=(150, 150), behind=True, now=62.0), watch.update(1, mark=(7, 7), behind=False, now=500.0)
    (False, False)
    """

    after: float
    seen: dict[int, tuple[Any, float]] = field(default_factory=dict)

    def update(self, partition: int, mark: Any, behind: bool, now: float) -> bool:
        """``mark``: what changes when the partition makes progress (its fetch position, offset processed)."""
        last = self.seen.get(partition)
        if last is None or last[0] != mark or not behind:
            self.seen[partition] = (mark, now)
            return False
        return now - last[1] >= self.after

    def keep(self, partitions: set[int]) -> None:
        """Forget the partitions no longer held."""
        for partition in set(self.seen) - partitions:
            del self.seen[partition]

"""Publishing submissions to the broker (``pantau replay --broker``) and reading topics back.

Valid records are published as envelopes stamped with ``received_at`` (now), keyed by their 4-digit
kab/kota code. Records that fail validation are published unchanged, without a key: the worker
dead-letters them with the reason, so nothing an archive holds is lost on the way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from pantau.sources import Record


def envelope_bytes(record: Record, received_at: datetime) -> bytes:
    """The message value for a valid record: the envelope as read, stamped with ``received_at``."""
    assert record.envelope is not None
    if record.raw:
        envelope = orjson.loads(record.raw)
    else:
        envelope = record.envelope.model_dump(mode="json", exclude_unset=True)
    envelope["received_at"] = received_at.isoformat()
    return orjson.dumps(envelope)


@dataclass
class PublishSummary:
    published: int = 0
    invalid: int = 0
    seconds: float = 0.0


def producer(bootstrap: str, **options: Any):
    from kafka import KafkaProducer

    settings = {"linger_ms": 5, "batch_size": 256 * 1024, "acks": "all", "max_request_size": 4 << 20}
    return KafkaProducer(bootstrap_servers=bootstrap.split(","), **{**settings, **options})


def publish(
    records: Iterable[Record],
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    security: dict[str, Any] | None = None,
) -> PublishSummary:
    """Publish every record to ``topic``, at most ``rate`` per second; wait until all are acknowledged.

    ``security``: kafka-python TLS/SASL options (:meth:`~pantau.stream.settings.Settings.kafka_options`).
    """
    summary = PublishSummary()
    started = time.perf_counter()
    kafka = producer(bootstrap, **(security or {}))
    try:
        for n, record in enumerate(records, 1):
            if rate:
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if record.envelope is not None:
                value = envelope_bytes(record, datetime.now(timezone.utc))
                kafka.send(topic, key=record.envelope.kabkota.encode(), value=value)
            else:
                kafka.send(topic, key=None, value=record.raw)
                summary.invalid += 1
            summary.published += 1
            if on_progress is not None:
                on_progress(summary.published)
        kafka.flush()
    finally:
        kafka.close()
    summary.seconds = time.perf_counter() - started
    return summary


def topic_consumer(bootstrap: str, topic: str, *, from_beginning: bool = True, poll_timeout: float = 1.0,
                   security: dict[str, Any] | None = None):  # fmt: skip
    """A kafka-python consumer of ``topic`` (no group, no commits); iterating it stops after
    ``poll_timeout`` seconds without a message, and may be iterated again to go on."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic, bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest", consumer_timeout_ms=int(poll_timeout * 1000),
        **(security or {}),
    )  # fmt: skip

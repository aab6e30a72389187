"""The Faust application: topics, the revision table, the inspecting agent, and web views.

:func:`create_app` builds a worker app from :class:`~pantau.stream.settings.Settings`. One agent
consumes ``sirekap.submissions`` in batches (Faust's per-event cost dominates a single submission's
detector cost), runs :class:`~pantau.detectors.inspector.TpsInspector` on each — the very code the
offline replay runs — and publishes alerts and dead letters.

Delivery is at-least-once (the embedded broker has no transactions): a batch's alerts and dead
letters are acknowledged by the broker *before* its revision states are written to the table and its
offsets committed. A crash in between reprocesses the batch; alert ids are deterministic, so that
yields the same alerts again, never a second, distinct one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import contextvars
import logging
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pantau.detectors.inspector import TpsInspector
from pantau.detectors.revision import State
from pantau.schemas import DeadLetter, InvalidSubmission, normalize, parse_envelope

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

REVISION_TABLE = "revisions"

_write_partition: contextvars.ContextVar[int | None] = contextvars.ContextVar("pantau_write_partition", default=None)


@contextmanager
def writing_for_partition(partition: int) -> Iterator[None]:
    token = _write_partition.set(partition)
    try:
        yield
    finally:
        _write_partition.reset(token)


class SourcePartitionedTable(faust.Table):
    """A table whose changelog partition is the source partition of the submission being written.

    Faust takes it from the "current event", which a batched agent does not have per key; the
    agent names it explicitly with :func:`writing_for_partition`.
    """

    def partition_for_key(self, key: Any) -> int | None:
        partition = _write_partition.get()
        return partition if partition is not None else super().partition_for_key(key)


class BatchStates(MutableMapping[str, State]):
    """The revision table seen through a batch's pending writes (read-your-writes within a batch)."""

    def __init__(self, table: faust.Table):
        self.table = table
        self.pending: dict[str, tuple[State, int]] = {}
        self.partition = 0

    def __getitem__(self, key: str) -> State:
        if key in self.pending:
            return self.pending[key][0]
        value = self.table.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, state: State) -> None:
        self.pending[key] = (state, self.partition)

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("revision states are never deleted")

    def __iter__(self):
        raise NotImplementedError("revision states are looked up by key")

    def __len__(self) -> int:
        raise NotImplementedError("revision states are looked up by key")

    def flush(self) -> None:
        for key, (state, partition) in self.pending.items():
            with writing_for_partition(partition):
                self.table[key] = state
        self.pending.clear()


class Pipeline:
    """Everything one worker app does with a batch of submissions."""

    def __init__(self, app: faust.App, settings: Settings):
        self.app = app
        self.settings = settings
        self.metrics = Metrics()
        self.submissions = app.topic(settings.topic_submissions, key_serializer="raw", value_serializer="raw",
                                     partitions=settings.partitions)  # fmt: skip
        self.alerts = app.topic(settings.topic_alerts, key_serializer="raw", value_serializer="raw",
                                partitions=settings.partitions)  # fmt: skip
        self.deadletter = app.topic(settings.topic_deadletter, key_serializer="raw", value_serializer="raw",
                                    partitions=settings.partitions)  # fmt: skip
        self.verdicts = app.topic(settings.topic_verdicts, key_serializer="raw", value_serializer="raw",
                                  partitions=settings.partitions)  # fmt: skip
        self.table = app.tables.add(
            SourcePartitionedTable(app, name=REVISION_TABLE, default=None, beacon=app.tables.beacon,
                                   partitions=settings.partitions, help="Revision state per kode_tps:jenis")
        )
        self.states = BatchStates(self.table)
        self.inspector = TpsInspector(settings.capacity, states=self.states)
        self.processed_offsets: dict[int, int] = {}

    async def process(self, events: list[faust.EventT]) -> None:
        """Inspect a batch; publish its alerts and dead letters; then store its states."""
        sends = []
        published = []
        for event in events:
            message = event.message
            started = time.perf_counter()
            try:
                envelope = parse_envelope(event.value)
                self.states.partition = message.partition
                inspection = self.inspector.inspect(normalize(envelope))
            except InvalidSubmission as exc:
                sends.append(await self._dead_letter(message, exc.code, exc.reason))
                continue
            except Exception as exc:  # a detector bug must not stop the stream: keep the message, say why
                log.exception("inspecting %s[%s]@%s failed", message.topic, message.partition, message.offset)
                sends.append(await self._dead_letter(message, "error", f"{type(exc).__name__}: {exc}"))
                continue
            self.inspector.commit(inspection)
            for alert in inspection.alerts:
                sends.append(await self.alerts.send(key=alert.region.encode(), value=alert.to_json()))
                published.append((alert, envelope.received_at))
            self.metrics.submissions.labels("processed").inc()
            self.metrics.processing.observe(time.perf_counter() - started)
        await asyncio.gather(*sends)  # a failed alert send raises: the batch is not committed, it is redone
        now = datetime.now(timezone.utc)
        for alert, received_at in published:
            self.metrics.alerts.labels(alert.detector, alert.severity).inc()
            if received_at is not None:
                self.metrics.alert_latency.observe(max((now - received_at).total_seconds(), 0.0))
        self.states.flush()
        for event in events:
            self.processed_offsets[event.message.partition] = event.message.offset
        self.metrics.batch_size.observe(len(events))

    async def _dead_letter(self, message: Any, code: str, reason: str) -> Any:
        """Send the dead letter; returns an awaitable that completes once the broker has it."""
        original = message.value or b""
        letter = DeadLetter(
            original=base64.b64encode(original).decode(),
            key=base64.b64encode(message.key).decode() if message.key is not None else None,
            code=code, reason=reason, topic=message.topic, partition=message.partition, offset=message.offset,
            failed_at=datetime.now(timezone.utc),
        )  # fmt: skip
        self.metrics.submissions.labels("deadlettered").inc()
        self.metrics.deadletters.labels(code).inc()
        value = letter.model_dump_json().encode()
        if len(value) > self.settings.max_message_bytes:
            # Too big for the dead-letter topic even though the broker accepted the original: keep
            # its head, its size and digest, so it can be found at its source offset.
            head = original[:65536]
            value = letter.model_copy(update={
                "original": base64.b64encode(head).decode(),
                "reason": f"{reason} [original truncated to {len(head)} of {len(original)} bytes, "
                          f"sha256 {hashlib.sha256(original).hexdigest()}]",
            }).model_dump_json().encode()  # fmt: skip
        return await self.deadletter.send(key=message.key, value=value)

    def update_lag(self) -> None:
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic != self.settings.topic_submissions:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = self.processed_offsets.get(tp.partition, -1) + 1
            self.metrics.consumer_lag.labels(str(tp.partition)).set(max(highwater - done, 0))


def ensure_topics(settings: Settings) -> list[str]:
    """Create the topics pantau uses where missing (idempotent); returns those created."""
    from .broker import create_topics

    return create_topics(settings.bootstrap, settings.topics, replication_factor=settings.replication,
                         configs=settings.topic_configs)  # fmt: skip


def create_app(settings: Settings | None = None, **faust_options: Any) -> faust.App:
    """A pantau worker app. ``faust_options`` override Faust settings (tests, benchmarks)."""
    settings = settings or Settings.from_env()
    options: dict[str, Any] = {
        "broker": settings.broker_url,
        "store": settings.store,
        "datadir": str(settings.data_dir),
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": settings.heartbeat_interval,
        "broker_commit_interval": settings.commit_interval,
        "producer_max_batch_size": settings.producer_batch_bytes,
        "producer_max_request_size": settings.max_message_bytes,
        "topic_replication_factor": settings.replication,
        "topic_partitions": settings.partitions,
        "consumer_auto_offset_reset": "earliest",
        "autodiscover": False,
        **faust_options,
    }
    app = faust.App(settings.app_id, **options)
    pipeline = Pipeline(app, settings)
    app.pantau = pipeline  # type: ignore[attr-defined]

    @app.agent(pipeline.submissions, name="pantau.inspect")
    async def inspect(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            await pipeline.process(list(events))

    @app.timer(interval=2.0)
    async def report_lag() -> None:
        pipeline.update_lag()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        crashed = [f"{agent.name}: {agent.crash_reason!r}" for agent in app.agents.values() if agent.crash_reason]
        assigned = len(app.consumer.assignment()) if app.consumer else 0
        ready = app.rebalancing is False and app.consumer is not None and not crashed
        status = "crashed" if crashed else "ok" if ready else "starting"
        body = {"status": status, "assigned_partitions": assigned, "app": settings.app_id, "crashed": crashed}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(pipeline.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app

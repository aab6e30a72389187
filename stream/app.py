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
import functools
import base64
import hashlib
import logging
import time
from collections.abc import MutableMapping
from datetime import datetime, timezone
from typing import Any

import faust
import mode
import orjson
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pantau.detectors.inspector import TpsInspector
from pantau.detectors.revision import State
from pantau.schemas import DeadLetter, InvalidSubmission, normalize, parse_envelope

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

REVISION_TABLE = "revisions"

class Worker(faust.Worker):
    """Faust's worker without its terminal spinner.

    At ``--loglevel warn`` and above, the spinner sets the root logger to DEBUG; building the debug
    records Faust then emits costs ~45 µs per submission (bench/bench_stream.py).
    """

    def _setup_spinner_handler(self, logger: logging.Logger, level: int) -> None:
        return None


def use_fetch_max_wait(milliseconds: int) -> None:
    """Set how long a fetch may wait for data on the broker.

    faust-streaming hardcodes 1500 ms in its consumer factory. Apache Kafka answers a fetch as soon
    as data exists, but the embedded Tansu broker holds it for much of that wait, which adds ~1 s of
    receipt → alert latency; the demo and the tests use 10 ms. Applies to every Faust worker consumer
    in this process (there is no per-app hook).
    """
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    create = getattr(thread._create_worker_consumer, "__wrapped__", thread._create_worker_consumer)

    @functools.wraps(create)
    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = milliseconds  # read when the consumer starts its fetcher
        return consumer

    thread._create_worker_consumer = create_worker_consumer


class ChangelogProducer(mode.Service):
    """The producer of the revision table's changelog, separate from the one for alerts.

    On the embedded Tansu broker the changelog needs one record per produce batch (Tansu reports a
    wrong end offset after a batch of several, and Faust's table recovery would stop early); a
    producer of its own keeps that cost off the alerts. ``max_batch_bytes`` is
    ``PANTAU_CHANGELOG_BATCH_BYTES``.
    """

    def __init__(self, bootstrap: str, max_batch_bytes: int, max_request_bytes: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.options = {"bootstrap_servers": bootstrap.split(","), "max_batch_size": max_batch_bytes,
                        "max_request_size": max_request_bytes, "acks": "all", "linger_ms": 0}  # fmt: skip
        self.producer: Any = None

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(**self.options)
        await self.producer.start()

    async def on_stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send(self, topic: str, key: bytes, value: bytes, partition: int) -> Any:
        return await self.producer.send(topic, value, key=key, partition=partition)


class BatchStates(MutableMapping[str, State]):
    """The revision table seen through a batch's pending writes (read-your-writes within a batch).

    :meth:`flush` stores the states that changed and writes them to the table's changelog, on the
    partition of the submission they came from (the table is co-partitioned with the submissions
    topic, so a rebalanced worker recovers exactly the states of its partitions).
    """

    def __init__(self, table: faust.Table):
        self.table = table
        self.pending: dict[str, tuple[State, int]] = {}
        self.partition = 0

    def __getitem__(self, key: str) -> State:
        if key in self.pending:
            return self.pending[key][0]
        return self.table.data[key]

    def __setitem__(self, key: str, state: State) -> None:
        self.pending[key] = (state, self.partition)

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("revision states are never deleted")

    def __iter__(self):
        raise NotImplementedError("revision states are looked up by key")

    def __len__(self) -> int:
        raise NotImplementedError("revision states are looked up by key")

    async def flush(self, producer: ChangelogProducer) -> None:
        """Store and log the changed states; return once the broker has them."""
        data = self.table.data
        topic = self.table.changelog_topic.get_topic_name()
        sends = []
        for key, (state, partition) in self.pending.items():
            if data.get(key) == state:  # an identical resubmission changes nothing
                continue
            data[key] = state
            # encoded as Faust's json codec would, so that recovery reads it like any table write
            sends.append(await producer.send(topic, orjson.dumps(key), orjson.dumps(state), partition))
        self.pending.clear()
        for metadata in await asyncio.gather(*sends):
            data.set_persisted_offset(TP(metadata.topic, metadata.partition), metadata.offset)


class Pipeline:
    """Everything one worker app does with a batch of submissions."""

    def __init__(self, app: faust.App, settings: Settings):
        self.app = app
        self.settings = settings
        self.metrics = Metrics()
        self.submissions = app.topic(settings.topic_submissions, key_serializer="raw", value_serializer="raw",
                                     partitions=settings.partitions)  # fmt: skip
        self.table = app.Table(REVISION_TABLE, default=None, partitions=settings.partitions,
                               help="Revision state per kode_tps:jenis")  # fmt: skip
        self.states = BatchStates(self.table)
        self.changelog = ChangelogProducer(settings.bootstrap, settings.changelog_batch_bytes, settings.max_message_bytes)
        app.add_dependency(self.changelog)
        self.inspector = TpsInspector(settings.capacity, states=self.states)
        self.processed_offsets: dict[int, int] = {}

    async def process(self, events: list[faust.EventT]) -> None:
        """Inspect a batch; publish its alerts and dead letters; then store its states.

        Sends go straight to the producer: Faust's topic-send machinery (futures, buffer, sensors)
        costs several times the detectors' own ~45 µs per submission (bench/bench_stream.py).
        """
        producer = self.app.producer
        sends = []
        published = []
        processed = 0
        for event in events:
            message = event.message
            started = time.perf_counter()
            try:
                envelope = parse_envelope(message.value)
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
            self.metrics.processing.observe(time.perf_counter() - started)
            processed += 1
            for alert in inspection.alerts:
                value = alert.to_json()
                sends.append(await producer.send(self.settings.topic_alerts, alert.region.encode(), value, None, None, None))
                published.append((alert, envelope.received_at))
        self.metrics.submissions.labels("processed").inc(processed)
        await asyncio.gather(*sends)  # a failed alert send raises: the batch is not committed, it is redone
        now = datetime.now(timezone.utc)
        for alert, received_at in published:
            self.metrics.alerts.labels(alert.detector, alert.severity).inc()
            if received_at is not None:
                self.metrics.alert_latency.observe(max((now - received_at).total_seconds(), 0.0))
        await self.states.flush(self.changelog)
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
        return await self.app.producer.send(self.settings.topic_deadletter, message.key, value, None, None, None)

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
        "Worker": Worker,
        **faust_options,
    }
    use_fetch_max_wait(settings.fetch_max_wait_ms)
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

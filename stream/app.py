"""The Faust application: topics, the state tables, the submissions handler, the assessing agents, web views.

:func:`create_app` builds a worker app from :class:`~pantau.stream.settings.Settings`. Submissions
reach :meth:`Pipeline.receive` a fetched batch at a time, below Faust's per-event stream
(:mod:`.batching`: Faust's per-event cost exceeds a form's checks), which runs
:class:`~pantau.detectors.inspector.TpsInspector` on each — the very code the offline replay runs —
and publishes alerts and dead letters. Its :class:`~pantau.detectors.monitor.RegionalMonitor`
keeps the sums of the kecamatan and kabupaten/kota of its partitions (submissions are keyed by
kabupaten/kota) and sends the changed ones to ``pantau.regional``. That topic has one partition: the
worker holding it runs the :class:`~pantau.detectors.assessor.RegionalAssessor`, which sees every
region, merges provinces, and every ``PANTAU_ASSESS_INTERVAL`` seconds publishes the regional alerts.

An agent consumes the desk's verdicts from ``pantau.verdicts``, keyed by kabupaten/kota like the
submissions and co-partitioned with them, into a :class:`~pantau.detectors.suppression.Suppressions`
table: the inspecting agent does not publish a TPS alert whose id the desk has called a false alarm
(``pantau_alerts_suppressed_total``). Regional alerts are not suppressed: the assessor publishes them
from the regional topic's partition and holds no verdicts.

Delivery is at-least-once (the embedded broker has no transactions): a submission's alerts and dead
letters are acknowledged by the broker *before* its region and revision states are written to the
tables (in the background, once per ``PANTAU_FLUSH_INTERVAL``) and its offset committed (a verdict
batch's dead letters likewise before its suppression states). A crash in between makes the restarted
worker consume the submission again, with tables that may
already hold it; processing is idempotent by source position (:meth:`Pipeline.process`): every revision
and region state carries the offset of the last submission that changed it, and what a state already
holds is not applied to it again. Alert ids are deterministic, so what is redone yields the same alerts
again, never a second, distinct one. The suppression table needs no position: the verdict in force is
the latest by (decided_at, verdict_id), so a verdict learned twice changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import hashlib
import logging
import math
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import faust
import faust.stores.memory
import mode
import orjson
from faust.types import TP, Message
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from pantau.detectors.assessor import LOOK_GROWTH, SWEEP_GROWTH, RegionalAssessor
from pantau.detectors.inspector import TpsInspector
from pantau.detectors.monitor import RegionalMonitor
from pantau.detectors.regional import RegionSums
from pantau.detectors.revision import State, state_key
from pantau.detectors.suppression import Suppressions
from pantau.schemas import DeadLetter, InvalidSubmission, normalize, parse_envelope, parse_verdict, verdict_key

from .backoff import quiet_repeated_broker_errors, use_reconnect_backoff
from .batching import BatchingApp, deliver_batches
from .metrics import Metrics, StallWatch, expected_tps
from .rewind import use_full_rewind
from .settings import Settings

_ABSENT = object()
log = logging.getLogger(__name__)

REVISION_TABLE = "revisions"
REGION_TABLE = "regions"
ASSESSOR_SUMS_TABLE = "assessor-sums"
ASSESSOR_EPISODES_TABLE = "assessor-episodes"
SUPPRESSION_TABLE = "suppressions"

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

    def __init__(self, bootstrap: str, max_batch_bytes: int, max_request_bytes: int, security: dict[str, Any] | None = None,
                 **kwargs: Any):  # fmt: skip
        super().__init__(**kwargs)
        self.options = {"bootstrap_servers": bootstrap.split(","), "max_batch_size": max_batch_bytes,
                        "max_request_size": max_request_bytes, "acks": "all", "linger_ms": 0, **(security or {})}  # fmt: skip
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
    """A table seen through the writes not yet stored in it (read-your-writes across batches).

    Writes collect in ``pending``; :meth:`take` hands them over to a store (still read through while it
    runs, :meth:`store`), which writes them to the table's changelog, on the partition of the submission
    they came from (the tables are co-partitioned with the submissions topic, so a rebalanced worker
    recovers exactly the states of its partitions), and once the broker has them, into the table.

    With ``positions``, each state is stored with its *source position*, the offset (on its partition)
    of the last submission that changed it: ``{"o": offset, "s": state}``. Reading returns the bare state
    (the detectors never see offsets); :meth:`position` returns the offset. A worker redoing the
    submissions it consumed but did not commit before a crash skips what a state already holds
    (:meth:`Pipeline.process`). With ``keep_unchanged``, writing a state equal to the current one
    changes nothing, not even the position: an identical resubmission does not move it (so the position
    does not depend on where batches begin), and redoing one is harmless, it changes nothing either.
    """

    def __init__(self, table: faust.Table, positions: bool = False, keep_unchanged: bool = False):
        self.table = table
        self.positions = positions
        self.keep_unchanged = keep_unchanged
        self.pending: dict[str, tuple[State, int, int | None]] = {}
        self.storing: dict[str, tuple[State, int, int | None]] = {}  # taken, until the table has them
        self.partition = 0
        self.offset: int | None = None  # the source offset written with the states set (``positions``)
        self._values: Any = None  # :meth:`_table_values`

    def _stored(self, key: str) -> tuple[Any, int | None] | None:
        """``(state, position)`` as the table holds it; None when it holds none."""
        value = self._table_values().get(key, _ABSENT)
        if value is _ABSENT:
            return None
        if self.positions and type(value) is dict and len(value) == 2 and "o" in value and "s" in value:
            return value["s"], value["o"]
        return value, None  # no position: written without (or before) them

    def _table_values(self) -> Mapping[str, Any]:
        """The table's values: a memory store's own dict, looked up several times per submission (a miss
        through the store's Mapping interface raises and catches a KeyError)."""
        if self._values is None:
            store = self.table.data
            self._values = store.data if isinstance(store, faust.stores.memory.Store) else store
        return self._values

    def _unstored(self, key: str) -> tuple[State, int, int | None] | None:
        entry = self.pending.get(key)
        return self.storing.get(key) if entry is None else entry

    def __getitem__(self, key: str) -> State:
        entry = self._unstored(key) or self._stored(key)
        if entry is None:
            raise KeyError(key)
        return entry[0]

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._unstored(key) or self._stored(key)
        return default if entry is None else entry[0]

    def position(self, key: str) -> int | None:
        """The source offset of the last submission that changed ``key``'s state, if known."""
        entry = self._unstored(key)
        if entry is not None:
            return entry[2]
        stored = self._stored(key)
        return None if stored is None else stored[1]

    def __setitem__(self, key: str, state: State) -> None:
        if self.keep_unchanged and self.get(key) == state:
            return
        self.pending[key] = (state, self.partition, self.offset)

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("revision states are never deleted")

    def __iter__(self):
        raise NotImplementedError("revision states are looked up by key")

    def __len__(self) -> int:
        raise NotImplementedError("revision states are looked up by key")

    def take(self) -> dict[str, tuple[State, int, int | None]]:
        """The writes since the last take, for :meth:`store`; read through until it has stored them."""
        taken, self.pending = self.pending, {}
        self.storing = taken
        return taken

    async def store(self, taken: dict[str, tuple[State, int, int | None]], producer: ChangelogProducer) -> None:
        """Log the states taken, then, once the broker has all of them, store them in the table (a failed
        send leaves the table as it was)."""
        data, values = self.table.data, self._table_values()
        topic = self.table.changelog_topic.get_topic_name()
        writes, sends = [], []
        for key, (state, partition, offset) in taken.items():
            value = {"o": offset, "s": state} if self.positions and offset is not None else state
            if values.get(key) == value:  # an identical resubmission changes nothing
                continue
            writes.append((key, value))
            # encoded as Faust's json codec would, so that recovery reads it like any table write
            sends.append(await producer.send(topic, orjson.dumps(key), orjson.dumps(value), partition))
        persisted = await asyncio.gather(*sends)
        for key, value in writes:
            data[key] = value
        for metadata in persisted:
            data.set_persisted_offset(TP(metadata.topic, metadata.partition), metadata.offset)
        if self.storing is taken:
            self.storing = {}

    async def flush(self, producer: ChangelogProducer) -> None:
        """Store every write so far; return once the broker and the table have them."""
        await self.store(self.take(), producer)

    def forget(self, storing: bool = False) -> None:
        """Drop the writes not yet taken (and, with ``storing``, those taken: their store failed)."""
        self.pending = {}
        if storing:
            self.storing = {}


@dataclass
class Staged:
    """What one store writes: the submissions it makes done, the sends they made, the region sums for
    the assessor, and the region and revision states taken."""

    messages: list[Message]
    sends: list[asyncio.Future]
    sums: list[tuple[bytes, bytes]]
    region_states: dict[str, Any]
    states: dict[str, Any]


class Pipeline:
    """Everything one worker app does with a batch of submissions."""

    def __init__(self, app: faust.App, settings: Settings):
        self.app = app
        self.settings = settings
        self.metrics = Metrics(expected=expected_tps(settings.tps_expected_file or None))
        self.submissions = app.topic(settings.topic_submissions, key_serializer="raw", value_serializer="raw",
                                     partitions=settings.partitions)  # fmt: skip
        self.table = app.Table(REVISION_TABLE, default=None, partitions=settings.partitions,
                               help="Revision state per kode_tps:jenis")  # fmt: skip
        self.states = BatchStates(self.table, positions=True, keep_unchanged=True)
        self.region_table = app.Table(REGION_TABLE, default=None, partitions=settings.partitions,
                                      help="Region sums and peer histograms per kecamatan/kabkota:jenis")  # fmt: skip
        self.region_states = BatchStates(self.region_table, positions=True)
        self.monitor = RegionalMonitor(self.region_states, far=settings.peer_far,
                                       holds=lambda key: self._holds(self.region_states, key))  # fmt: skip
        self.changelog = ChangelogProducer(settings.bootstrap, settings.changelog_batch_bytes, settings.max_message_bytes,
                                           security=settings.aiokafka_options())  # fmt: skip
        app.add_dependency(self.changelog)
        self.inspector = TpsInspector(settings.capacity, states=self.states, monitor=self.monitor)
        self.verdicts = app.topic(settings.topic_verdicts, key_serializer="raw", value_serializer="raw",
                                  partitions=settings.partitions)  # fmt: skip
        self.suppression_table = app.Table(SUPPRESSION_TABLE, default=None, partitions=settings.partitions,
                                           help="The desk's verdict in force per alert id")  # fmt: skip
        self.suppression_states = BatchStates(self.suppression_table)
        self.suppressions = Suppressions(self.suppression_states)
        self.processed_offsets: dict[int, int] = {}
        self.stalls = StallWatch(after=settings.stall_seconds)
        #: Submissions partitions held, behind and not moving for ``PANTAU_STALL_SECONDS`` (/health: 503 "stalled").
        self.stalled: list[int] = []
        self.kabkota_partition: dict[str, int] = {}
        #: (partition, offset) of the submission being inspected; offset None: not comparable (not keyed by kab/kota)
        self.position: tuple[int, int | None] = (0, None)
        #: Per submissions partition held, the stored source positions trusted: those below this offset.
        self.trusted: dict[int, float] = {}
        #: Submissions partitions held that have no committed offset yet: stored and committed after each
        #: batch until they have one (:meth:`trust_positions`).
        self.uncommitted: set[int] = set()
        #: Per submissions partition held, where the group resumed it at the last rebalance: its committed
        #: offset, or the log's start if it had none (what is behind until this worker processes one).
        self.resumed_at: dict[int, int] = {}
        #: Per region key changed since the last flush, the position of the last submission that changed it.
        self.region_positions: dict[str, tuple[int, int | None]] = {}
        #: Submissions processed and not yet staged for a store, and the sends (alerts, dead letters) of their processing.
        self.unstored: list[Message] = []
        self.sends: list[asyncio.Future] = []
        self.flushed_at = time.monotonic()
        #: One batch or staging at a time: the handler, the flush timer and the store run side by side.
        self.lock = asyncio.Lock()
        #: The store running in the background (:meth:`store_soon`), one at a time.
        self.storing: asyncio.Task | None = None
        #: Counts rewinds: a batch fetched before one is dropped, it is read again (:meth:`rewind`).
        self.generation = 0

    async def receive(self, messages: list[Message]) -> None:
        """The submissions' batch handler (:mod:`.batching`): inspect a fetched batch and publish its alerts
        at once; store the states and acknowledge the submissions in the background once
        ``PANTAU_FLUSH_INTERVAL`` has passed since the last store (:meth:`flush_due` also stores when the
        worker idles or rebalances), and at once while a partition of the batch has no committed offset
        (:meth:`trust_positions`). Once ``PANTAU_FLUSH_MAX`` submissions wait, the next batch waits for
        the store.

        Storing the states of several batches at once writes each region's state once for all of them:
        a kabupaten's sums and peers change with every one of its forms; storing in the background keeps
        the worker inspecting while the broker takes them. A submission is acknowledged (and can be
        committed) only once its states are stored, so what a crash loses is redone from the committed
        offsets, as it always was. Anything that fails on the way (a send, a store) is retried:
        :meth:`rewind`.
        """
        generation = self.generation
        async with self.lock:
            if generation != self.generation:
                return  # fetched before a rewind: read again from where it sent the partitions
            try:
                await self.process(messages)
            except Exception:
                log.exception("a batch of %d submissions failed; they are redone", len(messages))
                await self.rewind()
                return
        if time.monotonic() - self.flushed_at >= self.settings.flush_interval or not self.uncommitted.isdisjoint(
                m.partition for m in messages):  # fmt: skip
            self.store_soon()
        while len(self.unstored) >= self.settings.flush_max:
            await self.store_soon()

    async def flush_due(self) -> None:
        """Store what was processed if the interval has passed, or at once if the consumer has stopped its
        flow (a rebalance waits for every submission given to the handler to be acknowledged)."""
        if self.unstored and (not self.app.consumer.flow_active
                              or time.monotonic() - self.flushed_at >= self.settings.flush_interval):  # fmt: skip
            self.store_soon()

    def store_soon(self) -> asyncio.Task:
        """The store running now, or a new one of what was processed so far (:meth:`store`)."""
        if self.storing is None or self.storing.done():
            self.storing = asyncio.ensure_future(self.store())
        return self.storing

    async def store(self) -> None:
        """:meth:`flush`, acknowledge the submissions it stored and commit their offsets at once (not at
        Faust's next commit): what a crash makes the group redo is then only what was not stored. A
        failure forgets what was staged and everything processed since, and reads it again (:meth:`rewind`)."""
        async with self.lock:
            staged = self.stage()
        try:
            await self.write(staged)
        except Exception:
            log.exception("storing the states of %d submissions failed; they are redone", len(staged.messages))
            async with self.lock:
                await self.rewind(staged)
            return
        consumer = self.app.consumer
        consumer.done(staged.messages)
        try:
            await consumer.commit()
        except Exception:  # stored and acknowledged: Faust's commit timer commits them once it can
            log.warning("committing the offsets of %d stored submissions failed; retried on Faust's commit timer",
                        len(staged.messages), exc_info=True)  # fmt: skip
            return
        self.uncommitted.difference_update(message.partition for message in staged.messages)

    async def process(self, messages: list[Message]) -> None:
        """Inspect a batch; publish its alerts and dead letters (sent, not yet awaited); its states wait
        for :meth:`flush`.

        Sends go straight to the producer: Faust's topic-send machinery (futures, buffer, sensors)
        costs several times the detectors' own ~45 µs per submission (bench/bench_stream.py).

        Idempotent by source position. A worker killed after storing a batch's states but before its
        offsets were committed is restarted from the committed offsets, and redoes submissions its
        recovered states already hold. Each state carries the offset of the last submission that changed
        it (:class:`BatchStates`; a key's submissions all come from one partition, in order), so a
        redone submission is recognised: when its revision state holds it, it is skipped outright
        (``pantau_submissions_total{outcome="redelivered"}``; its alerts were published before the state
        was stored); otherwise it is inspected against the revision state that does not hold it yet,
        and its contribution is added only to the region sums and peer histograms that do not hold it
        either (:class:`~pantau.detectors.monitor.RegionalMonitor` ``holds``). The region states are
        stored before the revision states, so a crash between the two leaves the region states ahead,
        which this skips, never behind.
        """
        producer = self.app.producer
        sends = self.sends
        suppressed = []
        processed = redelivered = 0
        first_seen: collections.Counter[tuple[str, str]] = collections.Counter()  # counted once per label, not per TPS
        self.unstored.extend(messages)  # from here on, a failure redoes them too (:meth:`rewind`)
        for message in messages:
            started = time.perf_counter()
            try:
                envelope = parse_envelope(message.value)
                tally = normalize(envelope)
                self.kabkota_partition[envelope.kode_tps[:4]] = message.partition
                # A submission not keyed by its kab/kota code may share a TPS with another partition, whose
                # offsets are not comparable: its states are stored without a position.
                keyed = message.key == envelope.kode_tps[:4].encode()
                self.position = (message.partition, message.offset if keyed else None)
                if self._holds(self.states, state_key(tally)):
                    redelivered += 1
                    continue
                self.states.partition, self.states.offset = self.position
                inspection = self.inspector.inspect(tally)
            except InvalidSubmission as exc:
                sends.append(await self._dead_letter(message, exc.code, exc.reason, self.metrics.submissions))
                continue
            except Exception as exc:  # a detector bug must not stop the stream: keep the message, say why
                log.exception("inspecting %s[%s]@%s failed", message.topic, message.partition, message.offset)
                sends.append(await self._dead_letter(message, "error", f"{type(exc).__name__}: {exc}", self.metrics.submissions))
                continue
            for key in self.inspector.commit(inspection):
                self.region_positions[key] = self.position
            self.metrics.processing.observe(time.perf_counter() - started)
            if inspection.first:
                first_seen[envelope.kode_tps[:2], envelope.jenis] += 1
            processed += 1
            for alert in inspection.alerts:
                if not self.suppressions.allows(alert):
                    suppressed.append(alert)
                    continue
                sent = await producer.send(self.settings.topic_alerts, alert.region.encode(), alert.to_json(), None, None, None)
                sent.add_done_callback(functools.partial(self._published, alert, envelope.received_at))
                sends.append(sent)
        self.metrics.submissions.labels("processed").inc(processed)
        for labels, count in first_seen.items():
            self.metrics.tps_first_seen.labels(*labels).inc(count)
        if redelivered:
            self.metrics.submissions.labels("redelivered").inc(redelivered)
        for alert in suppressed:
            self.metrics.suppressed.labels(alert.detector).inc()
        self.metrics.batch_size.observe(len(messages))

    def stage(self) -> Staged:
        """Take what was processed since the last stage for one store: its submissions and sends, the region
        sums it changed (serialized now: the sums go on changing), and the states it wrote."""
        sums = [(key.encode(), orjson.dumps(state.to_state())) for key, state in self._changed_regions().items()]
        staged = Staged(self.unstored, self.sends, sums, self.region_states.take(), self.states.take())
        self.unstored, self.sends = [], []
        self.flushed_at = time.monotonic()
        return staged

    async def write(self, staged: Staged) -> None:
        """Send the staged region sums to the assessor; once the broker has every alert, dead letter and sum
        of the staged submissions, store their states."""
        producer = self.app.producer
        sends = staged.sends + [await producer.send(self.settings.topic_regional, key, value, None, None, None)
                                for key, value in staged.sums]  # fmt: skip
        await asyncio.gather(*sends)  # a failed send raises: nothing is stored or acknowledged, all is redone
        # Region states first: after a crash between the two they hold submissions whose revision states
        # do not, and a redone submission then skips them (never adds itself twice).
        await self.region_states.store(staged.region_states, self.changelog)
        await self.states.store(staged.states, self.changelog)
        for message in staged.messages:
            self.processed_offsets[message.partition] = message.offset

    async def flush(self) -> list[Message]:
        """Stage and store what was processed so far, here and now (no acknowledgement); return the
        submissions now done."""
        async with self.lock:
            staged = self.stage()
        await self.write(staged)
        return staged.messages

    async def rewind(self, failed: Staged | None = None) -> None:
        """Under :attr:`lock`: forget what was processed and not stored (and the ``failed`` store's stage),
        and read it again: each submissions partition goes back to its first submission not yet done, a
        batch fetched before this is dropped. The redo is idempotent (:meth:`process`); its alerts have the
        same ids. Waits a second first, so that a broker that failed a send has time to come back."""
        self.generation += 1
        undone = [*(failed.messages if failed else ()), *self.unstored]
        for sent in [*(failed.sends if failed else ()), *self.sends]:  # left to finish or fail: it changes nothing now
            sent.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.unstored, self.sends = [], []
        self.monitor.forget()
        self.region_positions.clear()
        for states in (self.states, self.region_states):
            states.forget(storing=failed is not None)  # a store still running keeps its stage: it is done
        first: dict[TP, int] = {}
        for message in undone:
            first[message.tp] = min(first.get(message.tp, message.offset), message.offset)
        await asyncio.sleep(1.0)
        held = self.app.consumer.assignment()
        for tp, offset in first.items():
            if tp in held:  # one no longer held is redone by its new owner, from the committed offset
                await self.app.consumer.seek(tp, offset)

    def _published(self, alert: Any, received_at: datetime | None, sent: asyncio.Future) -> None:
        """Count an alert once the broker has it, with its receipt → alert latency."""
        if sent.cancelled() or sent.exception() is not None:
            return
        self.metrics.alerts.labels(alert.detector, alert.severity, alert.region[:2]).inc()
        if received_at is not None and received_at.utcoffset() is not None:  # no offset: no comparable time
            self.metrics.alert_latency.observe(max((datetime.now(timezone.utc) - received_at).total_seconds(), 0.0))

    def _holds(self, states: BatchStates, key: str) -> bool:
        """Whether ``key``'s state already holds the submission being inspected (:attr:`position`)."""
        partition, offset = self.position
        if offset is None:
            return False
        at = states.position(key)
        return at is not None and offset <= at < self.trusted.get(partition, -1)

    async def trust_positions(self) -> None:
        """After a rebalance, before the streams resume: which stored source positions to trust.

        A position means "this state holds the submissions up to offset o" only on the log it was read
        from. Where the group has a committed offset for a partition it is that log (Faust is about to
        resume from that offset). Where it has none -- a new group, or a broker that lost its data and
        came back with new, empty topics while this worker kept its tables in memory
        (tests/test_outage.py) -- only positions below the partition's end offset now can be real; the
        rest are ignored, so submissions re-published at offsets already seen are inspected, never
        skipped. Tansu's ListOffsets can report too small an end offset (stream/broker.py), and a position
        wrongly distrusted makes a redone submission count twice in the region states that already hold
        it; so a partition without a committed offset is stored and committed after its first batch, not
        a flush interval later (:meth:`receive`), which leaves only a crash within that first batch to redo
        without trust (the crash harness, killed before the group's first commit, had doubled kecamatan
        grids when the first commit waited for the interval).
        """
        consumer = self.app.consumer
        held = [tp for tp in consumer.assignment() if tp.topic == self.settings.topic_submissions]
        trusted: dict[int, float] = {}
        resumed_at: dict[int, int] = {}
        try:
            committed = {(tp.topic, tp.partition): offset for tp, offset in (await consumer.seek_to_committed()).items()}
            fresh = [tp for tp in held if not committed.get((tp.topic, tp.partition))]
            ends = {tp.partition: offset for tp, offset in (await consumer.highwaters(*fresh)).items()} if fresh else {}
            starts = {tp.partition: offset for tp, offset in (await consumer.earliest_offsets(*fresh)).items()} if fresh else {}
            for tp in held:
                offset = committed.get((tp.topic, tp.partition))
                trusted[tp.partition] = math.inf if offset else ends.get(tp.partition, 0)
                resumed_at[tp.partition] = offset or starts.get(tp.partition, 0)
        except Exception:  # not knowing, trust nothing: redone submissions are inspected again
            log.warning("committed and end offsets unknown after the rebalance: stored source positions not trusted",
                        exc_info=True)  # fmt: skip
            trusted, resumed_at = {}, {}
        self.trusted, self.resumed_at = trusted, resumed_at
        self.uncommitted = {tp.partition for tp in held if trusted.get(tp.partition) != math.inf}

    async def learn(self, events: list[faust.EventT]) -> None:
        """Take a batch of desk verdicts into the suppression table; dead-letter the invalid ones."""
        sends = []
        outcomes: dict[str, int] = {"applied": 0, "outdated": 0}
        for event in events:
            message = event.message
            try:
                verdict = parse_verdict(message.value or b"")
            except InvalidSubmission as exc:
                sends.append(await self._dead_letter(message, exc.code, exc.reason, self.metrics.verdicts))
                continue
            if message.key != verdict_key(verdict):
                # On another partition than its TPS's submissions, the worker inspecting that TPS would never see it.
                reason = f"key {message.key!r} is not the kab/kota code of the verdict's TPS or region, {verdict_key(verdict)!r}"
                sends.append(await self._dead_letter(message, "key", reason, self.metrics.verdicts))
                continue
            self.suppression_states.partition = message.partition
            outcomes["applied" if self.suppressions.learn(verdict) else "outdated"] += 1
        await asyncio.gather(*sends)
        await self.suppression_states.flush(self.changelog)
        for outcome, count in outcomes.items():
            self.metrics.verdicts.labels(outcome).inc(count)

    def _changed_regions(self) -> dict[str, RegionSums]:
        """The region sums changed since the last stage, their states written on their kabupaten's partition."""
        staged = {}
        for key in sorted(self.monitor.changed):
            position = self.region_positions.pop(key, None)
            if position is None:  # not changed by a submission since the last stage (not expected): no position
                position = (self.kabkota_partition[key.split(":")[1][:4]], None)
            self.region_states.partition, self.region_states.offset = position
            staged.update(self.monitor.flush_one(key))
        return staged

    async def _dead_letter(self, message: Any, code: str, reason: str, outcomes: Counter) -> Any:
        """Send the dead letter, counted in ``outcomes``; returns an awaitable that completes once the broker has it."""
        original = message.value or b""
        letter = DeadLetter(
            original=base64.b64encode(original).decode(),
            key=base64.b64encode(message.key).decode() if message.key is not None else None,
            code=code, reason=reason, topic=message.topic, partition=message.partition, offset=message.offset,
            failed_at=datetime.now(timezone.utc),
        )  # fmt: skip
        outcomes.labels("deadlettered").inc()
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

    async def update_progress(self) -> None:
        """Per submissions partition held: its lag on ``/metrics``, and whether it has stalled (:class:`StallWatch`).

        The end offset is the larger of the consumer's high watermark (from its fetches: none for a
        partition it has not fetched) and the broker's (ListOffsets, too small on Tansu after a
        multi-record batch), so a partition the consumer stopped fetching still shows its lag. What is
        done is the last offset this worker processed, else where the group resumed the partition.
        """
        consumer = self.app.consumer
        held = sorted((tp for tp in consumer.assignment() if tp.topic == self.settings.topic_submissions), key=lambda tp: tp.partition)
        try:
            ends = await asyncio.wait_for(consumer.highwaters(*held), timeout=5.0) if held else {}
            positions = {tp.partition: await asyncio.wait_for(consumer.position(tp), timeout=5.0) for tp in held}
        except Exception:  # the broker unreachable or rebalancing: /health says so already; judge afresh after
            self.stalls.keep(set())
            return
        now, stalled = time.monotonic(), []
        for tp in held:
            end = max(ends.get(tp) or 0, consumer.highwater(tp) or 0)
            position = positions[tp.partition]
            if tp.partition in self.processed_offsets:
                done = self.processed_offsets[tp.partition] + 1
            else:  # not the position: a consumer that skipped records (stream/rewind.py) is at the end, them undone
                done = self.resumed_at.get(tp.partition, position or 0)
            self.metrics.consumer_lag.labels(str(tp.partition)).set(max(end - done, 0))
            if self.stalls.update(tp.partition, (position, done), end > done and not self.app.rebalancing, now):
                stalled.append(tp.partition)
        owned = {tp.partition for tp in held}
        self.stalls.keep(owned)
        self.stalled = stalled
        self.metrics.partitions_stalled.set(len(stalled))
        # a partition handed to another worker in a rebalance is that worker's to report: a frozen value here would double it
        for (partition,) in list(self.metrics.consumer_lag._metrics):
            if int(partition) not in owned:
                self.metrics.consumer_lag.remove(partition)


class Assessment:
    """The assessor stage: region sums in from ``pantau.regional``, regional alerts out on a timer.

    Runs on the worker that holds the topic's single partition. The latest sums per region and the
    raised tests live in changelog-backed tables, so a restarted or newly assigned worker rebuilds the
    assessor from them.
    """

    def __init__(self, app: faust.App, settings: Settings, pipeline: Pipeline):
        self.app, self.settings, self.pipeline = app, settings, pipeline
        self.topic = app.topic(settings.topic_regional, key_serializer="raw", value_serializer="raw", partitions=1)
        self.sums_table = app.Table(ASSESSOR_SUMS_TABLE, default=None, partitions=1, help="Latest region sums")
        self.episodes_table = app.Table(ASSESSOR_EPISODES_TABLE, default=None, partitions=1, help="Raised regional tests and each region's looks")
        self.sums = BatchStates(self.sums_table)
        self.episodes = BatchStates(self.episodes_table)
        self.assessor: RegionalAssessor | None = None
        self.swept_at = time.monotonic()

    def holds(self) -> bool:
        consumer = self.app.consumer
        return consumer is not None and TP(self.settings.topic_regional, 0) in consumer.assignment()

    def current(self) -> RegionalAssessor:
        if self.assessor is None:
            self.assessor = RegionalAssessor(self.settings.fdr, episodes=self.episodes)
            for key, state in sorted(self.sums_table.data.items()):
                self.assessor.update(key, RegionSums.from_state(state))
        return self.assessor

    async def receive(self, events: list[faust.EventT]) -> None:
        assessor = self.current()
        for event in events:
            key, state = event.message.key.decode(), orjson.loads(event.message.value)
            try:
                assessor.update(key, RegionSums.from_state(state))
            except (ValueError, KeyError, TypeError) as exc:  # a sums message of another version: say so, go on
                log.error("regional sums %s refused: %s", key, exc)
                continue
            self.sums[key] = state
        await self.sums.flush(self.pipeline.changelog)

    async def assess(self) -> None:
        """Test the regions due (see :meth:`RegionalAssessor.assess`) and publish the alerts; once every
        ``sweep_interval`` seconds a sweep, so that the last stations of a region whose next 1.5× never
        comes are tested too. One timer does both: two would interleave their writes to the episodes."""
        if not self.holds():
            self.assessor = None  # another worker assesses; rebuild from the tables if it comes back
            return
        sweep = time.monotonic() - self.swept_at >= self.settings.sweep_interval
        try:
            alerts = self.current().assess(SWEEP_GROWTH if sweep else LOOK_GROWTH)
        except Exception:  # a bug in the statistics must not stop the worker: the regions stay dirty, retried next time
            log.exception("regional assessment failed")
            return
        if sweep:
            self.swept_at = time.monotonic()
        producer = self.app.producer
        sends = [await producer.send(self.settings.topic_alerts, a.region.encode(), a.to_json(), None, None, None) for a in alerts]
        await asyncio.gather(*sends)
        for alert in alerts:
            self.pipeline.metrics.alerts.labels(alert.detector, alert.severity, alert.region[:2]).inc()
        await self.episodes.flush(self.pipeline.changelog)


def ensure_topics(settings: Settings) -> list[str]:
    """Create the topics pantau uses where missing (idempotent); returns those created."""
    from .broker import create_topics

    return create_topics(settings.bootstrap, settings.topics, replication_factor=settings.replication,
                         configs=settings.topic_configs, security=settings.kafka_options())  # fmt: skip


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
        "broker_max_poll_records": settings.batch_size,
        "producer_max_batch_size": settings.producer_batch_bytes,
        "producer_max_request_size": settings.max_message_bytes,
        "topic_replication_factor": settings.replication,
        "topic_partitions": settings.partitions,
        "consumer_auto_offset_reset": "earliest",
        "autodiscover": False,
        "table_standby_replicas": settings.standby_replicas,
        "Worker": Worker,
        **({"broker_credentials": settings.faust_credentials()} if settings.security_protocol != "PLAINTEXT" else {}),
        **faust_options,
    }
    use_fetch_max_wait(settings.fetch_max_wait_ms)
    use_reconnect_backoff(settings.reconnect_backoff_ms, settings.reconnect_backoff_max_ms)
    quiet_repeated_broker_errors()
    use_full_rewind()
    app = BatchingApp(settings.app_id, **options)
    pipeline = Pipeline(app, settings)
    app.pantau = pipeline  # type: ignore[attr-defined]

    deliver_batches(app, pipeline.submissions, pipeline.receive)

    @app.timer(interval=min(settings.flush_interval, 0.25))
    async def store_states() -> None:
        await pipeline.flush_due()

    @app.agent(pipeline.verdicts, name="pantau.verdicts")
    async def learn(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            await pipeline.learn(list(events))

    assessment = Assessment(app, settings, pipeline)
    app.pantau_assessment = assessment  # type: ignore[attr-defined]

    @app.agent(assessment.topic, name="pantau.assess")
    async def assess(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            await assessment.receive(list(events))

    @app.timer(interval=settings.assess_interval)
    async def assess_regions() -> None:
        await assessment.assess()

    @app.on_rebalance_complete.connect
    async def forget_regions(sender: Any, **kwargs: Any) -> None:
        pipeline.monitor.forget()  # the region states of the partitions held now are in the table
        pipeline.region_positions.clear()
        await pipeline.trust_positions()

    @app.timer(interval=2.0)
    async def report_progress() -> None:
        await pipeline.update_progress()

    def broker_reachable() -> bool:
        """Whether the consumer knows its group coordinator. The assignment outlives a lost broker, but aiokafka
        forgets the coordinator as soon as a request to it fails (a broken or refused connection, a heartbeat
        timing out) and finds it again only through a round trip to the broker (tests/test_outage.py)."""
        coordinator = getattr(getattr(getattr(app.consumer, "_thread", None), "_consumer", None), "_coordinator", None)
        return coordinator is None or getattr(coordinator, "coordinator_id", 0) is not None  # unknown: no verdict

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        crashed = [f"{agent.name}: {agent.crash_reason!r}" for agent in app.agents.values() if agent.crash_reason]
        assignment = app.consumer.assignment() if app.consumer else set()
        reachable = broker_reachable()
        stalled = pipeline.stalled
        ready = (app.rebalancing is False and app.consumer is not None and not crashed and len(assignment) > 0 and reachable
                 and not stalled)  # fmt: skip
        status = ("crashed" if crashed else "ok" if ready else "broker_unreachable" if not reachable
                  else "stalled" if stalled else "starting")  # fmt: skip
        body = {"status": status, "assigned_partitions": len(assignment), "app": settings.app_id, "crashed": crashed,
                "stalled_partitions": stalled,
                "submission_partitions": sorted(tp.partition for tp in assignment if tp.topic == settings.topic_submissions),
                "assessor": assessment.holds()}  # fmt: skip
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(pipeline.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app

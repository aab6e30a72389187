"""Crash consistency: a worker killed with SIGKILL twice, restarted each time, gives what an uninterrupted
worker gives -- the same messages processed and dead-lettered, the same set of alert ids (a copy again
is allowed: delivery is at least once), a desk with one case per key, and the same table state.

This is ``bench/crash_harness.py`` (its module docstring explains the runs and the checks) at a size
for CI: 3,000 messages of a simulated night (province 65: misreads, corrections, halves arriving
separately, duplicates; every 500th message truncated JSON), 2 kills at seeded random moments, on an
embedded broker of its own. ~35-60 s on 2 cores.

The random kills seldom land in the narrow windows that matter most -- between the region and the
revision changelog writes, or halfway through one -- so an offline test kills a pipeline
(stream/app.py ``Pipeline``, no broker) after every interesting number of changelog records of a batch,
restarts it from the changelog records that "reached the broker" and the last committed batch, and
requires the clean run's tables (states and source positions) and alerts.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import orjson
import pytest

from .conftest import load_bench


@pytest.mark.broker
def test_a_worker_killed_twice_gives_what_an_uninterrupted_worker_gives(tmp_path: Path):
    harness = load_bench("crash_harness")
    report = harness.run(n=3_000, kills=2, seed=1, workdir=tmp_path, say=print)
    summary = "\n".join(report.lines())
    print(summary)  # shown with a failure, with the work directory's worker logs
    assert len(report.kills) == 2, summary
    assert report.consumed == 3_000 and report.deadlettered >= report.invalid_injected == 6, summary
    assert report.alert_messages > 0 and report.cases > 0, summary
    failed = [f"{check.name}: {check.detail}" for check in report.checks if not check.ok]
    assert not failed, "\n".join(failed) + f"\n\n{summary}\n(work directory {tmp_path})"


# --------------------------------------------------------------------------------------------------
# Offline: a pipeline killed at every point of a batch's changelog writes


PARTITIONS = 2
BATCH = 100


class Killed(Exception):
    """The worker process dies (SIGKILL): nothing after this point happens."""


class Acknowledged:
    """Alerts, regional sums, dead letters: every send is acknowledged; the topics as the broker holds them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, key: Any, value: bytes, partition: Any, timestamp: Any, headers: Any) -> Any:
        self.sent.append((topic, value))
        return _done(None)


class Changelogs:
    """The tables' changelogs as the broker holds them; the worker dies at the send after ``budget`` more."""

    def __init__(self, records: list[tuple[str, bytes, bytes]] | None = None) -> None:
        self.records = [] if records is None else records
        self.budget = math.inf

    async def send(self, topic: str, key: bytes, value: bytes, partition: int) -> Any:
        if self.budget <= 0:
            raise Killed
        self.budget -= 1
        self.records.append((topic, key, value))
        return _done(SimpleNamespace(topic=topic, partition=partition, offset=len(self.records)))


def _done(result: Any) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


def _worker(changelogs: Changelogs, settings: Any = None):
    """A pipeline whose tables are recovered from ``changelogs`` (the last value of every key), in a group
    with committed offsets (its stored positions trusted)."""
    from pantau.stream.app import Pipeline
    from pantau.stream.settings import Settings

    app = faust.App("crash-offline", broker="kafka://127.0.0.1:1", store="memory://", autodiscover=False)
    pipeline = Pipeline(app, settings or Settings(partitions=PARTITIONS))
    app.producer = Acknowledged()
    pipeline.changelog = changelogs
    tables = {t.changelog_topic.get_topic_name(): t for t in (pipeline.table, pipeline.region_table, pipeline.suppression_table)}
    for topic, key, value in changelogs.records:
        tables[topic].data[orjson.loads(key)] = orjson.loads(value)
    pipeline.trusted = {p: math.inf for p in range(PARTITIONS)}
    return pipeline


def _tables(pipeline) -> dict[str, dict]:
    return {"revisions": dict(pipeline.table.data.items()), "regions": dict(pipeline.region_table.data.items())}


def _alerts(*pipelines) -> dict[str, set[bytes]]:
    bodies: dict[str, set[bytes]] = {}
    for pipeline in pipelines:
        for topic, value in pipeline.app.producer.sent:
            if topic == pipeline.settings.topic_alerts:
                bodies.setdefault(orjson.loads(value)["alert_id"], set()).add(value)
    return bodies


def _outcome(pipeline, outcome: str) -> float:
    return pipeline.metrics.registry.get_sample_value("pantau_submissions_total", {"outcome": outcome})


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> list[list[Any]]:
    """1,200 submissions of a simulated night (province 65: revisions, halves, duplicates) as batches of
    consumed messages on 2 partitions (keyed by kab/kota, offsets counted per partition)."""
    from pantau.simulate import simulate_lines

    lines, _ = simulate_lines(tmp_path_factory.mktemp("night") / "truth.jsonl", provinces=["65"], seed=1, complete=True,
                              images=False, synthetic_registry=True)  # fmt: skip
    ends = [0] * PARTITIONS
    messages = []
    for line in itertools.islice(lines, 1_200):
        key = orjson.loads(line)["kode_tps"][:4]
        partition = int(key) % PARTITIONS
        messages.append(SimpleNamespace(topic="sirekap.submissions", partition=partition, offset=ends[partition],
                                        tp=(partition,), key=key.encode(), value=line.rstrip(b"\n")))  # fmt: skip
        ends[partition] += 1
    return [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]


async def _stored(pipeline, batches: list[list[Any]]) -> None:
    """Process the batches, then store their states once (the worker stores every PANTAU_FLUSH_INTERVAL)."""
    for batch in batches:
        await pipeline.process(batch)
    await pipeline.flush()


@pytest.mark.parametrize("batches_per_flush", [1, 3])
def test_a_pipeline_killed_anywhere_in_its_changelog_writes_redoes_its_batches_to_the_clean_state(night, batches_per_flush):
    flushes = [night[i : i + batches_per_flush] for i in range(0, len(night), batches_per_flush)]

    async def scenario() -> None:
        clean = _worker(Changelogs())
        writes = []  # changelog records per flush: region states, then revision states
        for batches in flushes:
            before = len(clean.changelog.records)
            await _stored(clean, batches)
            writes.append(len(clean.changelog.records) - before)
        reference, reference_alerts = _tables(clean), _alerts(clean)
        assert reference_alerts and len(reference["regions"]) > 10

        for dies_in in sorted({3, 7, 11} & set(range(2, len(flushes)))):
            committed = dies_in - 2  # the flushes before this one had their offsets committed
            n = writes[dies_in]
            for budget in sorted({0, 1, n // 3, n // 2, 2 * n // 3, n - 1, n}):
                first = _worker(Changelogs())
                for batches in flushes[:dies_in]:
                    await _stored(first, batches)
                first.changelog.budget = budget
                try:
                    await _stored(first, flushes[dies_in])
                except Killed:
                    pass
                # Restarted: tables recovered from what reached the changelogs, consuming from the committed offsets.
                second = _worker(Changelogs(list(first.changelog.records)))
                for batches in flushes[committed:]:
                    await _stored(second, batches)
                where = f"killed in flush {dies_in} after {budget} of its {n} changelog records"
                assert _tables(second) == reference, where
                alerts = _alerts(first, second)
                assert set(alerts) == set(reference_alerts), where
                assert all(bodies <= reference_alerts[i] for i, bodies in alerts.items()), where
                # What the stored states held was skipped: at least the two stored flushes (less the identical
                # resubmissions, which do not move a position and are inspected again, changing nothing).
                assert _outcome(second, "redelivered") >= 0.95 * 2 * BATCH * batches_per_flush, where

        # Positions not trusted (no committed offset: maybe a new log at offsets seen before): nothing is skipped.
        untrusted = _worker(Changelogs(list(clean.changelog.records)))
        untrusted.trusted = {}
        await _stored(untrusted, night[:1])
        assert (_outcome(untrusted, "redelivered"), _outcome(untrusted, "processed")) == (0, BATCH)

    asyncio.run(scenario())


class Consumer:
    """The consumer as the batch handler sees it: what it was told is done, and where it was sent back to."""

    flow_active = True

    def __init__(self) -> None:
        self.acknowledged: list[Any] = []
        self.seeks: dict[Any, int] = {}

    def assignment(self) -> set:
        return {(p,) for p in range(PARTITIONS)}

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks[tp] = offset

    def done(self, messages: list[Any]) -> None:
        self.acknowledged.extend(messages)

    async def commit(self) -> bool:
        return True


class FailsOnce(Acknowledged):
    """The broker refuses one send (the ``at``-th to ``topic``): what a worker meets when a broker fails mid-batch."""

    def __init__(self, topic: str, at: int) -> None:
        super().__init__()
        self.topic, self.at, self.count = topic, at, 0

    async def send(self, topic: str, key: Any, value: bytes, partition: Any, timestamp: Any, headers: Any) -> Any:
        self.count += topic == self.topic
        if topic == self.topic and self.count == self.at:
            raise ConnectionError("the broker went away")
        return await super().send(topic, key, value, partition, timestamp, headers)


@pytest.mark.parametrize("topic, fails_at", [("pantau.alerts", 12), ("pantau.regional", 120)])
def test_a_batch_that_fails_is_read_again_from_its_first_unstored_submission(night, topic, fails_at):
    """``Pipeline.receive`` with a send that fails (an alert's in the middle of a batch, or a region's in a
    flush spanning two batches): what was processed and not stored is forgotten, its partitions are sent
    back to their first unstored offset, and read again from there the tables and alerts end as an
    uninterrupted worker's."""
    from pantau.stream.settings import Settings

    async def scenario() -> None:
        clean = _worker(Changelogs())
        for batch in night:
            await _stored(clean, [batch])
        settings = Settings(partitions=PARTITIONS, flush_max=2 * BATCH, flush_interval=60)
        worker = _worker(Changelogs(), settings)
        worker.app.producer = FailsOnce(topic, fails_at)
        worker.app.consumer = consumer = Consumer()
        order = [message for batch in night for message in batch]
        positions = dict.fromkeys(range(PARTITIONS), 0)  # the next offset the "fetcher" reads, per partition
        rewound = []
        while True:
            batch = [m for m in order if m.offset >= positions[m.partition]][:BATCH]
            if not batch:
                break
            positions.update({m.partition: m.offset + 1 for m in batch})
            await worker.receive(batch)
            if consumer.seeks:
                rewound.append(dict(consumer.seeks))
                positions.update({tp[0]: offset for tp, offset in consumer.seeks.items()})
                consumer.seeks.clear()
        consumer.done(await worker.flush())
        assert len(rewound) == 1 and worker.app.producer.count > fails_at
        assert _tables(worker) == _tables(clean)
        assert set(_alerts(worker)) == set(_alerts(clean))
        done = {(m.partition, m.offset) for m in consumer.acknowledged}
        assert done == {(m.partition, m.offset) for m in order}  # every submission acknowledged, once stored

    asyncio.run(scenario())


class FreshGroup(Consumer):
    """A worker's consumer in a group that has never committed: the broker's ListOffsets says ``listed``."""

    def __init__(self, listed: int) -> None:
        super().__init__()
        self.listed, self.commits = listed, 0

    def assignment(self) -> set:
        from faust.types import TP

        return {TP("sirekap.submissions", p) for p in range(PARTITIONS)}

    async def seek_to_committed(self) -> dict:
        return {tp: None for tp in self.assignment()}

    async def highwaters(self, *tps: Any) -> dict:
        return {tp: self.listed for tp in tps}

    async def earliest_offsets(self, *tps: Any) -> dict:
        return {tp: 0 for tp in tps}

    async def commit(self) -> bool:
        self.commits += 1
        return await super().commit()


def test_a_partition_without_a_committed_offset_is_stored_and_committed_after_its_first_batch(night):
    """Until a partition has a committed offset, a crash makes the restarted worker trust only the positions
    below the broker's end offset, which Tansu can report too small: every redone form would count again in
    the region states that already hold it. So its first batch is stored and committed at once, not a flush
    interval later; later batches wait for the interval."""
    from pantau.stream.settings import Settings

    async def scenario() -> None:
        worker = _worker(Changelogs(), Settings(partitions=PARTITIONS, flush_interval=60))
        worker.app.consumer = consumer = FreshGroup(listed=1)
        await worker.trust_positions()
        assert worker.uncommitted == {0, 1} and worker.trusted == {0: 1, 1: 1}
        first = [m for m in night[0] if m.partition == 0]
        await worker.receive(first)
        await worker.storing  # stored in the background
        assert consumer.commits == 1 and consumer.acknowledged == first and len(worker.changelog.records) > 0
        assert worker.uncommitted == {1}
        second = [m for m in night[1] if m.partition == 0]
        await worker.receive(second)  # partition 0 has its commit: the interval decides
        assert consumer.commits == 1 and consumer.acknowledged == first and worker.unstored == second
        await worker.receive([m for m in night[1] if m.partition == 1])
        await worker.storing
        assert consumer.commits == 2 and worker.uncommitted == set() and worker.unstored == []

    asyncio.run(scenario())


class SlowChangelogs(Changelogs):
    """A broker that takes its time over each changelog record: stores run while later batches are inspected."""

    async def send(self, topic: str, key: bytes, value: bytes, partition: int) -> Any:
        await asyncio.sleep(0.002)
        return await super().send(topic, key, value, partition)


def test_batches_inspected_while_a_store_runs_read_its_states_and_end_as_one_worker_in_step(night):
    """Stores run in the background: the next batches read the states being stored (and their own) and
    leave the tables, alerts and acknowledgements a worker storing after every batch leaves."""
    from pantau.stream.settings import Settings

    async def scenario() -> None:
        clean = _worker(Changelogs())
        for batch in night:
            await _stored(clean, [batch])
        worker = _worker(SlowChangelogs(), Settings(partitions=PARTITIONS, flush_interval=1e-6))
        worker.app.consumer = consumer = Consumer()
        overlapped = 0
        for batch in night:
            overlapped += worker.storing is not None and not worker.storing.done()
            await worker.receive(batch)
        await worker.storing
        consumer.done(await worker.flush())
        assert overlapped >= len(night) // 2  # most batches were inspected while a store ran
        assert _tables(worker) == _tables(clean)
        assert set(_alerts(worker)) == set(_alerts(clean))
        assert sorted((m.partition, m.offset) for m in consumer.acknowledged) == sorted(
            (m.partition, m.offset) for batch in night for m in batch)

    asyncio.run(scenario())


def test_states_being_stored_are_read_until_the_table_has_them_and_later_writes_win():
    from pantau.stream.app import BatchStates

    async def scenario() -> None:
        worker = _worker(SlowChangelogs())
        states = BatchStates(worker.table, positions=True)
        states.partition, states.offset = 1, 7
        states["a"], states["b"] = {"v": 1}, {"v": 1}
        taken = states.take()
        store = asyncio.ensure_future(states.store(taken, worker.changelog))
        await asyncio.sleep(0)
        states.offset = 9
        states["b"] = {"v": 2}  # written while the store runs
        assert (states["a"], states.position("a"), states["b"], states.position("b")) == ({"v": 1}, 7, {"v": 2}, 9)
        assert "a" not in worker.table.data  # the table takes them once the broker has them
        await store
        assert worker.table.data["a"] == {"o": 7, "s": {"v": 1}} and states.storing == {}
        assert (states["a"], states["b"]) == ({"v": 1}, {"v": 2})
        states.forget()
        assert states["b"] == {"v": 1} and states.position("b") == 7

    asyncio.run(scenario())

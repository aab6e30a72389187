"""Per-partition progress (issue 9): the lag gauge and the stall watch of a worker, against a consumer
whose answers the test sets -- the case the 100,000-submission crash run met once, a partition the
consumer never fetched again after a restart while it went on with the others, and the one behind it,
a partition whose records the consumer skipped (stream/rewind.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types import TP

from pantau.stream import app as stream_app
from pantau.stream.app import Pipeline
from pantau.stream.settings import Settings

TOPIC = "sirekap.submissions"


class Consumer:
    """What :meth:`Pipeline.update_progress` asks a Faust consumer: its assignment, the broker's end
    offsets (ListOffsets), its fetch positions and the high watermarks its fetches saw (None: never fetched)."""

    def __init__(self, ends: dict[int, int], positions: dict[int, int], fetched: dict[int, int]):
        self.ends, self.positions, self.fetched = ends, positions, fetched
        self.reachable = True

    def assignment(self) -> set[TP]:
        return {TP(TOPIC, p) for p in self.ends} | {TP("pantau.regional", 0)}

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        if not self.reachable:
            raise ConnectionError("broker unreachable")
        return {tp: self.ends[tp.partition] for tp in tps}

    async def position(self, tp: TP) -> int:
        return self.positions[tp.partition]

    def highwater(self, tp: TP) -> int | None:
        return self.fetched.get(tp.partition)


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, Consumer, list[float]]:
    app = faust.App("progress-test", broker="kafka://127.0.0.1:1", store="memory://", autodiscover=False)
    pipeline = Pipeline(app, Settings(partitions=2, stall_seconds=60.0))
    # partition 0 is being worked through; partition 1 was never fetched after the restart: its
    # position is the committed offset, and the consumer has no high watermark for it
    consumer = Consumer(ends={0: 5000, 1: 9760}, positions={0: 3000, 1: 7187}, fetched={0: 5000})
    app.consumer = consumer
    clock = [1000.0]
    monkeypatch.setattr(stream_app.time, "monotonic", lambda: clock[0])
    pipeline.processed_offsets[0] = 2499
    return pipeline, consumer, clock


def lag(pipeline: Pipeline, partition: int) -> float | None:
    return pipeline.metrics.registry.get_sample_value("pantau_consumer_lag_messages", {"partition": str(partition)})


def stalled_gauge(pipeline: Pipeline) -> float | None:
    return pipeline.metrics.registry.get_sample_value("pantau_partitions_stalled")


def test_a_partition_never_fetched_shows_its_lag_and_is_reported_stalled_after_the_window(pipeline: Any) -> None:
    pipeline, consumer, clock = pipeline
    asyncio.run(pipeline.update_progress())
    assert lag(pipeline, 0) == 5000 - 2500
    assert lag(pipeline, 1) == 9760 - 7187  # from the broker's end offset: the consumer never saw one
    assert pipeline.stalled == [] and stalled_gauge(pipeline) == 0

    clock[0] += 59.0
    pipeline.processed_offsets[0] = 2999
    consumer.positions[0] = 3500
    asyncio.run(pipeline.update_progress())
    assert pipeline.stalled == []  # not yet: 59 s without progress

    clock[0] += 2.0
    pipeline.processed_offsets[0] = 3499
    consumer.positions[0] = 4000
    asyncio.run(pipeline.update_progress())
    assert pipeline.stalled == [1] and stalled_gauge(pipeline) == 1  # partition 0 moves; 1 has not for 61 s

    consumer.positions[1] = 7687  # fetched again (after a restart, say)
    clock[0] += 2.0
    asyncio.run(pipeline.update_progress())
    assert pipeline.stalled == [] and stalled_gauge(pipeline) == 0


def test_a_partition_whose_records_were_skipped_shows_its_backlog_and_is_reported_stalled(pipeline: Any) -> None:
    """Before stream/rewind.py, a partition with no committed offset could be left at its end with none of
    its records read (the crash harness met it): the position says done, the resume point does not."""
    pipeline, consumer, clock = pipeline
    consumer.positions[1] = consumer.fetched[1] = consumer.ends[1]
    pipeline.resumed_at[1] = 0
    asyncio.run(pipeline.update_progress())
    assert lag(pipeline, 1) == 9760
    clock[0] += 61.0
    asyncio.run(pipeline.update_progress())
    assert 1 in pipeline.stalled


def test_a_caught_up_partition_does_not_stall_however_long_it_waits(pipeline: Any) -> None:
    pipeline, consumer, clock = pipeline
    consumer.ends[1] = consumer.positions[1] = 7187
    for _ in range(5):
        asyncio.run(pipeline.update_progress())
        clock[0] += 100.0
    assert 1 not in pipeline.stalled and lag(pipeline, 1) == 0


def test_an_unreachable_broker_is_no_stall_and_the_window_starts_again_after_it(pipeline: Any) -> None:
    pipeline, consumer, clock = pipeline
    asyncio.run(pipeline.update_progress())
    consumer.reachable = False
    clock[0] += 300.0
    asyncio.run(pipeline.update_progress())  # nothing judged while the broker does not answer
    consumer.reachable = True
    asyncio.run(pipeline.update_progress())
    assert pipeline.stalled == []  # 300 s since the last look, but the window restarts now
    clock[0] += 61.0
    asyncio.run(pipeline.update_progress())
    assert pipeline.stalled == [0, 1]

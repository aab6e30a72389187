"""Seeking back to the committed offsets also moves a partition that has none (stream/rewind.py).

Faust drops fetched records on a rebalance and seeks back with aiokafka's ``seek_to_committed``;
without the rewind, a partition with no committed offset keeps the position of the dropped fetch and
its records are never read (the crash harness lost thousands of submissions so).
"""

from __future__ import annotations

import asyncio
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pantau.stream.broker import EmbeddedBroker, create_topics
from pantau.stream.rewind import rewind_uncommitted, use_full_rewind

pytestmark = pytest.mark.broker

TOPIC = "rewind.submissions"


async def _positions_after_seek_to_committed(bootstrap: str, rewind: bool) -> tuple[list[int], list[TopicPartition]]:
    partitions = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"rewind-{rewind}", enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(partitions)
        seen = 0
        while seen < 20:  # the fetch a rebalance makes Faust drop: both positions at the end
            seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=1000)).values())
        await consumer.commit({partitions[0]: 4})
        committed = await consumer.seek_to_committed()
        assert await rewind_uncommitted(consumer, committed, skip_topics=frozenset({TOPIC})) == []  # a changelog, say
        moved = await rewind_uncommitted(consumer, committed) if rewind else []
        return [await consumer.position(tp) for tp in partitions], moved
    finally:
        await consumer.stop()


def test_a_partition_without_a_committed_offset_goes_back_to_its_beginning(broker: EmbeddedBroker):
    async def scenario():
        create_topics(broker.bootstrap, {TOPIC: 2})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for i in range(10):
                for partition in (0, 1):
                    await producer.send_and_wait(TOPIC, b"%d" % i, partition=partition)
        finally:
            await producer.stop()
        return (await _positions_after_seek_to_committed(broker.bootstrap, rewind=False),
                await _positions_after_seek_to_committed(broker.bootstrap, rewind=True))  # fmt: skip

    (plain, _), (rewound, moved) = asyncio.run(scenario())
    assert plain == [4, 10]  # aiokafka alone: partition 1 stays where the dropped fetch left it
    assert rewound == [4, 0] and moved == [TopicPartition(TOPIC, 1)]


def test_faust_seeks_with_the_rewind_once_patched():
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    use_full_rewind()
    use_full_rewind()  # idempotent: the original is wrapped once
    patched = AIOKafkaConsumerThread.seek_to_committed
    assert patched.__code__.co_filename.endswith("rewind.py")
    assert patched.__wrapped__.__code__.co_filename.endswith("faust/transport/drivers/aiokafka.py")

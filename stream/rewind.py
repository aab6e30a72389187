"""Seeking back to the committed offsets also moves partitions that have none, so no record is skipped.

Faust (faust-streaming 0.11) drops the records it has fetched but not yet handed to the streams when
the consumer generation changes or its flow stops in the middle of a batch (``Consumer.getmany``), and
counts on ``perform_seek`` to move every partition back to its committed offset, so that they are
fetched again. It seeks with aiokafka's ``seek_to_committed``, which moves only partitions that have a
committed offset: a partition with none yet -- a new group, or a partition a crash left uncommitted --
stays where the dropped fetch left it, and those records are never read. At-least-once delivery
breaks silently: the crash harness (``bench/crash_harness.py --n 20000 --kills 2``) left 1,242 to
4,733 submissions unread this way in 5 of 5 runs, on exactly the partitions with no committed offset
when the restarted worker joined, while the worker's lag gauge said 0 (it counted from the position).

:func:`use_full_rewind` makes Faust's ``seek_to_committed`` also send every assigned partition without
a committed offset (or with 0) back to where ``consumer_auto_offset_reset`` starts one, as a Kafka
consumer does when it has no committed offset for a partition. Records read twice are redone
idempotently (stream/app.py), as after any crash. Changelog partitions are left alone: they never have
a committed offset, and Faust's table recovery sets their positions itself (rewinding them too made
every seek re-read whole changelogs: the 100,000-submission harness run crawled, its broker saturated).
"""

from __future__ import annotations

import functools
from typing import Any


async def rewind_uncommitted(consumer: Any, committed: dict[Any, int | None], policy: str = "earliest",
                             skip_topics: frozenset[str] = frozenset()) -> list[Any]:  # fmt: skip
    """Move the partitions of ``committed`` (``seek_to_committed``'s answer) that have no committed
    offset to the start ``policy`` gives (``earliest``: the beginning; ``latest``: the end), on an
    aiokafka consumer, except those of ``skip_topics``; return them."""
    assigned = consumer.assignment()
    fresh = [tp for tp, offset in committed.items() if not offset and tp in assigned and tp.topic not in skip_topics]
    if fresh:
        await (consumer.seek_to_end if policy == "latest" else consumer.seek_to_beginning)(*fresh)
    return fresh


def use_full_rewind() -> None:
    """Patch Faust's aiokafka consumer thread (there is no per-app hook) with :func:`rewind_uncommitted`."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    seek = getattr(AIOKafkaConsumerThread.seek_to_committed, "__wrapped__", AIOKafkaConsumerThread.seek_to_committed)

    @functools.wraps(seek)
    async def seek_to_committed(self: Any) -> Any:
        committed = await seek(self)
        policy = self.app.conf.consumer_auto_offset_reset
        # Changelog partitions never have a committed offset: Faust's table recovery positions them itself.
        changelogs = frozenset(self.app.tables.changelog_topics)
        await self.call_thread(rewind_uncommitted, self._ensure_consumer(), dict(committed), policy, changelogs)
        return committed

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed

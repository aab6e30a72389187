"""Whole fetched batches of a topic handed to one coroutine, below Faust's per-event stream.

A Faust agent pays ~100 µs per event before its code sees it (bench/bench_stream.py): the consumer
races each message against the flow-control event in two new tasks, the conductor takes a lock and the
flow control, builds an Event and queues it, the stream takes it off the queue, runs its processors and
acknowledges it. Batching in the agent (``take_events``) does not help, the events still arrive one at
a time. For pantau's submissions that is more than the detectors cost, and Faust has no batch delivery.

:class:`BatchingConsumer` is Faust's aiokafka consumer with one change: records of a topic registered
with :func:`deliver_batches` skip the conductor and go, as one list of Faust messages per fetch, to the
topic's handler. Every other topic (the tables' changelogs, the regional sums, the verdicts) is
delivered event by event, exactly as before. Assignment, rebalancing, table recovery, offsets and
commits stay Faust's: the topic is subscribed through the conductor like an agent's, and each message
is *tracked* like an agent's, so a rebalance (``stream_wait_empty``) and a shutdown wait until the
handler has :meth:`~faust.transport.consumer.Consumer.ack`-ed what it was given, and only acknowledged
messages are ever committed. The handler decides when a message is done; the consumer never
acknowledges one for it. Faust's sensors (its own web statistics, not pantau's ``/metrics``) do not
see batched messages: their two calls per message cost ~12 µs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

BatchHandler = Callable[[list[Message]], Awaitable[None]]


def deliver_batches(app: faust.App, topic: faust.TopicT, handler: BatchHandler) -> None:
    """Subscribe ``app`` to ``topic`` and hand its records to ``handler`` a fetched batch at a time.

    The app must have been created with ``Transport=BatchingTransport`` (:class:`BatchingApp` does).
    """
    app.topics.add(topic)
    for name in topic.topics:
        app.batch_handlers[name] = handler  # type: ignore[attr-defined]


class BatchingConsumer(driver.Consumer):
    """Faust's aiokafka consumer, delivering the records of batched topics a fetch at a time."""

    async def _drain_messages(self, fetcher: Any) -> None:  # the fetcher's loop, as Faust's own
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        callback = self.callback
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        read_offset, unacked = self._read_offset, self._unacked_messages
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)  # getmany may return at once, again and again: let the loop breathe
                if not records or self.should_stop:
                    continue
                generation = self.app.consumer_generation_id
                batches: dict[str, list[Message]] = {}
                for tp, tp_records in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break  # a rebalance began: Faust seeks back to the committed offsets after it
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    handler = handlers.get(tp.topic)
                    for record in tp_records:
                        offset, last = record.offset, read_offset[tp]
                        if last is not None and offset < last:
                            continue  # read before a seek back to here: delivered already
                        if last and offset - last > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, last + 1, offset)  # offsets the log does not hold
                        message = self._to_message(tp, record)
                        if handler is None:
                            if self._commit_every is not None and self._n_acked >= self._commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            unacked.add(message)  # tracked, as track_message would, less the sensors' per-message calls
                            batches.setdefault(tp.topic, []).append(message)
                        read_offset[tp] = offset
                for topic, messages in batches.items():
                    await handlers[topic](messages)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    def done(self, messages: list[Message]) -> None:
        """Acknowledge messages a batch handler was given (they may be committed from now on)."""
        for message in messages:
            self.ack(message)


class BatchingTransport(driver.Transport):
    Consumer = BatchingConsumer


class BatchingApp(faust.App):
    """A Faust app whose consumer can deliver topics in batches (:func:`deliver_batches`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batch_handlers: dict[str, BatchHandler] = {}
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> BatchingTransport:
        return BatchingTransport(self.conf.broker_consumer, self)


__all__ = ["BatchingApp", "BatchingConsumer", "BatchingTransport", "TP", "deliver_batches"]

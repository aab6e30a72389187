"""Exponential backoff between connection attempts to a broker, and one log line per repeated failure.

aiokafka (0.14) has no reconnection backoff: each of its retry loops (fetcher, group coordinator
lookup, metadata refresh, producer sender) retries a failed request every ``retry_backoff_ms``
(100 ms, which Faust does not expose), and every retry opens a new connection. A worker cut off from
its broker made ~38 connection attempts and logged ~75 ERROR lines per second for as long as the
outage lasted (tests/test_outage.py). Kafka's own clients back off *exponentially* between
connection attempts to a node -- ``reconnect.backoff.ms`` 50 ms, doubling per consecutive failure up
to ``reconnect.backoff.max.ms`` 1 s, ±20% jitter so that many workers do not reconnect in step --
and :func:`use_reconnect_backoff` gives aiokafka's client exactly that: within a node's backoff
window a connection request fails at once, without a connection attempt, as a refused one does, so
aiokafka's loops go on retrying and find the broker within one backoff interval of its return.

:class:`RepeatedLogFilter` keeps the logs readable during an outage: an aiokafka warning or error
repeated within ``interval`` seconds is counted instead of written, and the next one written says
how many were left out.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

#: Kafka's client defaults (reconnect.backoff.ms, reconnect.backoff.max.ms).
RECONNECT_BACKOFF_MS = 50
RECONNECT_BACKOFF_MAX_MS = 1000
JITTER = 0.2


@dataclass
class ReconnectBackoff:
    """When the next connection attempt to one node may be made, after consecutive failures.

    >>> backoff = ReconnectBackoff(initial=0.05, maximum=1.0, jitter=0.0)
    >>> [round(backoff.failed(now=0.0), 3) for _ in range(7)]
    [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    >>> backoff.allows(now=0.5), backoff.allows(now=1.0)
    (False, True)

    A success forgets the node's backoff (:func:`use_reconnect_backoff` drops it): the next failure
    starts again from ``initial``.
    """

    initial: float
    maximum: float
    jitter: float = JITTER
    failures: int = 0
    next_attempt: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"reconnect backoff: need 0 < initial ({self.initial}) <= maximum ({self.maximum})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"reconnect backoff: jitter {self.jitter} must lie in [0, 1)")

    def allows(self, now: float) -> bool:
        return now >= self.next_attempt

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``; returns the wait before the next one."""
        delay = min(self.maximum, self.initial * 2.0 ** min(self.failures, 62))
        delay *= 1.0 + random.uniform(-self.jitter, self.jitter)
        self.failures += 1
        self.next_attempt = now + delay
        return delay


def use_reconnect_backoff(initial_ms: int = RECONNECT_BACKOFF_MS, maximum_ms: int = RECONNECT_BACKOFF_MAX_MS) -> None:
    """Back off exponentially between connection attempts to a node, in every aiokafka client of this
    process (Faust's consumer and producer, the changelog producer): there is no per-client hook."""
    from aiokafka.client import AIOKafkaClient, ConnectionGroup

    ReconnectBackoff(initial_ms / 1000, maximum_ms / 1000)  # refuse impossible settings here, not at the first failure
    get_conn = getattr(AIOKafkaClient._get_conn, "__wrapped__", AIOKafkaClient._get_conn)

    @functools.wraps(get_conn)
    async def get_conn_with_backoff(self: Any, node_id: Any, *, group: Any = ConnectionGroup.DEFAULT,
                                    no_hint: bool = False) -> Any:  # fmt: skip
        backoffs: dict[Any, ReconnectBackoff] = self.__dict__.setdefault("_pantau_reconnect_backoff", {})
        backoff = backoffs.get(node_id)
        if backoff is not None and not backoff.allows(time.monotonic()):
            return None  # what a refused connection returns; the caller retries after its own backoff
        conn = await get_conn(self, node_id, group=group, no_hint=no_hint)
        if conn is None:
            backoffs.setdefault(node_id, ReconnectBackoff(initial_ms / 1000, maximum_ms / 1000)).failed(time.monotonic())
        else:
            backoffs.pop(node_id, None)  # not del: concurrent requests for one node all succeed at once
        return conn

    AIOKafkaClient._get_conn = get_conn_with_backoff


class RepeatedLogFilter(logging.Filter):
    """Writes a warning or error at most once per ``interval`` seconds per logger and message template;
    the next one written tells how many like it were left out.

    >>> import io
    >>> stream = io.StringIO()
    >>> logger = logging.getLogger("doctest.repeated")
    >>> logger.addHandler(logging.StreamHandler(stream)); logger.propagate = False
    >>> logger.addFilter(RepeatedLogFilter(interval=60.0))
    >>> for _ in range(3): logger.error("node %s unreachable", 1)
    >>> print(stream.getvalue().strip())
    node 1 unreachable
    """

    def __init__(self, interval: float = 10.0):
        super().__init__()
        self.interval = interval
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last, left_out = self.seen.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self.seen[key] = (last, left_out + 1)
            return False
        self.seen[key] = (now, 0)
        if left_out:
            record.msg = f"{record.msg} [and {left_out} more like it in the last {now - last:.1f} s]"
        return True


def quiet_repeated_broker_errors(interval: float = 10.0) -> None:
    """Put a :class:`RepeatedLogFilter` on every aiokafka logger (a logger's filters do not apply to
    its children's records, so each module's logger gets one)."""
    import aiokafka.client  # the loggers exist once their modules are imported
    import aiokafka.consumer
    import aiokafka.producer  # noqa: F401

    shared = RepeatedLogFilter(interval)
    for name in list(logging.root.manager.loggerDict):
        if name == "aiokafka" or name.startswith("aiokafka."):
            logger = logging.getLogger(name)
            if not any(isinstance(f, RepeatedLogFilter) for f in logger.filters):
                logger.addFilter(shared)

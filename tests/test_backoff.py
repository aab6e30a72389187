"""Reconnection backoff (issue 9, item 3): aiokafka's client waits exponentially longer between
connection attempts to a node that keeps failing, and repeated broker errors are logged once per
interval with a count of those left out. The worker under a real outage: tests/test_outage.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time

import pytest
from aiokafka.client import AIOKafkaClient

from pantau.stream.backoff import ReconnectBackoff, RepeatedLogFilter, use_reconnect_backoff
from pantau.stream.broker import free_port
from pantau.stream.settings import Settings


def test_the_wait_doubles_up_to_the_maximum_within_the_jitter() -> None:
    backoff = ReconnectBackoff(initial=0.05, maximum=1.0)
    waits = [backoff.failed(now=0.0) for _ in range(200)]
    for failures, wait in enumerate(waits):
        nominal = min(1.0, 0.05 * 2**failures)
        assert 0.8 * nominal <= wait <= 1.2 * nominal, (failures, wait)
    assert len({round(w, 6) for w in waits[10:]}) > 100, "no jitter: workers would reconnect in step"


@pytest.mark.parametrize("initial, maximum, jitter", [(0, 1, 0.2), (2, 1, 0.2), (0.05, 1, 1.0), (0.05, 1, -0.1)])
def test_impossible_backoffs_are_refused(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="reconnect backoff"):
        ReconnectBackoff(initial, maximum, jitter)


def test_settings_refuse_a_first_wait_above_the_longest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_RECONNECT_BACKOFF_MS", "2000")
    monkeypatch.setenv("PANTAU_RECONNECT_BACKOFF_MAX_MS", "1000")
    with pytest.raises(ValueError, match="PANTAU_RECONNECT_BACKOFF_MS"):
        Settings.from_env()


async def attempt_for(seconds: float, initial_ms: int, maximum_ms: int) -> tuple[list[float], int]:
    """Ask an aiokafka client for a connection to a node with no listener every 10 ms, as aiokafka's
    retry loops do together; returns the moments it really tried to connect, and the requests made."""
    use_reconnect_backoff(initial_ms, maximum_ms)
    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{free_port()}")
    attempts: list[float] = []
    lookup = client.cluster.broker_metadata

    def broker_metadata(node_id):  # every real attempt starts by looking the node up
        attempts.append(time.monotonic())
        return lookup(node_id)

    client.cluster.broker_metadata = broker_metadata
    requests = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            assert await client._get_conn(0) is None
            requests += 1
            await asyncio.sleep(0.01)
    finally:
        await client.close()
    return attempts, requests


def test_a_client_backs_off_exponentially_from_a_node_that_keeps_failing(caplog: pytest.LogCaptureFixture) -> None:
    try:
        attempts, requests = asyncio.run(attempt_for(3.0, initial_ms=50, maximum_ms=400))
    finally:
        use_reconnect_backoff()  # the defaults again, for the rest of this process
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert requests > 150
    # 50, 100, 200, 400, 400, ... ms: ~11 attempts in 3 s instead of one per request
    assert 8 <= len(attempts) <= 14, (len(attempts), gaps)
    for failures, gap in enumerate(gaps):
        nominal = min(0.4, 0.05 * 2**failures)
        assert 0.8 * nominal <= gap <= 1.2 * nominal + 0.03, (failures, gap)


def test_a_repeated_error_is_written_once_per_interval_with_the_count_left_out() -> None:
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.backoff.repeated")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.addFilter(RepeatedLogFilter(interval=0.2))
    for _ in range(5):
        logger.error("Unable connect to node with id %s: %s", 1, "refused")
    logger.error("another failure")
    logger.info("not a warning: always written")
    time.sleep(0.25)
    logger.error("Unable connect to node with id %s: %s", 1, "refused")
    written = [r.getMessage() for r in records]
    assert written[:3] == ["Unable connect to node with id 1: refused", "another failure", "not a warning: always written"]
    assert re.fullmatch(r"Unable connect to node with id 1: refused \[and 4 more like it in the last 0\.\d s\]", written[3])
    assert len(written) == 4

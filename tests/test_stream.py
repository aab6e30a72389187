"""The stream worker end to end: a real Kafka-protocol broker (embedded Tansu) and ``pantau worker``
child processes.

* the 1,000 shipped real DKI documents give, through the broker, exactly the offline replay's alerts;
* malformed messages are dead-lettered with their reasons while valid ones keep flowing, and the
  worker's counters account for every message consumed;
* a worker restarted mid-stream restores its revision table from the changelog and publishes no
  alert id twice;
* ``/health`` and ``/metrics``;
* ``pantau replay --broker`` publishes keyed, receipt-stamped envelopes;
* a desk verdict ``false_alarm`` keeps its alert from being published again.

One broker serves the module; every test uses its own topics, app id (consumer group) and data dir.
Workers are stopped before the broker (a worker whose broker is gone can hang on SIGTERM).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pantau import demo_data
from pantau.demo import metric_total, start_worker, stop_worker, wait_healthy
from pantau.replay import records_of, replay
from pantau.detectors.suppression import Suppressions
from pantau.schemas import Alert, DeadLetter, Verdict, verdict_key
from pantau.sources import read_records
from pantau.stream.app import ensure_topics
from pantau.stream.broker import EmbeddedBroker, create_topics, free_port
from pantau.stream.ingest import publish, topic_consumer
from pantau.stream.settings import Settings

from .conftest import CONSISTENT_DOC, MISREAD_DOC

pytestmark = pytest.mark.broker

#: Longest wait for a worker to process what a test published (they take well under a few seconds).
PROCESS_TIMEOUT = 45.0
WORKER_START_TIMEOUT = 45.0



# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


#: Every worker process the module started, for the broker fixture to make sure none outlives it.
_STARTED: list[subprocess.Popen] = []


class Workers:
    """``pantau worker`` child processes of one test; stopped (SIGTERM, then SIGKILL) at its end."""

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path):
        self.broker = broker
        self.tmp_path = tmp_path
        self.running: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def settings(self, name: str, partitions: int = 4) -> Settings:
        """Settings of a worker with its own topics, consumer group and data dir."""
        unique = f"{name}-{uuid.uuid4().hex[:8]}"
        return Settings(
            broker=self.broker.bootstrap, app_id=f"pantau-test-{unique}", partitions=partitions,
            topic_submissions=f"{unique}.submissions", topic_alerts=f"{unique}.alerts",
            topic_deadletter=f"{unique}.deadletter", topic_verdicts=f"{unique}.verdicts",
            topic_regional=f"{unique}.regional", data_dir=self.tmp_path / "data", web_port=free_port(),
            assess_interval=1.0,
        )  # fmt: skip

    def start(self, settings: Settings) -> subprocess.Popen:
        """Start a worker and wait until its /health reports partitions assigned."""
        log_path = self.tmp_path / f"worker-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        topics = {
            "PANTAU_TOPIC_SUBMISSIONS": settings.topic_submissions,
            "PANTAU_TOPIC_ALERTS": settings.topic_alerts,
            "PANTAU_TOPIC_DEADLETTER": settings.topic_deadletter,
            "PANTAU_TOPIC_VERDICTS": settings.topic_verdicts,
            "PANTAU_TOPIC_REGIONAL": settings.topic_regional,
            "PANTAU_ASSESS_INTERVAL": str(settings.assess_interval),
        }
        process = start_worker(settings, log_path, topics)
        self.running.append(process)
        _STARTED.append(process)
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while True:
            try:
                wait_healthy(settings.web_port, process, timeout=1.0)
                return process
            except RuntimeError as exc:  # the process exited
                pytest.fail(f"{exc}\n{self.log_tail()}")
            except TimeoutError:
                failure = self.failure()
                if failure:
                    pytest.fail(f"the worker cannot start: {failure}\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the worker did not become healthy within {WORKER_START_TIMEOUT:.0f} s\n{self.log_tail()}")

    def stop(self, process: subprocess.Popen) -> int:
        """Stop one worker gracefully (SIGTERM: it leaves its group, commits, flushes); its exit status."""
        stop_worker(process)
        self.running.remove(process)
        return process.returncode

    def stop_all(self) -> None:
        for process in self.running:
            stop_worker(process, timeout=10.0)
        self.running.clear()

    #: Log lines after which a worker process lives on but never consumes (again): fail at once.
    FATAL = (b"Crashed reason=", b"Error in recovery")

    def failure(self) -> str | None:
        """The first agent crash or failed table recovery in the workers' logs."""
        for path in self.logs:
            data = path.read_bytes() if path.exists() else b""
            for marker in self.FATAL:
                at = data.find(marker)
                if at >= 0:
                    end = data.find(b"\n", at)
                    return data[at : end if end >= 0 else None].decode("utf-8", "replace").strip()
        return None

    def log_tail(self, max_bytes: int = 6000) -> str:
        parts = []
        for path in self.logs:
            data = path.read_bytes() if path.exists() else b""
            parts.append(f"----- {path.name} (last {max_bytes} bytes) -----\n"
                         + data[-max_bytes:].decode("utf-8", "replace"))  # fmt: skip
        return "\n".join(parts) or "(no worker started)"


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the module, stopped after every worker (SIGINT, then SIGKILL after 5 s)."""
    instance = EmbeddedBroker(stop_timeout=5.0)
    instance.start()
    try:
        yield instance
    finally:
        for process in _STARTED:  # normally stopped already by the test's `workers` fixture
            stop_worker(process, timeout=10.0)  # SIGTERM, then SIGKILL
        _STARTED.clear()
        instance.stop()


@pytest.fixture
def workers(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(broker, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()  # before the module's broker stops
        # Captured output is shown only for a failing test: the workers' logs then come with it.
        print(started.log_tail())


def wait_for(condition: Callable[[], Any], what: str, workers: Workers, timeout: float = PROCESS_TIMEOUT) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail with the worker log tail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for process in workers.running:
            if process.poll() is not None:
                pytest.fail(f"the worker exited with status {process.returncode} while waiting for {what}\n{workers.log_tail()}")
        failure = workers.failure()
        if failure:
            pytest.fail(f"the worker failed while waiting for {what}: {failure}\n{workers.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{workers.log_tail()}")
        time.sleep(0.2)


def wait_processed(settings: Settings, count: int, workers: Workers) -> None:
    """Wait until the worker's /metrics counts ``count`` consumed submissions (processed or dead-lettered)."""
    wait_for(lambda: (metric_total(settings.web_port, "pantau_submissions_total") or 0) >= count,
             f"{count} submissions on /metrics", workers)  # fmt: skip


class TopicReader:
    """Reads a topic from its beginning, across calls (no consumer group, no commits)."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = topic_consumer(bootstrap, topic, poll_timeout=0.5)
        self.messages: list[Any] = []

    def read(self) -> list[Any]:
        self.messages.extend(self.consumer)  # stops after 0.5 s without a message
        return self.messages

    def until(self, done: Callable[[list[Any]], bool], what: str, workers: Workers, timeout: float = PROCESS_TIMEOUT) -> list[Any]:
        """Read until ``done(messages)``, then once more until idle (a duplicate would show up)."""
        wait_for(lambda: done(self.read()), what, workers, timeout)
        return self.read()

    def close(self) -> None:
        self.consumer.close()


def metrics_samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on a worker's /metrics: ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_name(samples: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def write_jsonl(path: Path, envelopes: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in envelopes))
    return path


def assert_same_alerts(alerts: list[dict], expected: dict[str, Alert]) -> None:
    """No alert id published twice, and the same alerts as the offline replay (but ``observed_at``)."""
    ids = Counter(a["alert_id"] for a in alerts)
    assert [i for i, n in ids.items() if n > 1] == [], "an alert id was published twice"
    assert set(ids) == set(expected)
    for alert in alerts:
        offline = expected[alert["alert_id"]].model_dump(mode="json")
        assert without_observed_at(alert) == without_observed_at(offline)


def without_observed_at(alert: dict) -> dict:
    return {k: v for k, v in alert.items() if k != "observed_at"}


def offline_alerts(*paths: Path) -> list[Alert]:
    return list(replay(records_of(paths)))


def alert_messages(messages: list[Any]) -> list[dict]:
    """Decoded alerts, each checked to be keyed by its region."""
    alerts = []
    for message in messages:
        alert = orjson.loads(message.value)
        assert message.key == alert["region"].encode(), (message.key, alert["region"])
        alerts.append(alert)
    return alerts


def envelope(kode_tps: str, doc: dict, jenis: str = "ppwp") -> dict:
    return {"kode_tps": kode_tps, "jenis": jenis, "doc": copy.deepcopy(doc)}


# --------------------------------------------------------------------------------------------------
# 1. The stream finds what the offline replay finds


def test_real_dki_documents_through_the_broker_give_exactly_the_offline_alerts(workers: Workers):
    settings = workers.settings("dki")
    expected = {alert.alert_id: alert for alert in offline_alerts(demo_data())}
    assert len(expected) == 172  # the shipped sample's findings (tests/test_replay.py pins the detail)

    ensure_topics(settings)
    workers.start(settings)
    reader = TopicReader(settings.bootstrap, settings.topic_alerts)
    try:
        published_from = datetime.now(timezone.utc)
        summary = publish(read_records(demo_data()), settings.bootstrap, settings.topic_submissions)
        published_until = datetime.now(timezone.utc)
        assert (summary.published, summary.invalid) == (1000, 0)
        wait_processed(settings, 1000, workers)
        messages = reader.until(lambda m: len(m) >= len(expected), f"{len(expected)} alerts", workers)
    finally:
        reader.close()

    alerts = alert_messages(messages)
    assert_same_alerts(alerts, expected)
    for alert in alerts:
        # The stream's alerts are about the data as received: observed_at is the receipt time.
        observed = datetime.fromisoformat(alert["observed_at"])
        assert published_from - timedelta(seconds=1) <= observed <= published_until + timedelta(seconds=1)
    samples = metrics_samples(settings.web_port)
    assert by_name(samples, "pantau_submissions_total") == {(("outcome", "processed"),): 1000.0,
                                                            (("outcome", "deadlettered"),): 0.0,
                                                            (("outcome", "redelivered"),): 0.0}  # fmt: skip
    assert sum(by_name(samples, "pantau_alerts_total").values()) == len(expected)


# --------------------------------------------------------------------------------------------------
# 2. Malformed messages are dead-lettered; the stream goes on


def raw_producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5, max_request_size=4 << 20)


#: Malformed messages: key, value, the rejection code, a word the reason must contain.
MALFORMED: list[tuple[bytes | None, bytes, str, str]] = [
    (None, b"this is not json {", "not_json", "JSON"),
    (b"3173", b'[{"kode_tps": "3173011005116"}]', "schema", "object"),
    (b"3173", orjson.dumps(envelope("317301100511", CONSISTENT_DOC)), "kode_tps", "13 digits"),
    (b"0073", orjson.dumps(envelope("0073011005116", CONSISTENT_DOC)), "kode_tps", "province"),
    (b"3173", orjson.dumps(envelope("3173011005118", {"chart": {"null": None, "100025": -5}})), "schema", "greater than or equal to 0"),
    (b"3173", orjson.dumps(envelope("3173011005119", CONSISTENT_DOC, jenis="dprd")), "schema", "jenis"),
    (None, b'{"kode_tps": "3173011005116", "jenis": "ppwp", "doc": {"ts": "\xff\xfe"}}', "not_json", "JSON"),
    (None, b"", "not_json", "JSON"),
]  # fmt: skip
#: Over the 1 MiB limit (a real document is ~1 KB).
OVERSIZED = (b"3173", orjson.dumps(envelope("3173011005117", {**CONSISTENT_DOC, "padding": "x" * (1 << 20)})),
             "too_large", "exceeds")  # fmt: skip


def test_malformed_messages_are_dead_lettered_with_reasons_while_valid_ones_flow(workers: Workers):
    check_dead_lettering(workers, "dlq", MALFORMED)


def test_an_oversized_message_is_dead_lettered_and_the_stream_goes_on(workers: Workers):
    assert len(OVERSIZED[1]) > 1 << 20
    check_dead_lettering(workers, "big", [OVERSIZED, MALFORMED[0]])


def check_dead_lettering(workers: Workers, name: str, bad: list[tuple[bytes | None, bytes, str, str]]) -> None:
    """Publish ``bad`` interleaved with valid submissions; every bad one must be dead-lettered with its
    reason, every valid one processed, and the worker's counters must account for all of them."""
    settings = workers.settings(name)
    ensure_topics(settings)
    workers.start(settings)

    # Valid submissions: consistent forms (no alert) and the real misread form under several TPS codes.
    valid = []
    for n in range(12):
        kode = f"3173011{n + 1:03d}0{n % 9 + 1:02d}"
        valid.append(envelope(kode, MISREAD_DOC if n % 3 == 0 else CONSISTENT_DOC))
    valid_path = write_jsonl(workers.tmp_path / "valid.jsonl", valid)
    expected = {a.alert_id: a for a in offline_alerts(valid_path)}
    assert {a.kode_tps for a in expected.values()} == {e["kode_tps"] for e in valid if e["doc"] == MISREAD_DOC}

    producer = raw_producer(settings.bootstrap)
    sent_bad = []
    try:
        sequence = [("valid", v) for v in valid[:3]]
        for i, item in enumerate(bad):  # garbage, interleaved with the rest of the valid ones
            sequence.append(("bad", item))
            if i < len(valid) - 3:
                sequence.append(("valid", valid[3 + i]))
        sequence += [("valid", v) for v in valid[3 + len(bad) :]]
        assert sum(kind == "valid" for kind, _ in sequence) == len(valid)
        for kind, item in sequence:
            if kind == "valid":
                value = orjson.dumps({**item, "received_at": datetime.now(timezone.utc).isoformat()})
                producer.send(settings.topic_submissions, key=item["kode_tps"][:4].encode(), value=value)
            else:
                key, value, _, _ = item
                sent_bad.append(producer.send(settings.topic_submissions, key=key, value=value))
        producer.flush()
        for future in sent_bad:
            future.get(timeout=10)  # every message is on the topic (the producer allows 4 MiB)
    finally:
        producer.close()

    total = len(valid) + len(bad)
    letters_reader = TopicReader(settings.bootstrap, settings.topic_deadletter)
    alerts_reader = TopicReader(settings.bootstrap, settings.topic_alerts)
    try:
        wait_processed(settings, total, workers)
        letters = letters_reader.until(lambda m: len(m) >= len(bad), f"{len(bad)} dead letters", workers)
        alert_msgs = alerts_reader.until(lambda m: len(m) >= len(expected), f"{len(expected)} alerts", workers)
    finally:
        letters_reader.close()
        alerts_reader.close()

    assert len(letters) == len(bad)
    by_original = {}
    for message in letters:
        letter = DeadLetter.model_validate_json(message.value)
        by_original[letter.original_bytes()] = (message, letter)
    for key, value, code, word in bad:
        assert value in by_original, f"not dead-lettered: {value[:80]!r}"
        message, letter = by_original[value]
        assert letter.code == code, (value[:80], letter.code, letter.reason)
        assert word.lower() in letter.reason.lower(), (value[:80], letter.reason)
        assert letter.key == (base64.b64encode(key).decode() if key is not None else None)
        assert message.key == key  # the dead letter keeps the original key
        assert letter.topic == settings.topic_submissions
        assert 0 <= letter.partition < settings.partitions and letter.offset >= 0
        assert abs(datetime.now(timezone.utc) - letter.failed_at) < timedelta(minutes=2)
    # Every dead letter names a distinct message of the submissions topic.
    assert len({(letter.partition, letter.offset) for _, letter in by_original.values()}) == len(bad)

    alerts = alert_messages(alert_msgs)
    assert Counter(a["alert_id"] for a in alerts) == Counter(set(expected))  # each once, none missing
    for alert in alerts:
        assert without_observed_at(alert) == without_observed_at(expected[alert["alert_id"]].model_dump(mode="json"))

    samples = metrics_samples(settings.web_port)
    outcomes = {dict(labels)["outcome"]: value for labels, value in by_name(samples, "pantau_submissions_total").items()}
    assert outcomes == {"processed": len(valid), "deadlettered": len(bad), "redelivered": 0}  # no crash: nothing redone
    assert sum(outcomes.values()) == total  # every consumed message is processed or dead-lettered
    deadletters = {dict(labels)["reason"]: value for labels, value in by_name(samples, "pantau_deadletters_total").items()}
    assert deadletters == dict(Counter(code for _, _, code, _ in bad))
    assert sum(by_name(samples, "pantau_alerts_total").values()) == len(expected)


# --------------------------------------------------------------------------------------------------
# 3. A restarted worker resumes with its table state


def phase_documents(dki: list[dict]) -> tuple[list[dict], list[dict]]:
    """First and second versions of some TPS documents.

    * real DKI forms with an OCR misread, then corrected as pantau suggested (``revision.resolved``);
    * the real misread form, then corrected to 10 (``revision.resolved``);
    * consistent forms whose votes then change (``revision.changed``).
    """
    suggested = {}
    for alert in replay(read_records(demo_data())):
        if alert.detector == "ocr.misread" and alert.suggestions and alert.kode_tps not in suggested:
            suggested[alert.kode_tps] = alert.suggestions
    first, second = [], []
    by_kode = {e["kode_tps"]: e for e in dki}
    for kode in sorted(suggested)[:6]:
        first.append(copy.deepcopy(by_kode[kode]))
        corrected = copy.deepcopy(by_kode[kode])
        for suggestion in suggested[kode]:
            half, name = suggestion.field.split(".", 1)
            corrected["doc"][half][name] = suggestion.proposed
        second.append(corrected)
    misread_codes = ["3171011001001", "3172021002002", "3101011003003"]
    for kode in misread_codes:
        first.append(envelope(kode, MISREAD_DOC))
        second.append(envelope(kode, {**MISREAD_DOC, "chart": {**MISREAD_DOC["chart"], "100027": 10}}))
    for n, kode in enumerate(["3173011005116", "3174031004005", "3175041006007"]):
        first.append(envelope(kode, CONSISTENT_DOC))
        changed = copy.deepcopy(CONSISTENT_DOC)
        changed["chart"]["100025"] += 10 * (n + 1)
        changed["chart"]["100026"] -= 10 * (n + 1)
        second.append(envelope(kode, changed))
    return first, second


def test_a_restarted_worker_resumes_with_its_table_state_and_publishes_no_duplicate(workers: Workers, dki_envelopes):
    settings = workers.settings("restart")
    first, second = phase_documents(dki_envelopes)
    first_path = write_jsonl(workers.tmp_path / "first.jsonl", first)
    second_path = write_jsonl(workers.tmp_path / "second.jsonl", second)
    expected_first = {a.alert_id: a for a in offline_alerts(first_path)}
    expected = {a.alert_id: a for a in offline_alerts(first_path, second_path)}
    resolved = [a for a in expected.values() if a.detector == "revision.resolved"]
    changed = [a for a in expected.values() if a.detector == "revision.changed"]
    # The offline replay of the sequence does carry the revisions this test looks for.
    assert len(resolved) >= 5 and len(changed) >= 3
    assert {a.kode_tps for a in resolved} >= {e["kode_tps"] for e in first if e["doc"] == MISREAD_DOC}
    assert all(set(a.resolves) <= set(expected_first) and a.resolves for a in resolved)

    ensure_topics(settings)
    reader = TopicReader(settings.bootstrap, settings.topic_alerts)
    try:
        worker = workers.start(settings)
        publish(read_records(first_path), settings.bootstrap, settings.topic_submissions)
        wait_processed(settings, len(first), workers)
        reader.until(lambda m: {orjson.loads(x.value)["alert_id"] for x in m} >= set(expected_first),
                     "the first versions' alerts", workers)  # fmt: skip
        code = workers.stop(worker)
        assert code == 0, f"the worker did not stop cleanly (status {code})\n{workers.log_tail()}"

        # A new process, same app id (consumer group, changelog topic) and data dir, another web port.
        restarted = dataclasses.replace(settings, web_port=free_port())
        workers.start(restarted)
        publish(read_records(second_path), settings.bootstrap, settings.topic_submissions)
        wait_processed(restarted, len(second), workers)
        messages = reader.until(lambda m: {orjson.loads(x.value)["alert_id"] for x in m} >= set(expected),
                                "the second versions' revision alerts", workers)  # fmt: skip
    finally:
        reader.close()

    alerts = alert_messages(messages)
    assert_same_alerts(alerts, expected)
    stream = {a["alert_id"]: a for a in alerts}
    # The revision alerts could only come from the table state restored after the restart.
    for alert in resolved:
        assert set(stream[alert.alert_id]["resolves"]) <= set(expected_first)
    assert {a["detector"] for a in alerts if a["alert_id"] not in expected_first} >= {"revision.resolved", "revision.changed"}
    # The restarted worker consumed only the second versions: offsets were committed on the way out.
    samples = metrics_samples(restarted.web_port)
    assert by_name(samples, "pantau_submissions_total")[(("outcome", "processed"),)] == len(second)


# --------------------------------------------------------------------------------------------------
# 4. /health and /metrics


def test_health_and_metrics_endpoints(workers: Workers):
    settings = workers.settings("web")
    with pytest.raises(OSError):  # nothing listens before the worker starts
        urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/health", timeout=2)
    ensure_topics(settings)
    workers.start(settings)

    with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/health", timeout=5) as response:
        assert response.status == 200
        health = json.load(response)
    assert health["status"] == "ok" and health["app"] == settings.app_id
    assert health["assigned_partitions"] >= settings.partitions  # the submissions topic, and the table's changelog
    assert health["submission_partitions"] == list(range(settings.partitions)) and health["assessor"] is True

    path = write_jsonl(workers.tmp_path / "few.jsonl", [envelope("3173011002090", MISREAD_DOC),
                                                        envelope("3173011005116", CONSISTENT_DOC)])  # fmt: skip
    expected = offline_alerts(path)
    publish(read_records(path), settings.bootstrap, settings.topic_submissions)
    wait_processed(settings, 2, workers)
    # The lag gauge is refreshed every 2 s; it reaches 0 once the worker has caught up.
    samples = wait_for(lambda: (s := metrics_samples(settings.web_port))
                       and by_name(s, "pantau_consumer_lag_messages")
                       and by_name(s, "pantau_alert_latency_seconds_count").get(()) == len(expected)
                       and sum(by_name(s, "pantau_consumer_lag_messages").values()) == 0 and s,
                       "the lag gauge and latency histogram", workers)  # fmt: skip

    assert by_name(samples, "pantau_submissions_total")[(("outcome", "processed"),)] == 2
    alerts_total = by_name(samples, "pantau_alerts_total")
    assert Counter({tuple(sorted({"detector": a.detector, "severity": a.severity, "provinsi": a.region[:2]}.items())): 1
                    for a in expected}) == Counter({k: int(v) for k, v in alerts_total.items()})  # fmt: skip
    first_seen = by_name(samples, "pantau_tps_first_seen_total")
    assert {labels: n for labels, n in first_seen.items() if n} == {(("jenis", "ppwp"), ("provinsi", "31")): 2}
    assert first_seen[(("jenis", "pdpr"), ("provinsi", "34"))] == 0  # every series from zero, for increase()
    assert by_name(samples, "pantau_tps_expected")[(("provinsi", "31"),)] == 30_766
    buckets = by_name(samples, "pantau_alert_latency_seconds_bucket")
    assert buckets[(("le", "+Inf"),)] == len(expected)
    assert buckets[(("le", "60.0"),)] == len(expected)  # receipt to alert well within a minute
    lag = by_name(samples, "pantau_consumer_lag_messages")
    assert {dict(labels)["partition"] for labels in lag} <= {str(p) for p in range(settings.partitions)}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/no-such-page", timeout=5)
    assert missing.value.code == 404


# --------------------------------------------------------------------------------------------------
# pantau replay --broker


def test_replay_to_the_broker_publishes_keyed_stamped_envelopes(broker: EmbeddedBroker, tmp_path: Path, dki_envelopes):
    topic = f"cli-{uuid.uuid4().hex[:8]}.submissions"
    create_topics(broker.bootstrap, {topic: 4})
    envelopes = [e for e in dki_envelopes if e["kode_tps"].startswith("3101")][:3]
    envelopes += [e for e in dki_envelopes if e["kode_tps"].startswith("3173")][:3]
    invalid = b'{"kode_tps": "12", "jenis": "ppwp", "doc": {}}'
    path = tmp_path / "few.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in envelopes[:3]) + invalid + b"\n"
                     + b"".join(orjson.dumps(e) + b"\n" for e in envelopes[3:]))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")} | {"PANTAU_TOPIC_SUBMISSIONS": topic}
    before = datetime.now(timezone.utc)
    done = subprocess.run([sys.executable, "-m", "pantau.cli", "replay", "--broker", broker.bootstrap, str(path)],
                          check=False, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    after = datetime.now(timezone.utc)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())  # rich wraps the line at the terminal width
    assert "published 7 messages" in said and "1 of them failed validation" in said, said

    consumer = topic_consumer(broker.bootstrap, topic, poll_timeout=1.0)
    try:
        messages = []
        deadline = time.monotonic() + 20
        while len(messages) < 7 and time.monotonic() < deadline:
            messages.extend(consumer)
    finally:
        consumer.close()
    assert len(messages) == 7
    unkeyed = [m for m in messages if m.key is None]
    assert [m.value for m in unkeyed] == [invalid]  # refused records go as they are, for the dead-letter topic
    published = {}
    for message in messages:
        if message.key is None:
            continue
        value = orjson.loads(message.value)
        assert message.key == value["kode_tps"][:4].encode()
        received = datetime.fromisoformat(value.pop("received_at"))
        assert before - timedelta(seconds=1) <= received <= after
        published[value["kode_tps"]] = value
    assert published == {e["kode_tps"]: e for e in envelopes}
    # Messages of one kab/kota share a partition (the key decides it), so their order is kept.
    partitions = {}
    for message in messages:
        if message.key is not None:
            partitions.setdefault(message.key, set()).add(message.partition)
    assert {k: len(p) for k, p in partitions.items()} == {b"3101": 1, b"3173": 1}


# --------------------------------------------------------------------------------------------------
# 6. Regional statistics: sums from the inspecting agent, alerts from the assessor


def test_regional_alerts_flow_from_the_workers_sums_through_the_assessor(workers: Workers, tmp_path: Path):
    from pantau.simulate import simulate

    night = tmp_path / "night.jsonl"
    simulate(night, kabkota=["3402"], seed=11, synthetic_registry=True, complete=True,
             anomalies=["stuffing_extreme:rate=0.3,target=340206", "fabricated:rate=0.3,target=340210"])  # fmt: skip
    offline = {a.alert_id: a for a in offline_alerts(night)}  # under 5,000 documents: one assessment, at the end
    flagged_offline = {a.region for a in offline.values() if a.level == "kecamatan" and a.detector != "stat.cleared"}
    assert flagged_offline == {"340206", "340210"}

    # Published before the worker starts, and its first assessment 20 s after: the assessor, like the
    # offline replay, looks once at the whole night. (Each look is a BH test of its own; a worker that
    # looks while the night fills in can raise a region a single final look would not.)
    settings = dataclasses.replace(workers.settings("regional"), assess_interval=20.0)
    ensure_topics(settings)
    summary = publish(read_records(night), settings.bootstrap, settings.topic_submissions)
    reader = TopicReader(settings.bootstrap, settings.topic_alerts)
    try:
        workers.start(settings)
        wait_processed(settings, summary.published, workers)
        messages = reader.until(lambda m: len(m) >= len(offline), f"{len(offline)} alerts", workers)
    finally:
        reader.close()
    alerts = alert_messages(messages)
    assert_same_alerts(alerts, offline)  # regional alerts included: same ids and bodies, none twice
    regional = [a for a in alerts if a["level"] != "tps"]
    assert {a["region"] for a in regional if a["level"] == "kecamatan"} == {"340206", "340210"}
    assert all("not proof of fraud" in a["reason_en"] for a in regional)


# --------------------------------------------------------------------------------------------------
# 7. Desk verdicts: a false alarm is not published again


def desk_verdict(alert: dict, decision: str, decided_at: datetime, verdict_id: str) -> Verdict:
    return Verdict(verdict_id=verdict_id, alert_id=alert["alert_id"], detector=alert["detector"], jenis=alert["jenis"],
                   kode_tps=alert["kode_tps"], region=alert["region"], decision=decision, note="Foto C.Hasil diperiksa",
                   decided_by="rina", role="verifier", decided_at=decided_at)  # fmt: skip


def test_a_false_alarm_verdict_suppresses_the_same_alert_when_the_form_flips_back(workers: Workers, tmp_path: Path):
    """The verdicts go to one worker; the flip-flop (A → B → A) that repeats the alert to its restarted
    successor, which knows the verdict only from the suppression table's changelog."""
    settings = workers.settings("verdicts")
    ensure_topics(settings)
    reader = topic_consumer(settings.bootstrap, settings.topic_submissions)
    try:  # co-partitioned: the verdicts of a kab/kota land on the partition of its submissions
        assert reader.partitions_for_topic(settings.topic_verdicts) == reader.partitions_for_topic(settings.topic_submissions)
    finally:
        reader.close()
    kode = "3173011002090"
    fixed = {**MISREAD_DOC, "chart": {**MISREAD_DOC["chart"], "100027": 10}}
    first = write_jsonl(tmp_path / "first.jsonl", [envelope(kode, MISREAD_DOC)])
    later = write_jsonl(tmp_path / "later.jsonl", [envelope(kode, fixed), envelope(kode, MISREAD_DOC)])  # A → B → A

    worker = workers.start(settings)
    alerts_reader = TopicReader(settings.bootstrap, settings.topic_alerts)
    letters_reader = TopicReader(settings.bootstrap, settings.topic_deadletter)
    try:
        publish(read_records(first), settings.bootstrap, settings.topic_submissions)
        first_alerts = alert_messages(alerts_reader.until(lambda m: len(m) >= 3, "the misread form's alerts", workers))
        by_detector = {a["detector"]: a for a in first_alerts}
        assert set(by_detector) == {"form.sum_valid", "form.capacity", "ocr.misread"}
        target, other = by_detector["form.sum_valid"], by_detector["ocr.misread"]

        now = datetime.now(timezone.utc)
        false_alarm = desk_verdict(target, "false_alarm", now, "v-2")
        late_confirm = desk_verdict(target, "confirmed", now - timedelta(minutes=5), "v-1")  # older, arriving late
        mis_keyed = desk_verdict(other, "false_alarm", now, "v-3")
        producer = raw_producer(settings.bootstrap)
        try:
            for verdict in (false_alarm, late_confirm):
                producer.send(settings.topic_verdicts, key=verdict_key(verdict), value=verdict.model_dump_json().encode())
            producer.send(settings.topic_verdicts, key=b"3174", value=mis_keyed.model_dump_json().encode())
            producer.send(settings.topic_verdicts, key=b"3173", value=b"{not a verdict")
            producer.flush()
        finally:
            producer.close()
        wait_for(lambda: (metric_total(settings.web_port, "pantau_verdicts_total") or 0) >= 4, "4 verdicts on /metrics", workers)
        letters = letters_reader.until(lambda m: len(m) >= 2, "the invalid verdicts' dead letters", workers)
        first_samples = metrics_samples(settings.web_port)
        assert workers.stop(worker) == 0, workers.log_tail()

        restarted = dataclasses.replace(settings, web_port=free_port())
        workers.start(restarted)
        publish(read_records(later), settings.bootstrap, settings.topic_submissions)
        wait_processed(restarted, 2, workers)
        messages = alerts_reader.until(lambda m: any(orjson.loads(x.value)["detector"] == "revision.flipflop" for x in m),
                                       "the flip-flop's alerts", workers)  # fmt: skip
    finally:
        alerts_reader.close()
        letters_reader.close()

    ids = Counter(a["alert_id"] for a in alert_messages(messages))
    assert ids[target["alert_id"]] == 1  # published before the verdict, never after
    assert ids[other["alert_id"]] == 2  # the same form's other finding still flows (the mis-keyed verdict is not applied)
    detectors = {a["detector"] for a in alert_messages(messages)[3:]}
    assert detectors == {"revision.resolved", "revision.flipflop", "revision.changed", "form.capacity", "ocr.misread"}
    # The offline audit with the same verdicts: the same alerts but the suppressed one.
    suppressions = Suppressions()
    for verdict in (false_alarm, late_confirm):
        suppressions.learn(verdict)
    assert set(ids) - {target["alert_id"]} == {a.alert_id for a in replay(records_of([first, later]), suppressions=suppressions)}

    codes = {DeadLetter.model_validate_json(m.value).code: DeadLetter.model_validate_json(m.value) for m in letters}
    assert set(codes) == {"key", "not_json"} and len(letters) == 2
    assert all(letter.topic == settings.topic_verdicts for letter in codes.values())
    assert "3173" in codes["key"].reason and codes["key"].original_bytes() == mis_keyed.model_dump_json().encode()

    def outcomes(samples: dict) -> dict[str, float]:
        return {dict(labels)["outcome"]: value for labels, value in by_name(samples, "pantau_verdicts_total").items()}

    assert outcomes(first_samples) == {"applied": 1, "outdated": 1, "deadlettered": 2}
    assert by_name(first_samples, "pantau_deadletters_total") == {(("reason", "key"),): 1.0, (("reason", "not_json"),): 1.0}
    assert by_name(first_samples, "pantau_submissions_total")[(("outcome", "deadlettered"),)] == 0
    samples = metrics_samples(restarted.web_port)
    assert by_name(samples, "pantau_alerts_suppressed_total") == {(("detector", "form.sum_valid"),): 1.0}
    # The restarted worker consumed no verdict again: it suppressed from the table it recovered.
    assert outcomes(samples) == {"applied": 0, "outdated": 0, "deadlettered": 0}
    assert by_name(samples, "pantau_submissions_total")[(("outcome", "processed"),)] == 2

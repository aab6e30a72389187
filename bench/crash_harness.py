"""Crash consistency: one worker killed with SIGKILL at random moments gives what an uninterrupted one gives.

    python bench/crash_harness.py [--n 100000] [--kills 5] [--seed 1] [--partitions 16] [--keep]
                                  [--workdir DIR] [--stall-timeout 300]

On one embedded Tansu broker (127.0.0.1, started and stopped here):

1. **input**: ``--n`` messages of a simulated night (``pantau.simulate.simulate_lines``: synthetic
   registry, complete forms, every anomaly at its default rate -- OCR misreads and typos, mostly
   corrected later, duplicates, stuffing, fabricated counts -- and halves of forms arriving
   separately), the provinces chosen so that they hold at least ``--n`` lines, cut at ``--n`` in
   arrival order; every 500th message is replaced by its first half (truncated JSON, kept under its
   kab/kota key) to be dead-lettered. The bytes are encoded once and published identically twice.
2. **clean run**: the messages on topics and a consumer group (app id) of their own, one ``pantau
   worker`` (:func:`pantau.demo.start_worker`: the embedded-broker settings of ``EMBEDDED_WORKER_ENV``,
   a 3 s session timeout, one changelog record per produce batch, the ``memory://`` table store) that
   runs until the group's committed offsets reach the end of every partition, then stops (SIGTERM).
3. **crash run**: the same messages on fresh topics and a fresh group, one worker with its own
   settings, killed with SIGKILL ``--kills`` times and restarted each time with the same settings
   (app id, topics, data dir, web port) until every offset is committed. The kills come at random
   moments (``--seed``): when the messages consumed reach a random share (5-90%) of the input, plus a
   random 0-0.5 s, so they land in any phase of a batch (inspecting, publishing alerts, writing the
   changelogs, committing offsets) -- or, when two thresholds are close, in the next worker's startup.
   A restarted worker waits for the killed member's session to expire (3 s), recovers its tables
   from the changelog topics (the memory store keeps nothing on disk) and redoes what was consumed
   but not committed: what its recovered states already hold (by the source offset stored with each
   state, stream/app.py) is skipped and counted (``redelivered``), the rest inspected again.
4. **offline replay** of the same messages (``pantau.replay``), counting every alert each time it
   is raised, as one uninterrupted worker publishes it.

Then it checks (PASS/FAIL, exit status 1 on any FAIL):

(a) every message was consumed (committed offsets = published) and ended processed or dead-lettered
    exactly as in the clean run: the same set of input messages (by source partition and offset)
    dead-lettered, each dead letter carrying the exact bytes published at its source offset;
(b) the SET of alert ids equals the clean run's, and every copy of an alert is byte for byte one the
    clean run published under that id (a resubmitted form repeats a finding with its own observed_at);
(c) no alert copy lost: every id is on the alerts topic at least as often as the clean run
    published it; the copies beyond that are duplicates from redelivery (at-least-once, allowed,
    counted). The clean run itself is checked against the offline replay: the same ids, each as often
    as the replay raises it;
(d) the desk: every alert message, duplicates included, goes through
    :func:`pantau.desk.feed.apply_message` into a fresh SQLite desk database: one case per case key
    (cases = distinct case keys of the alert set), one alert row per distinct id;
(d') and it ends with the same cases (status, severity, open detectors) and alert rows (status,
    resolved by) as a desk fed the clean run's alerts;
(e) the worker's state after the crashes equals the clean run's: the last value of every key in the
    changelog topics of the revision table, the region table (region sums, peer histograms) and the
    assessor's sums -- what every later alert is computed from -- source positions included.

The regional assessor's *timer* is off in both runs (``PANTAU_ASSESS_INTERVAL`` = 10^6 s): each
regional assessment is a Benjamini-Hochberg family of its own, so which regions a run flags depends
on when it looks, and two clean runs would not agree either. Its input is compared instead, (e).

**Size.** Each restart recovers the tables from the changelogs' beginning (memory store), and Tansu's
memory engine serves a long partition of one-record batches (``PANTAU_CHANGELOG_BATCH_BYTES=1``, forced
by its end-offset bug, stream/broker.py) superlinearly slowly: reading back 20,000 / 30,000 / 40,000 /
60,000 such records took 0.4 / 2.2 / 4.5 / 16 s. With 4 partitions a worker restarted
after ~70,000 submissions was not ready within 600 s; spread over more partitions each is short
enough: ``--n 100000 --partitions 16`` (5 kills) takes ~8.5 minutes on this 2-core machine (the sixth
worker ready ~30 s after its start), ``--n 50000`` with 4 partitions ~5 minutes, 20,000 ~2 minutes,
3,000 (2 kills) ~35-45 s. Every process it
starts is stopped on exit, Ctrl-C and SIGTERM. ``run()`` is the programmatic entry point
(tests/test_crash.py).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pantau.demo import metric_total, start_worker, stop_worker
from pantau.stream.app import ASSESSOR_SUMS_TABLE, REGION_TABLE, REVISION_TABLE, ensure_topics
from pantau.stream.broker import EmbeddedBroker, free_port
from pantau.stream.settings import Settings

#: Every this many messages, one is truncated JSON (dead-lettered as not_json).
INVALID_EVERY = 500
#: No regional assessment during a run (see the module docstring).
NO_ASSESSMENT = 1e6
#: Approximate lines per province of a ppwp night on the synthetic registry (complete forms, seed 1).
PROVINCE_LINES = {
    "65": 3_477, "75": 5_410, "91": 4_845, "19": 6_358, "76": 6_524, "82": 6_400, "94": 6_952, "81": 8_589,
    "21": 9_135, "17": 9_525, "62": 12_031, "74": 12_633, "71": 12_658, "72": 14_655, "15": 17_270,
    "64": 17_585, "34": 18_473, "51": 19_665, "63": 20_897, "11": 24_718, "52": 25_038, "53": 25_731,
    "13": 26_981, "61": 27_179, "14": 29_921, "18": 39_672, "16": 40_030, "73": 40_567, "36": 51_475,
    "12": 70_656,
}  # fmt: skip
#: Provinces taken in this order when one is not enough (100,000: 34+51+61+63+64).
LARGE_FIRST = ["34", "51", "61", "63", "64", "73", "16", "18", "14", "13", "53", "52", "11", "36", "12"]
#: Log lines after which a worker lives on but never consumes (again).
FATAL = (b"Crashed reason=", b"Error in recovery")
#: Longest a phase may go without progress (worker start, recovery, processing) before the run fails.
STALL_TIMEOUT = 300.0
#: Seconds between two progress lines.
PROGRESS_EVERY = 15.0

Say = Callable[[str], None]


# --------------------------------------------------------------------------------------------------
# Input


@dataclass
class Inputs:
    messages: list[tuple[bytes, bytes]]  # (key, value) in publishing order
    invalid: set[int]  # indexes of the truncated messages
    provinces: list[str]
    path: Path  # the values, one per line (the offline replay reads it)


def choose_provinces(n: int) -> list[str]:
    """The smallest single province with ``n`` lines or more, else large ones until they hold ``n``."""
    single = sorted((lines, p) for p, lines in PROVINCE_LINES.items() if lines >= n * 1.05)
    if single:
        return [single[0][1]]
    chosen, total = [], 0
    for p in LARGE_FIRST + sorted(set(PROVINCE_LINES) - set(LARGE_FIRST)):
        chosen.append(p)
        total += PROVINCE_LINES[p]
        if total >= n * 1.02:
            return chosen
    raise ValueError(f"--n {n:,} is more than the provinces listed here hold ({total:,} lines)")


def build_inputs(n: int, seed: int, workdir: Path) -> Inputs:
    from pantau.simulate import simulate_lines

    provinces = choose_provinces(n)
    lines, _ = simulate_lines(workdir / "night.truth.jsonl", provinces=provinces, seed=seed, complete=True, images=False,
                              synthetic_registry=True)  # fmt: skip
    messages, invalid = [], set()
    for i, line in enumerate(itertools.islice(lines, n)):
        line = line.rstrip(b"\n")
        key = orjson.loads(line)["kode_tps"][:4].encode()
        if i % INVALID_EVERY == INVALID_EVERY - 1:
            line = line[: len(line) // 2]  # truncated JSON, under its kab/kota key
            invalid.add(i)
        messages.append((key, line))
    if len(messages) < n:
        raise ValueError(f"provinces {provinces} gave only {len(messages):,} lines, fewer than {n:,}")
    path = workdir / "input.jsonl"
    path.write_bytes(b"".join(value + b"\n" for _, value in messages))
    return Inputs(messages, invalid, provinces, path)


def publish(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """Send every message; return each one's (partition, offset) once the broker has acknowledged all."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5, batch_size=256 * 1024,
                             max_request_size=4 << 20, max_in_flight_requests_per_connection=1)  # fmt: skip
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.get(timeout=60) for f in futures)]
    finally:
        producer.close()


# --------------------------------------------------------------------------------------------------
# Reading the broker


def read_topic(bootstrap: str, topic: str, timeout: float = STALL_TIMEOUT) -> list[Any]:
    """Every record of ``topic``, from the beginning up to the high watermark of each partition.

    The high watermark comes from the Fetch responses (Tansu's ListOffsets is wrong after a
    multi-record batch: stream/broker.py), so reading stops at the end, without waiting for idleness.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)  # fmt: skip
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout
        while not partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no metadata for topic {topic}")
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while True:
            for batch in consumer.poll(timeout_ms=500, max_records=20_000).values():
                records.extend(batch)
            ends = [(consumer.highwater(tp), consumer.position(tp)) for tp in tps]
            if all(hw is not None and position >= hw for hw, position in ends):
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not at the high watermarks within {timeout:.0f} s: {ends}")
    finally:
        consumer.close()


def high_watermarks(bootstrap: str, topic: str, timeout: float = STALL_TIMEOUT) -> dict[int, int]:
    """The end offset of each partition of ``topic``, from a Fetch response's high watermark (Tansu's
    ListOffsets can be too small: stream/broker.py), without reading the topic: one fetch from near
    the end, where ListOffsets points."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_partition_fetch_bytes=1 << 20)  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            raise TimeoutError(f"no metadata for topic {topic}")
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        deadline = time.monotonic() + timeout
        while any(consumer.highwater(tp) is None for tp in tps):
            consumer.poll(timeout_ms=200, max_records=1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: no high watermark within {timeout:.0f} s")
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        consumer.close()


def latest_values(records: Iterable[Any]) -> dict[bytes, bytes]:
    """The last value of every key (a changelog topic read to its end: the table's state)."""
    state: dict[bytes, bytes] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        state[record.key] = record.value
    return state


def submissions_outcome(port: int, outcome: str) -> int:
    """A worker's ``pantau_submissions_total{outcome=...}`` (0 when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    sample = f'pantau_submissions_total{{outcome="{outcome}"}} '
    return sum(int(float(line[len(sample):])) for line in text.splitlines() if line.startswith(sample))


def healthy(port: int) -> bool:
    """Whether the worker's /health says ok (partitions assigned, not rebalancing or recovering)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Offsets:
    """The consumer group's committed offsets (OffsetFetch; joins no group)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int):
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group, enable_auto_commit=False)
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def committed(self) -> dict[int, int]:
        return {tp.partition: self.consumer.committed(tp) or 0 for tp in self.tps}

    def close(self) -> None:
        self.consumer.close(autocommit=False)


# --------------------------------------------------------------------------------------------------
# Runs


@dataclass
class Kill:
    number: int
    at: float  # seconds since the run's first worker started
    uptime: float  # seconds the killed worker had run
    threshold: int  # the kill was due once this many messages were consumed
    consumed: int  # messages consumed (committed before the worker started + its counter), just before the kill
    committed: int  # messages committed when it died: what its successor starts from
    ready: float | None = None  # seconds from its start until its /health said ok (None: killed before)


@dataclass
class Run:
    name: str
    settings: Settings
    seconds: float = 0.0
    starts: int = 0
    kills: list[Kill] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    position: list[tuple[int, int]] = field(default_factory=list)  # input index -> (partition, offset)
    alerts: list[Any] = field(default_factory=list)  # records of the alerts topic
    deadletters: list[Any] = field(default_factory=list)
    tables: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    table_records: dict[str, int] = field(default_factory=dict)  # changelog length per table
    logs: list[Path] = field(default_factory=list)
    redelivered: int = 0  # submissions its workers skipped as already held by their state (read just before each kill)


class WorkerFailed(RuntimeError):
    pass


class Runner:
    """Starts, watches, kills and stops the worker processes of the runs; ``close()`` stops any left."""

    def __init__(self, broker: EmbeddedBroker, workdir: Path, partitions: int, say: Say, stall_timeout: float = STALL_TIMEOUT):
        self.broker, self.workdir, self.partitions, self.say = broker, workdir, partitions, say
        self.stall_timeout = stall_timeout
        self.running: list[subprocess.Popen] = []

    def settings(self, name: str) -> Settings:
        unique = f"crash-{name}-{uuid.uuid4().hex[:8]}"
        return Settings(
            broker=self.broker.bootstrap, app_id=unique, partitions=self.partitions,
            topic_submissions=f"{unique}.submissions", topic_alerts=f"{unique}.alerts",
            topic_deadletter=f"{unique}.deadletter", topic_verdicts=f"{unique}.verdicts",
            topic_regional=f"{unique}.regional", data_dir=self.workdir / f"data-{name}", web_port=free_port(),
            assess_interval=NO_ASSESSMENT,
        )  # fmt: skip

    def start(self, run: Run) -> subprocess.Popen:
        s = run.settings
        log = self.workdir / f"worker-{run.name}-{len(run.logs) + 1}.log"
        run.logs.append(log)
        env = {"PANTAU_TOPIC_SUBMISSIONS": s.topic_submissions, "PANTAU_TOPIC_ALERTS": s.topic_alerts,
               "PANTAU_TOPIC_DEADLETTER": s.topic_deadletter, "PANTAU_TOPIC_VERDICTS": s.topic_verdicts,
               "PANTAU_TOPIC_REGIONAL": s.topic_regional, "PANTAU_ASSESS_INTERVAL": str(s.assess_interval)}  # fmt: skip
        process = start_worker(s, log, env)
        self.running.append(process)
        run.starts += 1
        return process

    def check(self, run: Run, process: subprocess.Popen | None) -> None:
        """Raise if the worker exited or its log shows an agent crash or a failed table recovery."""
        if process is not None and process.poll() is not None:
            raise WorkerFailed(f"{run.name}: the worker exited with status {process.returncode}\n{self.tail(run)}")
        data = run.logs[-1].read_bytes() if run.logs and run.logs[-1].exists() else b""
        for marker in FATAL:
            at = data.find(marker)
            if at >= 0:
                line = data[at : data.find(b"\n", at)].decode("utf-8", "replace")
                raise WorkerFailed(f"{run.name}: {line}\n{self.tail(run)}")

    def drain_regional(self, run: Run, process: subprocess.Popen) -> None:
        """Wait until the assessor has committed every region sums message on the regional topic.

        Each batch publishes its region sums before its offsets are committed, so once every submission
        is committed the regional topic is complete; stopping the worker before its assessor has taken
        the last of them would leave stale sums in the assessor's table (check (e)) in either run.
        """
        s = run.settings
        ends = high_watermarks(s.bootstrap, s.topic_regional)
        offsets = Offsets(s.bootstrap, s.app_id, s.topic_regional, len(ends))
        try:
            deadline = time.monotonic() + self.stall_timeout
            while not all(offsets.committed().get(p, 0) >= end for p, end in ends.items()):
                self.check(run, process)
                if time.monotonic() > deadline:
                    raise WorkerFailed(f"{run.name}: the assessor did not commit the regional topic's end {dict(ends)} "
                                       f"within {self.stall_timeout:.0f} s (at {offsets.committed()})\n{self.tail(run)}")  # fmt: skip
                time.sleep(0.1)
        finally:
            offsets.close()

    def kill(self, process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.running.remove(process)

    def stop(self, process: subprocess.Popen) -> int:
        stop_worker(process, timeout=30.0)
        self.running.remove(process)
        return process.returncode

    def close(self) -> None:
        for process in list(self.running):
            stop_worker(process, timeout=10.0)
        self.running.clear()

    @staticmethod
    def tail(run: Run, size: int = 4000) -> str:
        if not run.logs or not run.logs[-1].exists():
            return "(no log)"
        return f"----- {run.logs[-1].name} -----\n" + run.logs[-1].read_bytes()[-size:].decode("utf-8", "replace")

    def run(self, run: Run, inputs: Inputs, kill_plan: list[tuple[int, float]]) -> None:
        """Publish, then process with one worker, killing it per ``kill_plan`` ((threshold, extra delay)
        each), until the group has committed every offset; stop it (SIGTERM) and read the topics."""
        s = run.settings
        ensure_topics(s)
        run.position = publish(s.bootstrap, s.topic_submissions, inputs.messages)
        ends: dict[int, int] = defaultdict(int)
        for partition, offset in run.position:
            ends[partition] = max(ends[partition], offset + 1)
        total = len(inputs.messages)
        offsets = Offsets(s.bootstrap, s.app_id, s.topic_submissions, s.partitions)
        plan = list(kill_plan)
        started = time.monotonic()
        try:
            while True:
                process = self.start(run)
                born = time.monotonic()
                base = sum(offsets.committed().values())
                consumed = base
                last_progress, progress_at = -1, time.monotonic()
                ready: float | None = None
                shown = time.monotonic()
                done: dict[int, int] = {}
                while True:
                    self.check(run, process)
                    if ready is None and healthy(s.web_port):
                        ready = time.monotonic() - born
                    if time.monotonic() - shown >= PROGRESS_EVERY:
                        shown = time.monotonic()
                        self.say(f"  {run.name}: worker {run.starts} up {shown - born:.0f} s"
                                 f"{'' if ready is None else f' (ready after {ready:.1f} s)'}: "
                                 f"{consumed:,} consumed, {sum(done.values()) if done else base:,} committed")  # fmt: skip
                    done = offsets.committed()
                    if all(done.get(p, 0) >= end for p, end in ends.items()):
                        break
                    counted = metric_total(s.web_port, "pantau_submissions_total")
                    if counted is not None:
                        consumed = base + int(counted)
                    if plan and consumed >= plan[0][0]:
                        break
                    mark = (sum(done.values()), consumed)
                    if mark != last_progress:
                        last_progress, progress_at = mark, time.monotonic()
                    elif time.monotonic() - progress_at > self.stall_timeout:
                        raise WorkerFailed(f"{run.name}: no progress in {self.stall_timeout:.0f} s "
                                           f"(committed {sum(done.values()):,} of {total:,})\n{self.tail(run)}")  # fmt: skip
                    time.sleep(0.1)
                if not plan:  # every submission committed
                    self.drain_regional(run, process)
                    break
                threshold, delay = plan.pop(0)
                time.sleep(delay)  # a random moment after the threshold: any phase of a batch
                seen = metric_total(s.web_port, "pantau_submissions_total")
                consumed = base + int(seen) if seen is not None else consumed
                run.redelivered += submissions_outcome(s.web_port, "redelivered")
                uptime = time.monotonic() - born
                self.kill(process)
                committed = sum(offsets.committed().values())
                kill = Kill(len(run.kills) + 1, time.monotonic() - started, uptime, threshold, consumed, committed, ready)
                run.kills.append(kill)
                self.say(f"  {run.name}: kill {kill.number} (SIGKILL) at {kill.at:.1f} s, worker up {uptime:.1f} s "
                         f"(ready after {'-' if ready is None else f'{ready:.1f} s'}): "
                         f"{consumed:,} consumed, {committed:,} committed")  # fmt: skip
            run.committed = offsets.committed()
            run.seconds = time.monotonic() - started
            run.redelivered += submissions_outcome(s.web_port, "redelivered")
            code = self.stop(process)
            if code != 0:
                self.say(f"  {run.name}: the worker exited with status {code} on SIGTERM")
        finally:
            offsets.close()
        run.alerts = read_topic(s.bootstrap, s.topic_alerts)
        run.deadletters = read_topic(s.bootstrap, s.topic_deadletter)
        for table in (REVISION_TABLE, REGION_TABLE, ASSESSOR_SUMS_TABLE):
            records = read_topic(s.bootstrap, f"{s.app_id}-{table}-changelog")
            run.table_records[table] = len(records)
            run.tables[table] = latest_values(records)


# --------------------------------------------------------------------------------------------------
# Comparisons


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    n: int
    kills_asked: int
    seed: int
    provinces: list[str]
    partitions: int
    invalid_injected: int = 0
    consumed: int = 0
    processed: int = 0
    deadlettered: int = 0
    deadletter_messages: int = 0
    redelivered: int = 0
    clean_deadlettered: int = 0
    alerts_distinct: int = 0
    alert_messages: int = 0
    clean_alert_messages: int = 0
    offline_distinct: int = 0
    duplicates: int = 0
    duplicated_ids: int = 0
    cases: int = 0
    case_keys: int = 0
    alert_rows: int = 0
    table_keys: dict[str, int] = field(default_factory=dict)
    table_records: dict[str, int] = field(default_factory=dict)  # the crash run's changelog records
    kills: list[Kill] = field(default_factory=list)
    starts: int = 0
    clean_seconds: float = 0.0
    crash_seconds: float = 0.0
    total_seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    workdir: str = ""
    #: For a failed check, a few of the differences in full (written to the work directory's differences.json).
    examples: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        out = [
            f"crash harness: {self.n:,} messages ({self.n - self.invalid_injected:,} simulated submissions of provinces "
            f"{'+'.join(self.provinces)}, {self.invalid_injected:,} truncated JSON), seed {self.seed}, "
            f"{self.partitions} partitions, one worker",
            f"clean run: no kill, {self.clean_seconds:.1f} s; crash run: {len(self.kills)} kills (SIGKILL) of {self.kills_asked} "
            f"asked, {self.starts} worker starts, {self.crash_seconds:.1f} s; everything {self.total_seconds:.1f} s",
        ]  # fmt: skip
        for k in self.kills:
            ready = "never ready" if k.ready is None else f"ready after {k.ready:.1f} s"
            out.append(f"  kill {k.number}: at {k.at:7.1f} s, worker up {k.uptime:5.1f} s ({ready}), due at {k.threshold:,} consumed; "
                       f"{k.consumed:,} consumed, {k.committed:,} committed -> {max(k.consumed - k.committed, 0):,} to redo")  # fmt: skip
        out += [
            f"submissions consumed     {self.consumed:,} of {self.n:,} (committed offsets)",
            f"processed                {self.processed:,} ({self.redelivered:,} more consumed again after a kill and "
            f"skipped: their states held them)",
            f"dead-lettered            {self.deadlettered:,} (clean run {self.clean_deadlettered:,}; {self.invalid_injected:,} injected; "
            f"{self.deadletter_messages:,} dead-letter messages)",
            f"alerts distinct          {self.alerts_distinct:,} (offline replay {self.offline_distinct:,})",
            f"alert messages           {self.alert_messages:,} (clean run {self.clean_alert_messages:,})",
            f"duplicates (redelivery)  {self.duplicates:,} messages, {self.duplicated_ids:,} alert ids",
            f"desk cases               {self.cases:,} (distinct case keys of the alerts {self.case_keys:,}); "
            f"alert rows {self.alert_rows:,}",
            "table state keys         " + ", ".join(f"{t} {n:,}" for t, n in self.table_keys.items())
            + " (changelog records of the crash run: " + ", ".join(f"{t} {n:,}" for t, n in self.table_records.items()) + ")",
        ]  # fmt: skip
        out += [f"{'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        out.append(f"{'PASS' if self.passed else 'FAIL'} ({sum(c.ok for c in self.checks)} of {len(self.checks)} checks)")
        return out


def digest(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()


def dead_lettered(run: Run, inputs: Inputs) -> tuple[set[int], list[str]]:
    """Input indexes dead-lettered by the run, and the problems found with its dead letters."""
    from pantau.schemas import DeadLetter

    index_of = {position: i for i, position in enumerate(run.position)}
    indexes, problems = set(), []
    for record in run.deadletters:
        letter = DeadLetter.model_validate_json(record.value)
        i = index_of.get((letter.partition, letter.offset))
        if letter.topic != run.settings.topic_submissions or i is None:
            problems.append(f"a dead letter names {letter.topic}[{letter.partition}]@{letter.offset}, not a published message")
            continue
        if digest(letter.original_bytes()) != digest(inputs.messages[i][1]):
            problems.append(f"the dead letter of message {i} does not carry its bytes")
        indexes.add(i)
    return indexes, problems


class Repeating:
    """The offline replay's inspector, counting every alert each time it is raised (as a worker publishes it)."""

    def __new__(cls):  # a TpsInspector subclass built lazily (heavy imports)
        from pantau.detectors.form import Capacity
        from pantau.detectors.inspector import TpsInspector
        from pantau.detectors.monitor import RegionalMonitor

        class _Repeating(TpsInspector):
            def __init__(self) -> None:
                super().__init__(Capacity(), monitor=RegionalMonitor())
                self.raised: Counter[str] = Counter()

            def __call__(self, tally):  # type: ignore[no-untyped-def]
                alerts = super().__call__(tally)
                self.raised.update(a.alert_id for a in alerts)
                return alerts

        return _Repeating()


def offline_counts(inputs: Inputs) -> Counter[str]:
    """Alert id -> how often one uninterrupted worker publishes it (TPS level: no assessor, as in the runs)."""
    from pantau.replay import replay
    from pantau.sources import read_records

    inspector = Repeating()
    for _ in replay(read_records(inputs.path), inspector=inspector):
        pass
    return inspector.raised


def desk_state(path: Path, records: list[Any], topic: str) -> dict[str, Any]:
    """Feed every alert record (duplicates included) through the desk's apply_message into a fresh SQLite DB."""
    from sqlalchemy import func, select

    from pantau.desk.db import AlertRecord, Case, connect
    from pantau.desk.feed import apply_message

    sessions = connect(f"sqlite:///{path}")
    applied = 0
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    with sessions() as session:
        for start in range(0, len(ordered), 500):
            for r in ordered[start : start + 500]:
                applied += apply_message(session, topic, f"{topic}:{r.partition}:{r.offset}", r.value, is_alert=True)
            session.commit()
        keys = session.execute(select(Case.key, func.count()).group_by(Case.key)).all()
        cases = {c.key: (c.status, c.severity_rank, c.detectors) for c in session.execute(select(Case)).scalars()}
        alerts = {a.alert_id: (a.status, a.resolved_by, a.case_id) for a in session.execute(select(AlertRecord)).scalars()}
        case_of = {c.id: c.key for c in session.execute(select(Case)).scalars()}
    sessions.kw["bind"].dispose()
    return {
        "applied": applied,
        "case_rows": sum(n for _, n in keys),
        "repeated_keys": [k for k, n in keys if n > 1],
        "cases": cases,
        "alerts": {i: (status, by, case_of[case]) for i, (status, by, case) in alerts.items()},
    }


def compare(report: Report, inputs: Inputs, clean: Run, crash: Run, offline: Counter[str], workdir: Path) -> None:
    from pantau.desk.cases import case_key
    from pantau.schemas import Alert

    checks = report.checks
    total = len(inputs.messages)

    # (a) every message consumed, processed or dead-lettered as in the clean run
    dead_clean, problems_clean = dead_lettered(clean, inputs)
    dead_crash, problems_crash = dead_lettered(crash, inputs)
    report.consumed = sum(crash.committed.values())
    report.deadlettered, report.clean_deadlettered = len(dead_crash), len(dead_clean)
    report.deadletter_messages = len(crash.deadletters)
    report.processed = report.consumed - len(dead_crash)
    problems = []
    for run in (clean, crash):
        if sum(run.committed.values()) != total:
            problems.append(f"{run.name}: {sum(run.committed.values()):,} of {total:,} offsets committed")
    problems += problems_clean + problems_crash
    if dead_crash != dead_clean:
        problems.append(f"dead-lettered only in the crash run: {sorted(dead_crash - dead_clean)[:10]}, "
                        f"only in the clean run: {sorted(dead_clean - dead_crash)[:10]}")  # fmt: skip
    if not inputs.invalid <= dead_clean:
        problems.append(f"injected invalid messages not dead-lettered: {sorted(inputs.invalid - dead_clean)[:10]}")
    checks.append(Check("(a) every message processed or dead-lettered as in the clean run", not problems,
                        "; ".join(problems[:5]) or f"{report.consumed:,} consumed in both runs, the same {len(dead_crash):,} "
                        f"dead-lettered (by source offset, original bytes intact), {report.processed:,} processed; "
                        f"{len(crash.deadletters) - len(dead_crash):,} dead letters published again"))  # fmt: skip

    # (b) the same set of alert ids, the same bodies
    clean_ids = Counter(orjson.loads(r.value)["alert_id"] for r in clean.alerts)
    crash_ids = Counter(orjson.loads(r.value)["alert_id"] for r in crash.alerts)
    bodies: dict[str, set[bytes]] = defaultdict(set)  # a resubmitted form repeats a finding with its own observed_at
    for r in clean.alerts:
        bodies[orjson.loads(r.value)["alert_id"]].add(r.value)
    report.alerts_distinct, report.alert_messages, report.clean_alert_messages = len(crash_ids), len(crash.alerts), len(clean.alerts)
    report.offline_distinct = len(offline)
    extra, missing = set(crash_ids) - set(clean_ids), set(clean_ids) - set(crash_ids)
    other_body = sum(1 for r in crash.alerts if (i := orjson.loads(r.value)["alert_id"]) in bodies and r.value not in bodies[i])
    detail = (f"{len(crash_ids):,} distinct ids in both runs, every copy byte-identical to one of the clean run's"
              if not (extra or missing or other_body) else
              f"{len(extra):,} ids only after the kills ({detectors_of(crash.alerts, extra)}), {len(missing):,} missing "
              f"({detectors_of(clean.alerts, missing)}), {other_body:,} copies with another body")  # fmt: skip
    checks.append(Check("(b) the set of alert ids equals the clean run's", not (extra or missing or other_body), detail))
    if extra or missing or other_body:
        report.examples["(b) only after the kills"] = [orjson.loads(r.value) for r in crash.alerts
                                                       if orjson.loads(r.value)["alert_id"] in extra][:5]  # fmt: skip
        report.examples["(b) missing"] = [orjson.loads(r.value) for r in clean.alerts if orjson.loads(r.value)["alert_id"] in missing][:5]
        report.examples["(b) another body (crash, clean)"] = [
            (orjson.loads(r.value), [orjson.loads(b) for b in bodies[i]]) for r in crash.alerts
            if (i := orjson.loads(r.value)["alert_id"]) in bodies and r.value not in bodies[i]][:5]  # fmt: skip

    # (c) no copy lost; duplicates from redelivery counted; the clean run equals the offline replay
    lost = {i: (crash_ids[i], n) for i, n in clean_ids.items() if crash_ids[i] < n}
    report.duplicates = sum(max(crash_ids[i] - clean_ids[i], 0) for i in crash_ids if i in clean_ids)
    report.duplicated_ids = sum(1 for i in crash_ids if i in clean_ids and crash_ids[i] > clean_ids[i])
    checks.append(Check("(c) no alert copy lost; duplicates only from redelivery", not lost,
                        f"{report.duplicates:,} messages published again ({report.duplicated_ids:,} ids), at least once allowed"
                        if not lost else f"{len(lost):,} ids published fewer times than in the clean run, e.g. {list(lost.items())[:3]}"))  # fmt: skip
    reference_ok = clean_ids == offline
    checks.append(Check("(c') the clean run publishes what the offline replay raises", reference_ok,
                        f"{len(offline):,} ids, each as often as the replay raises it ({sum(offline.values()):,} messages)"
                        if reference_ok else f"{len(set(clean_ids) ^ set(offline)):,} ids differ, "
                        f"{sum(1 for i in offline if clean_ids[i] != offline[i]):,} counts differ"))  # fmt: skip

    # (d) the desk
    distinct = {}
    for r in crash.alerts:
        alert = Alert.model_validate_json(r.value)
        distinct.setdefault(alert.alert_id, alert)
    keys = {case_key(a)[0] for a in distinct.values()}
    desk = desk_state(workdir / "desk-crash.sqlite3", crash.alerts, crash.settings.topic_alerts)
    reference = desk_state(workdir / "desk-clean.sqlite3", clean.alerts, clean.settings.topic_alerts)
    report.cases, report.case_keys, report.alert_rows = desk["case_rows"], len(keys), len(desk["alerts"])
    problems = []
    if desk["repeated_keys"]:
        problems.append(f"case keys with several cases: {desk['repeated_keys'][:5]}")
    if desk["case_rows"] != len(keys) or set(desk["cases"]) != keys:
        problems.append(f"{desk['case_rows']:,} cases for {len(keys):,} distinct case keys")
    if len(desk["alerts"]) != len(distinct) or desk["applied"] != len(distinct):
        problems.append(f"{len(desk['alerts']):,} alert rows ({desk['applied']:,} messages applied) for {len(distinct):,} distinct ids")
    statuses = Counter(status for status, _, _ in desk["cases"].values())
    checks.append(Check("(d) the desk files every alert once, one case per key", not problems,
                        "; ".join(problems) or f"{len(crash.alerts):,} messages -> {desk['applied']:,} applied, "
                        f"{report.alert_rows:,} alert rows, {report.cases:,} cases "
                        f"({', '.join(f'{s} {n:,}' for s, n in sorted(statuses.items()))})"))  # fmt: skip
    problems = []
    if desk["cases"] != reference["cases"]:
        differ = sorted(k for k in set(desk["cases"]) | set(reference["cases"]) if desk["cases"].get(k) != reference["cases"].get(k))
        problems.append(f"{len(differ):,} cases differ (the clean run's desk has {len(reference['cases']):,}), e.g. "
                        f"{[(k, desk['cases'].get(k), reference['cases'].get(k)) for k in differ[:2]]}")  # fmt: skip
    if desk["alerts"] != reference["alerts"]:
        differ = [i for i in set(desk["alerts"]) | set(reference["alerts"]) if desk["alerts"].get(i) != reference["alerts"].get(i)]
        problems.append(f"{len(differ):,} alert rows differ (the clean run's desk has {len(reference['alerts']):,})")
    checks.append(Check("(d') the desk ends as the clean run's alerts leave it", not problems,
                        "; ".join(problems) or "every case (status, severity, open detectors) and alert row "
                        "(status, resolved by, case) identical"))  # fmt: skip

    # (e) the table state
    problems = []
    for table in (REVISION_TABLE, REGION_TABLE, ASSESSOR_SUMS_TABLE):
        a, b = crash.tables[table], clean.tables[table]
        report.table_keys[table] = len(b)
        differ = [k for k in set(a) | set(b) if _decoded(a.get(k)) != _decoded(b.get(k))]
        if differ:
            problems.append(f"{table}: {len(differ):,} of {len(b):,} keys differ, e.g. {sorted(k.decode() for k in differ)[:4]}")
            report.examples[f"(e) {table} (key, crash, clean)"] = [(k.decode(), _decoded(a.get(k)), _decoded(b.get(k)))
                                                                    for k in sorted(differ)[:4]]  # fmt: skip
    checks.append(Check("(e) the tables after the crashes equal the clean run's", not problems,
                        "; ".join(problems) or "revision states, region sums and peer histograms, the assessor's sums: "
                        "the last value of every changelog key identical"))  # fmt: skip


def _decoded(value: bytes | None) -> Any:
    """A changelog value, decoded. Revision and region states are stored with their source position
    (``{"o": offset, "s": state}``, stream/app.py ``BatchStates``): the offset of the last submission
    that changed the state, the same in both runs (the same messages at the same offsets), so it is
    compared too."""
    return None if value is None else orjson.loads(value)


def detectors_of(records: list[Any], ids: set[str]) -> str:
    found = Counter()
    for r in records:
        alert = orjson.loads(r.value)
        if alert["alert_id"] in ids:
            found[alert["detector"]] += 1
            ids = ids - {alert["alert_id"]}
    return ", ".join(f"{d} {n}" for d, n in found.most_common()) or "-"


# --------------------------------------------------------------------------------------------------
# Entry points


def kill_plan(total: int, kills: int, seed: int) -> list[tuple[int, float]]:
    """(messages consumed, then seconds) for each kill: thresholds uniform in 5-90% of the input, sorted."""
    rng = random.Random(seed)
    thresholds = sorted(int(total * rng.uniform(0.05, 0.90)) for _ in range(kills))
    return [(t, round(rng.uniform(0.0, 0.5), 3)) for t in thresholds]


def run(n: int = 100_000, kills: int = 5, seed: int = 1, workdir: str | Path | None = None, *, partitions: int = 4,
        say: Say | None = None, keep: bool = True, stall_timeout: float = STALL_TIMEOUT) -> Report:  # fmt: skip
    """Both runs and the offline replay on a broker of their own; the report with its checks.

    ``workdir`` holds the input, worker logs and desk databases (a temporary directory, removed
    unless ``keep``, when not given).
    """
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    temporary = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="pantau-crash-") if temporary else workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        inputs = build_inputs(n, seed, workdir)
        report = Report(n=n, kills_asked=kills, seed=seed, provinces=inputs.provinces, partitions=partitions,
                        invalid_injected=len(inputs.invalid), workdir=str(workdir))  # fmt: skip
        say(f"input: {n:,} messages of provinces {'+'.join(inputs.provinces)} ({len(inputs.invalid):,} truncated) in {workdir}")
        with EmbeddedBroker(stop_timeout=5.0) as broker:
            runner = Runner(broker, workdir, partitions, say, stall_timeout)
            try:
                clean = Run("clean", runner.settings("clean"))
                say("clean run: one worker, no kill …")
                runner.run(clean, inputs, [])
                say(f"clean run: {clean.seconds:.1f} s, {len(clean.alerts):,} alert messages")
                crash = Run("crash", runner.settings("crash"))
                plan = kill_plan(n, kills, seed)
                say(f"crash run: kills due at {', '.join(f'{t:,}+{d:.2f}s' for t, d in plan)} …")
                runner.run(crash, inputs, plan)
                say(f"crash run: {crash.seconds:.1f} s, {len(crash.alerts):,} alert messages")
            finally:
                runner.close()
        say("offline replay …")
        offline = offline_counts(inputs)
        report.kills, report.starts, report.table_records = crash.kills, crash.starts, crash.table_records
        report.redelivered = crash.redelivered
        report.clean_seconds, report.crash_seconds = clean.seconds, crash.seconds
        compare(report, inputs, clean, crash, offline, workdir)
        if len(crash.kills) != kills:
            report.checks.append(Check("kills", False, f"{len(crash.kills)} kills of {kills} asked"))
        report.total_seconds = time.monotonic() - began
        if report.examples:
            (workdir / "differences.json").write_bytes(orjson.dumps(report.examples, option=orjson.OPT_INDENT_2))
        return report
    finally:
        if temporary and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages (default %(default)s)")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of the worker (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the night and of the kill moments (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=16, help="partitions of the topics (default %(default)s: at 100,000 submissions fewer make restarts too slow on Tansu)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (input, worker logs, desk databases)")
    parser.add_argument("--workdir", help="work directory (default: a temporary one)")
    parser.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT,
                        help="fail when a worker makes no progress for this many seconds (default %(default)s)")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    report = run(args.n, args.kills, args.seed, args.workdir, partitions=args.partitions,
                 keep=args.keep or bool(args.workdir), stall_timeout=args.stall_timeout)
    print("\n".join(report.lines()))
    if args.keep or args.workdir:
        print(f"work directory: {report.workdir}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

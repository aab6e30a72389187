"""Stream benchmark: pantau's Faust worker against a bare Faust agent, and receipt → alert latency.

    python bench/bench_stream.py [--messages 30000] [--rate 1000] [--seconds 15] [--partitions 4]

Everything runs on one embedded Tansu broker (127.0.0.1), started and stopped here:

1. A backlog of ``--messages`` submissions is published once to ``sirekap.submissions``: the 1,000
   real DKI Jakarta documents shipped with pantau, cycled under distinct, valid TPS codes (the province
   prefix changes per cycle, so each is a new TPS), with a share (``--revisions``) of second versions
   of earlier TPS -- half with a changed vote count, half the same numbers re-published -- so the
   revision tracking does real work.
2. **Bare Faust agent**: a throwaway app (same Faust settings as pantau's worker, built from the same
   ``PANTAU_*`` environment) whose agent only ``orjson.loads`` each value, ``async for value in stream``
   -- Faust's per-event baseline. Run as ``python -m faust -A ... worker --without-web -l warn``.
   For reference, the same agent over ``stream.take_events(batch_size, within)`` is run too, and the
   same decoding handed whole fetched batches below Faust's per-event stream
   (:mod:`pantau.stream.batching`, as pantau consumes its submissions): the ceiling of that path.
3. **pantau**: ``pantau worker`` (via :func:`pantau.demo.start_worker`) over the same backlog, once with
   ``PANTAU_CHANGELOG_BATCH_BYTES=1`` (what the demo and tests use on Tansu) and once with the default
   16384. Throughput = messages / time between the first and last processed, from
   ``pantau_submissions_total`` polled on ``/metrics``.
4. **Latency**: a fresh pantau worker on its own topics, offered ``--rate`` submissions/s for
   ``--seconds`` s (after a 2 s warm-up that is not measured); receipt → alert latency per alert is
   the alert message's Kafka timestamp (its producer's CreateTime) minus the submission's
   ``received_at`` (carried in the alert as ``observed_at``); the time this script's consumer received
   the alert and the worker's own ``pantau_alert_latency_seconds`` histogram are shown alongside.

Besides msg/s first → last, the table gives msg/s between 10% and 90% of the backlog (the first → last
figure of a few seconds' run swings with Faust's fetch stalls at partition ends on Tansu) and the worker's
CPU µs per message (from /proc), whose ratio is the stable comparison; worker and broker CPU shares tell
CPU-bound from waiting.

``--profile FILE`` adds a pantau run under cProfile (``python -m cProfile -o FILE`` on a launcher of ``pantau worker``)
and prints where its time goes.

Takes ~2 minutes on 2 CPUs with the defaults. Every process it starts (broker,
workers) is stopped on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

from pantau import demo_data
from pantau.demo import start_worker, stop_worker, wait_healthy, worker_env
from pantau.schemas.sirekap import PROVINCES, validate_kode_tps
from pantau.stream.broker import EmbeddedBroker, create_topics, free_port
from pantau.stream.ingest import producer
from pantau.stream.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Seconds between two scrapes of a pantau worker's /metrics during a throughput run. A scrape costs the
#: worker ~10 ms of CPU (hundreds of labelled samples): every 50 ms it took ~10% of the worker, which
#: the bare agent (progress written to a file) never pays. Prometheus scrapes every 15 s.
SCRAPE_INTERVAL = 0.5
#: Domestic provinces, DKI (31) first so that cycle 0 keeps the real codes; 99 (overseas) is left out
#: because its capacity limit differs, which would change what the detectors find.
PROVINCE_CYCLE = ["31"] + sorted(p for p in PROVINCES if p not in ("31", "99"))


# --------------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------------


def _base_envelopes() -> list[dict]:
    with gzip.open(demo_data(), "rb") as lines:
        return [orjson.loads(line) for line in lines if line.strip()]


def _recode(kode: str, cycle: int, used: set[str]) -> str:
    """The real code moved to the cycle's province (and, past one lap of provinces, kecamatan)."""
    province = PROVINCE_CYCLE[cycle % len(PROVINCE_CYCLE)]
    shift = cycle // len(PROVINCE_CYCLE)
    while True:
        kecamatan = (int(kode[4:6]) - 1 + shift) % 99 + 1
        candidate = f"{province}{kode[2:4]}{kecamatan:02d}{kode[6:]}"
        if candidate not in used:
            used.add(candidate)
            return validate_kode_tps(candidate)
        shift += len(PROVINCE_CYCLE)  # a collision: move further along


def _second_version(envelope: dict, j: int) -> dict:
    """A later version of a TPS: even j moves 3 votes to candidate 02 (a revision), odd j re-publishes
    the same numbers with a new ``ts`` (no revision, the common case on election night)."""
    doc = dict(envelope["doc"])
    if j % 2 == 0 and isinstance(doc.get("chart"), dict):
        chart = dict(doc["chart"])
        chart["100026"] = (chart.get("100026") or 0) + 3
        doc["chart"] = chart
    doc["ts"] = "2024-02-20 12:00:00"
    return {**envelope, "doc": doc}


def workload(n: int, revisions: float, cycle_offset: int = 0) -> list[dict]:
    """``n`` envelopes (no ``received_at`` yet): new TPS, with second versions of earlier ones mixed in
    after their first versions."""
    base = _base_envelopes()
    n_second = int(n * revisions)
    n_first = n - n_second
    used: set[str] = set()
    firsts = []
    for i in range(n_first):
        envelope = base[i % len(base)]
        firsts.append({**envelope, "kode_tps": _recode(envelope["kode_tps"], cycle_offset + i // len(base), used)})
    out: list[dict] = []
    step = n_first / n_second if n_second else math.inf
    j = 0
    for i, envelope in enumerate(firsts):
        out.append(envelope)
        while j < n_second and j <= i and j * step <= i:  # second version of firsts[j], after its first
            out.append(_second_version(firsts[j], j))
            j += 1
    out.extend(_second_version(firsts[k % n_first], k) for k in range(j, n_second))  # revisions > 50%
    return out


def encode(envelope: dict, received_at: datetime) -> bytes:
    return orjson.dumps({**envelope, "received_at": received_at.isoformat()})


def publish_backlog(bootstrap: str, topic: str, envelopes: list[dict]) -> float:
    kafka = producer(bootstrap)
    started = time.perf_counter()
    try:
        for envelope in envelopes:
            kafka.send(topic, key=envelope["kode_tps"][:4].encode(), value=encode(envelope, datetime.now(timezone.utc)))
        kafka.flush()
    finally:
        kafka.close()
    return time.perf_counter() - started


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def scrape(port: int) -> dict[str, float] | None:
    """``{"name{labels}": value}`` of a worker's /metrics, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float] | None, name: str) -> float:
    if not samples:
        return 0.0
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def histogram_quantiles(before: dict, after: dict, name: str, qs=(0.5, 0.99)) -> tuple[list[float | None], int]:
    """Quantiles of a Prometheus histogram's increase between two scrapes (linear within a bucket)."""
    buckets = []
    for key, value in after.items():
        if key.startswith(name + "_bucket{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), value - before.get(key, 0.0)))
    buckets.sort()
    count = int(buckets[-1][1]) if buckets else 0
    out: list[float | None] = []
    for q in qs:
        if not count:
            out.append(None)
            continue
        rank, lower, below = q * count, 0.0, 0.0
        for upper, cumulative in buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    out.append(lower)  # beyond the last bound: report the bound (a floor)
                else:
                    inside = cumulative - below
                    out.append(lower + (upper - lower) * ((rank - below) / inside if inside else 1.0))
                break
            lower, below = upper, cumulative
    return out, count


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Throughput:
    label: str
    expected: int
    processed: int = 0
    seconds: float = 0.0
    worker_share: float = 0.0  # worker CPU seconds per wall second over the measured window
    broker_share: float = 0.0
    cpu_per_message: float = 0.0  # worker CPU µs per message: what the rate would be if nothing waited
    steady: float = 0.0  # msg/s between 10% and 90% of the backlog (robust to start/tail stalls)
    complete: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def crossing(marks: list[tuple[float, float]], count: float) -> float | None:
    """When a progress series ``[(time, processed)]`` reached ``count`` (linear between samples)."""
    for (t0, n0), (t1, n1) in itertools.pairwise(marks):
        if n0 <= count <= n1 and n1 > n0:
            return t0 + (t1 - t0) * (count - n0) / (n1 - n0)
    return None


def steady_rate(marks: list[tuple[float, float]], expected: int) -> float:
    t10, t90 = crossing(marks, 0.1 * expected), crossing(marks, 0.9 * expected)
    return 0.8 * expected / (t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else 0.0


@dataclass
class Latency:
    label: str
    offered: float
    published: int = 0
    publish_seconds: float = 0.0
    processed: int = 0
    alerts: int = 0
    kafka_ts: list[float] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    histogram: tuple[list[float | None], int] = ([None, None], 0)
    worker_cpu: float = 0.0
    broker_cpu: float = 0.0
    window: float = 0.0
    lag_after: float = 0.0
    drained: bool = False


# --------------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------------

BARE_APP = '''
"""Throwaway bare Faust app for bench_stream.py: decode each value, count, nothing else."""
import json, os, time
import faust, orjson
from pantau.stream.app import Worker, use_fetch_max_wait
from pantau.stream.settings import Settings

settings = Settings.from_env()
use_fetch_max_wait(settings.fetch_max_wait_ms)
EXPECT = int(os.environ["BENCH_EXPECT"])
OUT = os.environ["BENCH_OUT"]
MODE = os.environ.get("BENCH_MODE", "event")
# The very options pantau.stream.app.create_app passes to faust.App (and its app class, for the
# fetched-batches mode).
from pantau.stream.batching import BatchingApp, deliver_batches
app = (BatchingApp if MODE == "fetched" else faust.App)(
    settings.app_id, broker=settings.broker_url, store=settings.store, datadir=str(settings.data_dir),
    web_host=settings.web_host, web_port=settings.web_port, broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=settings.heartbeat_interval, broker_commit_interval=settings.commit_interval,
    producer_max_batch_size=settings.producer_batch_bytes, topic_replication_factor=settings.replication,
    topic_partitions=settings.partitions, consumer_auto_offset_reset="earliest", autodiscover=False,
    producer_max_request_size=settings.max_message_bytes, Worker=Worker,
)
topic = app.topic(settings.topic_submissions, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
state = {"n": 0, "first": None, "last": None, "marks": []}

def report():
    tmp = OUT + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, OUT)

def seen():
    now = time.time()
    if state["first"] is None:
        state["first"] = now
    state["n"] += 1
    state["last"] = now
    if state["n"] % 500 == 0:
        state["marks"].append((state["n"], now))
        if state["n"] % 1000 == 0:
            report()
    if state["n"] >= EXPECT:
        report()

if MODE == "event":
    @app.agent(topic, name="bench.bare")
    async def bare(stream):
        async for value in stream:
            orjson.loads(value)
            seen()
elif MODE == "fetched":
    async def bare_fetched(messages):
        for message in messages:
            orjson.loads(message.value)
            seen()
        app.consumer.done(messages)

    deliver_batches(app, topic, bare_fetched)
else:
    @app.agent(topic, name="bench.bare_batched")
    async def bare_batched(stream):
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            for event in events:
                orjson.loads(event.value)
                seen()
'''


def run_bare(broker: EmbeddedBroker, args, workdir: Path, topic: str, expected: int, mode: str) -> Throughput:
    label = {"event": "bare Faust agent, per event", "batch": "bare Faust agent, take_events",
             "fetched": "bare, fetched batches (no agent)"}[mode]
    result = Throughput(label, expected)
    app_dir = workdir / "bareapp"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "bench_bare_app.py").write_text(textwrap.dedent(BARE_APP))
    out = workdir / f"bare-{mode}.json"
    settings = Settings(broker=broker.bootstrap, partitions=args.partitions, data_dir=workdir / f"data-bare-{mode}",
                        web_port=free_port(), app_id=f"bench-bare-{mode}")  # fmt: skip
    env = worker_env(settings, {"PANTAU_TOPIC_SUBMISSIONS": topic, "BENCH_EXPECT": str(expected), "BENCH_OUT": str(out),
                                "BENCH_MODE": mode, "PYTHONPATH": os.pathsep.join([str(app_dir), os.environ.get("PYTHONPATH", "")])})  # fmt: skip
    log = open(workdir / f"bare-{mode}.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "bench_bare_app:app", "worker", "--without-web", "-l", "warn"],
        cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    _children.append(process)
    try:
        deadline = time.monotonic() + args.timeout
        state: dict = {}
        cpu0 = bcpu0 = None
        n0 = 0
        while time.monotonic() < deadline:
            if process.poll() is not None:
                result.notes.append(f"worker exited with {process.returncode}, see {log.name}")
                break
            try:
                state = orjson.loads(out.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                state = {}
            if state.get("n") and cpu0 is None:
                cpu0, bcpu0, n0, t0 = cpu_seconds(process.pid), cpu_seconds(broker.pid), state["n"], time.time()
            if state.get("n", 0) >= expected:
                break
            time.sleep(0.05)
        if cpu0 is not None and state.get("n", 0) > n0:
            # from the first progress report the bench saw to the end
            cpu, wall = cpu_seconds(process.pid) - cpu0, max(time.time() - t0, 1e-3)
            result.worker_share = cpu / wall
            result.broker_share = (cpu_seconds(broker.pid) - bcpu0) / wall
            result.cpu_per_message = cpu / (state["n"] - n0) * 1e6
        if state.get("n"):
            result.processed = state["n"]
            result.seconds = state["last"] - state["first"]
            result.complete = state["n"] >= expected
            result.steady = steady_rate([(state["first"], 1)] + [(t, n) for n, t in state.get("marks", [])], expected)
    finally:
        stop_worker(process)
        log.close()
    if not result.complete:
        result.notes.append(f"incomplete: {result.processed:,} of {expected:,} within {args.timeout:.0f} s")
    return result


def pantau_settings(broker: EmbeddedBroker, args, workdir: Path, app_id: str) -> Settings:
    return Settings(broker=broker.bootstrap, partitions=args.partitions, data_dir=workdir / f"data-{app_id}",
                    web_port=free_port(), app_id=app_id)  # fmt: skip


def topic_env(prefix: str, submissions: str, batch_bytes: int) -> dict[str, str]:
    return {
        "PANTAU_TOPIC_SUBMISSIONS": submissions,
        "PANTAU_TOPIC_ALERTS": f"{prefix}.alerts",
        "PANTAU_TOPIC_DEADLETTER": f"{prefix}.deadletter",
        "PANTAU_TOPIC_VERDICTS": f"{prefix}.verdicts",
        "PANTAU_CHANGELOG_BATCH_BYTES": str(batch_bytes),
    }


def follow_progress(result: Throughput, port: int, process: subprocess.Popen, broker: EmbeddedBroker,
                    expected: int, timeout: float, log_name: str) -> dict | None:  # fmt: skip
    """Poll ``pantau_submissions_total`` until ``expected``; fill in ``result``; return the last scrape."""
    deadline = time.monotonic() + timeout
    first = None  # (wall time, count, worker cpu, broker cpu) at the first scrape with work done
    last = None
    samples = None
    marks: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        if process.poll() is not None:
            result.notes.append(f"worker exited with {process.returncode}, see {log_name}")
            break
        scraped = scrape(port)
        now = time.perf_counter()
        if scraped is not None:
            samples = scraped
            done = total(samples, "pantau_submissions_total")
            if done > 0:
                if first is None:
                    first = (now, done, cpu_seconds(process.pid), cpu_seconds(broker.pid))
                last = (now, done, cpu_seconds(process.pid), cpu_seconds(broker.pid))
                marks.append((now, done))
                if done >= expected:
                    break
        time.sleep(SCRAPE_INTERVAL)
    if first is not None and last is not None and last[0] > first[0]:
        # The first batch was done before the first scrape that saw it: count only what came after.
        result.processed = int(last[1] - first[1])
        result.seconds = last[0] - first[0]
        result.worker_share = (last[2] - first[2]) / result.seconds
        result.broker_share = (last[3] - first[3]) / result.seconds
        result.cpu_per_message = (last[2] - first[2]) / result.processed * 1e6 if result.processed else 0.0
        result.complete = last[1] >= expected
        result.steady = steady_rate(marks, expected)
    if not result.complete:
        seen = int(last[1]) if last else 0
        result.notes.append(f"incomplete: {seen:,} of {expected:,} within {timeout:.0f} s")
    return samples


def run_pantau(broker: EmbeddedBroker, args, workdir: Path, topic: str, expected: int, batch_bytes: int,
               profile: Path | None = None) -> Throughput:  # fmt: skip
    label = f"pantau, changelog batch {batch_bytes} B" \
        + (" (cProfile)" if profile else "")  # fmt: skip
    result = Throughput(label, expected)
    app_id = f"bench-pantau-b{batch_bytes}" + ("-prof" if profile else "")
    settings = pantau_settings(broker, args, workdir, app_id)
    extra = topic_env(app_id, topic, batch_bytes)
    create_topics(broker.bootstrap, {v: args.partitions for k, v in extra.items() if k.startswith("PANTAU_TOPIC")})
    log_path = workdir / f"{app_id}.log"
    process = spawn_pantau(settings, workdir, log_path, extra, profile)
    _children.append(process)
    try:
        wait_healthy(settings.web_port, process)
        samples = follow_progress(result, settings.web_port, process, broker, expected, args.timeout, log_path.name)
        time.sleep(1.0)  # the last batch's alerts are counted once acknowledged
        samples = scrape(settings.web_port) or samples
        if samples:
            batches = samples.get("pantau_batch_submissions_count", 0)
            detector = samples.get("pantau_processing_seconds_sum", 0.0)
            if batches:
                result.notes.append(f"mean batch {samples['pantau_batch_submissions_sum'] / batches:,.0f} submissions")
            if result.seconds and detector:
                result.notes.append(f"detector time {detector / samples.get('pantau_processing_seconds_count', 1) * 1e6:,.0f} µs"
                                    f"/submission, {detector / result.seconds:.0%} of the window")  # fmt: skip
            alerts = total(samples, "pantau_alerts_total")
            result.notes.append(f"{alerts:,.0f} alerts")
    finally:
        stop_worker(process, timeout=30 if profile else 15)
    return result


def spawn_pantau(settings: Settings, workdir: Path, log_path: Path, extra: dict[str, str],
                 profile: Path | None) -> subprocess.Popen:  # fmt: skip
    """``pantau worker`` as the demo starts it, or under cProfile."""
    if profile is None:
        return start_worker(settings, log_path, extra)
    env = dict(extra)
    module_dir = workdir / "launch"
    module_dir.mkdir(exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join([str(module_dir), os.environ.get("PYTHONPATH", "")])
    launcher = module_dir / "bench_launch_worker.py"
    launcher.write_text("import sys\nfrom pantau.cli import main\nsys.exit(main(['worker', '--loglevel', 'warn']))\n")
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, *profiler, str(launcher)], env=worker_env(settings, env), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


class AlertReader(threading.Thread):
    """Reads an alerts topic from the beginning, noting each alert's receive time and Kafka timestamp."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True, name="alert-reader")
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                                      auto_offset_reset="earliest", fetch_max_wait_ms=20)  # fmt: skip
        partitions = self.consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 10
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list[tuple[float, float, bytes]] = []  # (receive time, kafka timestamp, value)
        self.last_receive = time.time()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for messages in self.consumer.poll(timeout_ms=50).values():
                    now = time.time()
                    for message in messages:
                        self.records.append((now, message.timestamp / 1000.0, message.value))
                    self.last_receive = now
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def run_latency(broker: EmbeddedBroker, args, workdir: Path, batch_bytes: int) -> Latency:
    result = Latency(f"pantau, changelog batch {batch_bytes} B", args.rate)
    app_id = f"bench-latency-b{batch_bytes}"
    topic = f"{app_id}.submissions"
    settings = pantau_settings(broker, args, workdir, app_id)
    extra = topic_env(app_id, topic, batch_bytes)
    create_topics(broker.bootstrap, {v: args.partitions for k, v in extra.items() if k.startswith("PANTAU_TOPIC")})
    warmup_n = int(args.rate * 2)
    measured_n = int(args.rate * args.seconds)
    envelopes = workload(warmup_n + measured_n, args.revisions, cycle_offset=1000)
    process = spawn_pantau(settings, workdir, workdir / f"{app_id}.log", extra, None)
    _children.append(process)
    reader = None
    kafka = producer(broker.bootstrap)
    try:
        wait_healthy(settings.web_port, process)
        reader = AlertReader(broker.bootstrap, extra["PANTAU_TOPIC_ALERTS"])
        reader.start()

        def offer(batch: list[dict]) -> float:
            started = time.perf_counter()
            for n, envelope in enumerate(batch):
                delay = started + n / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                value = encode(envelope, datetime.now(timezone.utc))
                kafka.send(topic, key=envelope["kode_tps"][:4].encode(), value=value)
            kafka.flush()
            return time.perf_counter() - started

        offer(envelopes[:warmup_n])  # warm-up (first sends, metadata, caches): not measured
        deadline = time.monotonic() + 30
        while total(scrape(settings.web_port), "pantau_submissions_total") < warmup_n and time.monotonic() < deadline:
            time.sleep(0.05)
        before = scrape(settings.web_port) or {}
        measure_from = time.time()
        cpu0, bcpu0, t0 = cpu_seconds(process.pid), cpu_seconds(broker.pid), time.perf_counter()
        result.publish_seconds = offer(envelopes[warmup_n:])
        result.published = measured_n
        expected = warmup_n + measured_n
        deadline = time.monotonic() + 20
        done = 0.0
        while time.monotonic() < deadline:
            done = total(scrape(settings.web_port), "pantau_submissions_total")
            if done >= expected:
                result.drained = True
                break
            time.sleep(0.05)
        result.window = time.perf_counter() - t0
        result.worker_cpu = cpu_seconds(process.pid) - cpu0
        result.broker_cpu = cpu_seconds(broker.pid) - bcpu0
        # wait for the last batch's alerts: acknowledged (counted by the worker) and read back here
        deadline, previous = time.monotonic() + 15, -1.0
        after = scrape(settings.web_port) or {}
        while time.monotonic() < deadline:
            time.sleep(0.3)
            after = scrape(settings.web_port) or after
            alerts = total(after, "pantau_alerts_total")
            if alerts == previous and len(reader.records) >= alerts:
                break
            previous = alerts
        result.processed = int(done - total(before, "pantau_submissions_total"))
        result.lag_after = total(after, "pantau_consumer_lag_messages")
        result.histogram = histogram_quantiles(before, after, "pantau_alert_latency_seconds")
    finally:
        kafka.close()
        if reader is not None:
            reader.stop()
        stop_worker(process)
    for received, kafka_ts, value in reader.records if reader else ():
        alert = orjson.loads(value)
        observed = alert.get("observed_at")
        if not observed:
            continue
        receipt = datetime.fromisoformat(observed).timestamp()
        if receipt < measure_from:
            continue  # a warm-up submission
        result.kafka_ts.append(kafka_ts - receipt)
        result.received.append(received - receipt)
    result.kafka_ts.sort()
    result.received.sort()
    result.alerts = len(result.kafka_ts)
    return result


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def print_profile(path: Path, limit: int = 30) -> None:
    import pstats

    print(f"\n== cProfile of the pantau worker ({path}) ==")
    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit + 20)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def report(runs: list[Throughput], latencies: list[Latency], published: int, publish_s: float, args) -> None:
    rule = "=" * 118
    print("\n" + rule)
    print(f"pantau stream benchmark: backlog of {published:,} submissions ({args.revisions:.0%} second versions), "
          f"{args.partitions} partitions, embedded Tansu on 127.0.0.1, {os.cpu_count()} CPUs; "
          f"backlog published at {published / publish_s:,.0f}/s")  # fmt: skip
    print("\nTHROUGHPUT  (msg/s first → last processed; 10–90%: between 10% and 90% of the backlog; "
          "CPU µs/msg: worker CPU time per message)")  # fmt: skip
    w = max([len(r.label) for r in runs] + [len(lat.label) for lat in latencies] + [20])
    print(f"  {'run':<{w}} {'msg/s':>8} {'10–90%':>8} {'CPU µs/msg':>11} {'worker CPU':>11} {'broker CPU':>11}")
    for r in runs:
        cpu = f"{r.worker_share:.0%}" if r.seconds else "-"
        bcpu = f"{r.broker_share:.0%}" if r.seconds else "-"
        steady = f"{r.steady:,.0f}" if r.steady else "-"
        print(f"  {r.label:<{w}} {r.rate:>8,.0f} {steady:>8} {r.cpu_per_message:>11,.0f} {cpu:>11} {bcpu:>11}")
        for note in r.notes:
            print(f"  {'':<4}{note}")
    bare = next((r for r in runs if r.label == "bare Faust agent, per event"), None)
    pantau_runs = [r for r in runs if r.label.startswith("pantau") and "cProfile" not in r.label]
    if bare and bare.rate and pantau_runs:
        print("\n  RATIO pantau / bare per-event agent")
        print(f"  {'run':<{w}} {'first→last':>11} {'10–90%':>8} {'CPU-bound':>10}")
        for r in pantau_runs:
            steady = f"{r.steady / bare.steady:.2f}" if bare.steady and r.steady else "-"
            cpu = bare.cpu_per_message / r.cpu_per_message if r.cpu_per_message else 0.0
            print(f"  {r.label:<{w}} {r.rate / bare.rate:>11.2f} {steady:>8} {cpu:>10.2f}")
        print("  (CPU-bound = bare CPU µs/msg ÷ pantau CPU µs/msg: the ratio if neither ever waited on the broker)")
    if latencies:
        print(f"\nLATENCY receipt → alert, {args.rate:,.0f} submissions/s offered for {args.seconds:.0f} s after a 2 s warm-up "
              "(ms; Kafka ts = alert's CreateTime − received_at; consumer = this script's receive time − received_at; "
              "histogram = pantau_alert_latency_seconds, bucket-interpolated)")  # fmt: skip
        print(f"  {'run':<{w}} {'alerts':>6} {'p50':>7} {'p99':>7} {'max':>7} | {'consumer p50':>12} {'p99':>7} "
              f"| {'hist p50':>8} {'p99':>7} | {'worker CPU':>10}  drained")  # fmt: skip
        for lat in latencies:
            k, c = lat.kafka_ts, lat.received
            (h50, h99), _ = lat.histogram
            cpu = f"{lat.worker_cpu / lat.window:.0%}" if lat.window else "-"
            achieved = lat.published / lat.publish_seconds if lat.publish_seconds else 0.0
            drained = "yes" if lat.drained else f"NO (lag {lat.lag_after:,.0f})"
            print(f"  {lat.label:<{w}} {lat.alerts:>6,} {ms(percentile(k, 0.5)):>7} {ms(percentile(k, 0.99)):>7} "
                  f"{ms(k[-1] if k else None):>7} | {ms(percentile(c, 0.5)):>12} {ms(percentile(c, 0.99)):>7} "
                  f"| {ms(h50):>8} {ms(h99):>7} | {cpu:>10}  {drained}; offered {achieved:,.0f}/s")  # fmt: skip
    print(rule)


_children: list[subprocess.Popen] = []


def _cleanup_children() -> None:
    for process in _children:
        try:
            stop_worker(process, timeout=10)
        except Exception:  # best effort; kill the process group it leads as a last resort
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=30_000, help="backlog size (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency: offered submissions/s (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=15.0, help="latency: measured seconds (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic (default %(default)s)")
    parser.add_argument("--revisions", type=float, default=0.2, help="share of second versions (default %(default)s)")
    parser.add_argument("--batch-bytes", default="1,16384",
                        help="PANTAU_CHANGELOG_BATCH_BYTES values for the throughput runs (default %(default)s)")
    parser.add_argument("--latency-batch-bytes", default="1,16384",
                        help="PANTAU_CHANGELOG_BATCH_BYTES values for the latency runs ('' = none; default %(default)s)")
    parser.add_argument("--no-batched-bare", action="store_true",
                        help="skip the bare take_events and fetched-batches reference runs")
    parser.add_argument("--timeout", type=float, default=90.0, help="longest wait for one run's backlog, s")
    parser.add_argument("--profile", type=Path, help="also run pantau under cProfile, writing stats here")
    parser.add_argument("--profile-batch-bytes", type=int, default=16384)
    parser.add_argument("--workdir", type=Path, help="keep worker logs here (default: a temp dir)")
    args = parser.parse_args()
    if not 0 <= args.revisions < 1 or args.messages < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--revisions must be in [0, 1); --messages, --rate and --seconds must be positive")

    def _terminate(signum, frame):  # run the finally blocks on SIGTERM too
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pantau-bench-stream-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work dir {workdir}", flush=True)
    runs: list[Throughput] = []
    latencies: list[Latency] = []
    topic = "sirekap.submissions"
    started = time.perf_counter()
    try:
        with EmbeddedBroker() as broker:
            create_topics(broker.bootstrap, {topic: args.partitions})
            envelopes = workload(args.messages, args.revisions)
            publish_s = publish_backlog(broker.bootstrap, topic, envelopes)
            print(f"published {len(envelopes):,} submissions in {publish_s:.1f} s", flush=True)

            def step(label, fn, *fn_args, **kw):
                t = time.perf_counter()
                print(f"[{time.perf_counter() - started:6.1f} s] {label} …", flush=True)
                out = fn(*fn_args, **kw)
                print(f"[{time.perf_counter() - started:6.1f} s] {label}: done in {time.perf_counter() - t:.1f} s", flush=True)
                return out

            runs.append(step("bare agent (per event)", run_bare, broker, args, workdir, topic, len(envelopes), "event"))
            if not args.no_batched_bare:
                runs.append(step("bare agent (take_events)", run_bare, broker, args, workdir, topic, len(envelopes), "batch"))
                runs.append(step("bare, fetched batches", run_bare, broker, args, workdir, topic, len(envelopes), "fetched"))
            for batch_bytes in [int(b) for b in args.batch_bytes.split(",") if b]:
                runs.append(step(f"pantau (batch {batch_bytes} B)", run_pantau, broker, args, workdir, topic,
                                 len(envelopes), batch_bytes))  # fmt: skip
            for batch_bytes in [int(b) for b in args.latency_batch_bytes.split(",") if b]:
                latencies.append(step(f"latency (batch {batch_bytes} B)", run_latency, broker, args, workdir, batch_bytes))
            if args.profile:
                runs.append(step("pantau under cProfile", run_pantau, broker, args, workdir, topic, len(envelopes),
                                 args.profile_batch_bytes, profile=args.profile.resolve()))  # fmt: skip
            _cleanup_children()
    finally:
        _cleanup_children()
    report(runs, latencies, len(envelopes), publish_s, args)
    print(f"total {time.perf_counter() - started:.0f} s; logs in {workdir}")
    if args.profile and args.profile.exists():
        print_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())

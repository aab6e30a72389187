"""Scale-out benchmark: submissions/s of one pantau worker against two in the same consumer group.

    python bench/bench_scaleout.py [--n 20000] [--partitions 4] [--workers 1,2]
                                   [--changelog-batch-bytes 1] [--standby-replicas N]

Everything runs on one embedded Tansu broker (127.0.0.1), started and stopped here. For each worker
count, on topics and a consumer group of its own:

1. the workers (``pantau worker``, as :func:`pantau.demo.start_worker` starts them: the embedded-broker
   settings of ``EMBEDDED_WORKER_ENV``, one changelog record per produce batch) are started together,
   and the bench waits until the group is stable: every worker's ``/health`` is 200 and the
   submissions partitions on their lag gauges (``/metrics``) are all there, none on two workers;
2. ``--n`` submissions are then published as fast as the producer goes: the 1,000 real DKI Jakarta
   documents shipped with pantau, cycled under distinct valid TPS codes (bench/bench_stream.py's
   workload: the province changes per cycle, so there are ~20 kab/kota keys per 1,000 and the
   partitions get similar shares), values encoded before the clock starts;
3. ``pantau_submissions_total`` summed over the workers' ``/metrics`` is polled until it reaches ``--n``.

The workers start before the backlog is published because a backlog waiting for them would be eaten
by the first worker to join while the second is still starting (a Tansu JoinGroup takes
``session_timeout / 2``). So the publisher runs during the first part of the processing; the table
gives the rate over the whole run (first scrape that sees work → last), between 10% and 90% of it,
and after the publisher is done (from the end of the publishing to the last submission: the backlog
is then all on the broker, nothing else competes for CPU but the broker and the /metrics polling).
CPU µs/msg is the workers' CPU time (all of them) per submission; with two workers it includes what
each spends on the standby replicas of the other's tables (Faust's default ``table_standby_replicas=1``:
a worker reads the changelogs of the partitions it does not process, to take over quickly).

**On this 2-core machine the ratio is bounded.** The broker, the workers and the publisher share
the same two cores: one worker plus the broker already use most of them, so a second worker adds
little CPU to take, and the "ratio" says how well two processes share two cores with a broker, not
how pantau scales across machines. Read it together with the CPU columns: a ratio near 1 with the
cores saturated is what a 2-core box allows; on real hardware (a broker of its own, a core per
worker) the ratio approaches the number of workers as long as there are at least as many
partitions (the kab/kota keys spread evenly enough).

**What else bounds it: the standby replicas.** Faust keeps, by default, one standby replica of every
table partition on another worker. With two workers each one therefore also reads, record by
record, the changelogs the other writes (revision states, region sums), and with
``PANTAU_CHANGELOG_BATCH_BYTES=1`` -- needed on Tansu, whose end offsets are wrong after a multi-record
batch (stream/broker.py) -- every changelog record is a produce batch and a fetched batch of its own,
which costs the broker as much as the workers. ``--standby-replicas 0`` and ``--changelog-batch-bytes
16384`` (the default on Apache Kafka; on Tansu only safe for a throughput run like this one, which
rebalances only before any table is written) show each share of that cost. The shares of the
partitions follow the kab/kota keys (printed): the worker with the larger share sets the end of a run.

Takes ~40 s with the defaults. Every process it starts is stopped on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import cpu_seconds, encode, scrape, steady_rate, total, workload

from pantau.demo import start_worker, stop_worker
from pantau.stream.broker import EmbeddedBroker, create_topics, free_port
from pantau.stream.ingest import producer
from pantau.stream.settings import Settings

POLL = 0.1  # seconds between two scrapes of the workers' /metrics

def spawn(settings: Settings, log_path: Path, extra: dict[str, str], standby: int | None) -> subprocess.Popen:
    """A worker as the demo starts it, with ``standby`` replicas (PANTAU_STANDBY_REPLICAS) when given."""
    return start_worker(settings, log_path, {**extra, **({} if standby is None else {"PANTAU_STANDBY_REPLICAS": str(standby)})})


@dataclass
class Run:
    workers: int
    expected: int
    processed: int = 0
    seconds: float = 0.0  # first scrape that saw work → last
    steady: float = 0.0  # msg/s between 10% and 90%
    after_publish: float = 0.0  # msg/s from the end of the publishing to the last
    publish_seconds: float = 0.0
    cpu_per_message: float = 0.0  # all workers' CPU µs per submission, over the whole run
    worker_share: float = 0.0  # workers' CPU seconds per wall second (2.0 = both cores)
    broker_share: float = 0.0
    split: list[int] = field(default_factory=list)  # submissions per worker
    startup: float = 0.0  # seconds until the group was stable
    complete: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


_children: list[subprocess.Popen] = []


def health(port: int) -> int | None:
    """The worker's assigned partition count when its /health says ok, else None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            body = json.load(response)
    except (OSError, ValueError):
        return None
    return body.get("assigned_partitions") if body.get("status") == "ok" else None


def lag_partitions(samples: dict[str, float] | None) -> set[str]:
    """The submissions partitions on a worker's consumer lag gauge (those it holds)."""
    return {key.split('partition="', 1)[1].split('"', 1)[0] for key in samples or {}
            if key.startswith("pantau_consumer_lag_messages{")}  # fmt: skip


def wait_stable(ports: list[int], processes: list[subprocess.Popen], partitions: int, timeout: float) -> None:
    """Until every worker is ready and the submissions partitions are split among them, none twice."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited with status {process.returncode}")
        if all(health(port) for port in ports):
            held = [lag_partitions(scrape(port)) for port in ports]
            if all(held) and sum(map(len, held)) == partitions and len(set().union(*held)) == partitions:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the group was not stable within {timeout:.0f} s")


def publish(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], result: Run) -> None:
    """Send the encoded messages as fast as the producer goes (in a thread, while the workers are polled)."""
    kafka = producer(bootstrap)
    started = time.perf_counter()
    try:
        for key, value in messages:
            kafka.send(topic, key=key, value=value)
        kafka.flush()
    finally:
        kafka.close()
    result.publish_seconds = time.perf_counter() - started


def run(broker: EmbeddedBroker, n_workers: int, envelopes: list[dict], args, workdir: Path) -> Run:
    result = Run(n_workers, len(envelopes))
    app_id = f"bench-scaleout-{n_workers}w"
    topics = {
        "PANTAU_TOPIC_SUBMISSIONS": f"{app_id}.submissions",
        "PANTAU_TOPIC_ALERTS": f"{app_id}.alerts",
        "PANTAU_TOPIC_DEADLETTER": f"{app_id}.deadletter",
        "PANTAU_TOPIC_VERDICTS": f"{app_id}.verdicts",
        "PANTAU_TOPIC_REGIONAL": f"{app_id}.regional",
    }
    create_topics(broker.bootstrap, {t: 1 if k == "PANTAU_TOPIC_REGIONAL" else args.partitions for k, t in topics.items()})
    topic = topics["PANTAU_TOPIC_SUBMISSIONS"]
    settings = [Settings(broker=broker.bootstrap, app_id=app_id, partitions=args.partitions, web_port=free_port(),
                         data_dir=workdir / f"data-{app_id}-{i}") for i in range(n_workers)]  # fmt: skip
    processes = []
    try:
        started = time.monotonic()
        for i, s in enumerate(settings):
            extra = {**topics, "PANTAU_CHANGELOG_BATCH_BYTES": str(args.changelog_batch_bytes)}
            processes.append(spawn(s, workdir / f"{app_id}-{i}.log", extra, args.standby_replicas))
            _children.append(processes[-1])
        ports = [s.web_port for s in settings]
        wait_stable(ports, processes, args.partitions, args.timeout)
        result.startup = time.monotonic() - started

        now = datetime.now(timezone.utc)
        messages = [(e["kode_tps"][:4].encode(), encode(e, now)) for e in envelopes]
        pids = [p.pid for p in processes]
        publisher = threading.Thread(target=publish, args=(broker.bootstrap, topic, messages, result), daemon=True)
        marks: list[tuple[float, float]] = []
        first = last = at_publish_end = None
        cpu0, bcpu0 = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(broker.pid)
        publish_started = time.perf_counter()
        publisher.start()
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited with status {process.returncode}")
            publishing = publisher.is_alive()
            scraped = [scrape(port) for port in ports]
            now_t = time.perf_counter()
            done = sum(total(s, "pantau_submissions_total") for s in scraped)
            if at_publish_end is None and not publishing:
                at_publish_end = (now_t, done)  # the first scrape after the publisher was done
            marks.append((now_t, done))
            if done > 0:
                if first is None:
                    first = (now_t, done)
                last = (now_t, done)
                result.split = [int(total(s, "pantau_submissions_total")) for s in scraped]
                if done >= result.expected:
                    break
            time.sleep(POLL)
        publisher.join(args.timeout)
        cpu, bcpu = sum(cpu_seconds(pid) for pid in pids) - cpu0, cpu_seconds(broker.pid) - bcpu0
        wall = time.perf_counter() - publish_started
        if first is not None and last is not None and last[0] > first[0]:
            result.processed = int(last[1] - first[1])  # the first batch was done before the first scrape saw it
            result.seconds = last[0] - first[0]
            result.complete = last[1] >= result.expected
            result.steady = steady_rate(marks, result.expected)
            if at_publish_end and last[0] > at_publish_end[0] and last[1] > at_publish_end[1]:
                result.after_publish = (last[1] - at_publish_end[1]) / (last[0] - at_publish_end[0])
            else:
                result.notes.append("all processed before the publisher was done")
        result.cpu_per_message = cpu / result.expected * 1e6
        result.worker_share, result.broker_share = cpu / wall, bcpu / wall
        if not result.complete:
            result.notes.append(f"incomplete: {int(last[1]) if last else 0:,} of {result.expected:,} "
                                f"within {args.timeout:.0f} s")  # fmt: skip
    finally:
        for process in processes:
            stop_worker(process)
    return result


def report(runs: list[Run], args, partition_shares: Counter) -> None:
    rule = "=" * 112
    print("\n" + rule)
    standby = "Faust's default (1)" if args.standby_replicas is None else args.standby_replicas
    print(f"pantau scale-out: {args.n:,} submissions (distinct TPS), {args.partitions} partitions "
          f"(shares {', '.join(f'{partition_shares[p]:,}' for p in sorted(partition_shares))}), "
          f"embedded Tansu on 127.0.0.1, {os.cpu_count()} CPUs shared by broker, workers and publisher; "
          f"changelog batch {args.changelog_batch_bytes} B, table standby replicas {standby}")  # fmt: skip
    print(f"\n  {'workers':>7} {'msg/s':>8} {'10–90%':>8} {'after pub.':>10} {'CPU µs/msg':>11} {'workers CPU':>12} "
          f"{'broker CPU':>11} {'startup s':>10}  split")  # fmt: skip
    for r in runs:
        print(f"  {r.workers:>7} {r.rate:>8,.0f} {r.steady:>8,.0f} {r.after_publish:>10,.0f} {r.cpu_per_message:>11,.0f} "
              f"{r.worker_share:>12.0%} {r.broker_share:>11.0%} {r.startup:>10.1f}  "
              f"{' + '.join(f'{n:,}' for n in r.split)}; published in {r.publish_seconds:.1f} s")  # fmt: skip
        for note in r.notes:
            print(f"  {'':>9}{note}")
    base = next((r for r in runs if r.workers == 1 and r.complete), None)
    for r in runs:
        if base is None or r is base or not r.complete:
            continue

        def ratio(a: float, b: float) -> str:
            return f"{a / b:.2f}" if a and b else "-"

        print(f"\n  RATIO {r.workers} workers / 1 worker: {ratio(r.rate, base.rate)} (msg/s), "
              f"{ratio(r.steady, base.steady)} (10–90%), {ratio(r.after_publish, base.after_publish)} (after publishing); "
              f"CPU µs/msg {ratio(r.cpu_per_message, base.cpu_per_message)}×")  # fmt: skip
    print(f"  (CPU 100% = one core. On {os.cpu_count()} cores shared with the broker and the publisher the ratio is "
          "bounded; see the module docstring.)")  # fmt: skip
    print(rule)


def _cleanup_children() -> None:
    for process in _children:
        try:
            stop_worker(process, timeout=10)
        except (OSError, subprocess.SubprocessError):  # kill the process group it leads as a last resort
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="submissions per run (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic (default %(default)s)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, in order (default %(default)s)")
    parser.add_argument("--changelog-batch-bytes", type=int, default=1,
                        help="PANTAU_CHANGELOG_BATCH_BYTES (default %(default)s, what the demo and tests use on Tansu)")
    parser.add_argument("--standby-replicas", type=int,
                        help="Faust table_standby_replicas (default: Faust's, 1; pantau does not set it)")
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait for a group or a run, s")
    parser.add_argument("--workdir", type=Path, help="keep worker logs here (default: a temp dir)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",") if w]
    if args.n < 1 or args.partitions < 1 or not counts or min(counts) < 1:
        parser.error("--n, --partitions and --workers must be positive")
    if max(counts) > args.partitions:
        parser.error("more workers than partitions: the extra ones would idle")

    def _terminate(signum, frame):  # run the finally blocks on SIGTERM too
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pantau-bench-scaleout-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work dir {workdir}", flush=True)
    envelopes = workload(args.n, 0.0)
    from kafka.partitioner.default import murmur2

    shares = Counter((murmur2(e["kode_tps"][:4].encode()) & 0x7FFFFFFF) % args.partitions for e in envelopes)
    runs: list[Run] = []
    started = time.perf_counter()
    try:
        with EmbeddedBroker() as broker:
            for n_workers in counts:
                print(f"[{time.perf_counter() - started:6.1f} s] {n_workers} worker(s) …", flush=True)
                runs.append(run(broker, n_workers, envelopes, args, workdir))
                r = runs[-1]
                print(f"[{time.perf_counter() - started:6.1f} s] {n_workers} worker(s): {r.rate:,.0f} msg/s", flush=True)
            _cleanup_children()
    finally:
        _cleanup_children()
    report(runs, args, shares)
    print(f"total {time.perf_counter() - started:.0f} s; logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

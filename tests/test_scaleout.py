"""Scale-out: two ``pantau worker`` processes in one consumer group on the embedded broker.

They share the submissions partitions; when one leaves (SIGTERM), the other takes its partitions over
with their table state (revision states, region sums, the assessor's sums and episodes) restored from
the changelogs, and the alerts topic ends up holding exactly the offline replay's alerts -- each as
often as one worker alone would publish it: no alert lost, none duplicated by the handover.

The input is a small simulated night of four kabupaten/kota, one on each of the four partitions
(submissions are keyed by kab/kota code), with OCR misreads that are mostly corrected later
(``revision.resolved``) and ballot stuffing and fabricated counts in two kecamatan (regional alerts).
Its first half (by line, i.e. by arrival) goes to the two workers, its second half to the survivor
alone: the second half's corrections of forms whose first version the departed worker inspected can
only be recognised from the revision state that worker left in the changelog.

Costs ~46 s, most of it waiting for the single regional assessment (see ``ASSESS_INTERVAL``).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pantau.demo import metric_total
from pantau.detectors.assessor import RegionalAssessor
from pantau.detectors.form import Capacity
from pantau.detectors.inspector import TpsInspector
from pantau.detectors.monitor import RegionalMonitor
from pantau.replay import records_of, replay
from pantau.schemas import Alert, Tally
from pantau.sources import read_records
from pantau.stream.app import ensure_topics
from pantau.stream.broker import free_port
from pantau.stream.ingest import publish
from pantau.stream.settings import Settings

from .test_stream import (  # noqa: F401  (broker and workers are the fixtures of test_stream.py)
    PROCESS_TIMEOUT,
    TopicReader,
    Workers,
    alert_messages,
    broker,
    by_name,
    metrics_samples,
    wait_for,
    without_observed_at,
    workers,
)

pytestmark = pytest.mark.broker

PARTITIONS = 4
#: Small kab/kota whose codes Kafka's default partitioner (murmur2 of the key) puts on partitions 0, 1,
#: 2 and 3 of 4: whichever partitions a worker gets, it inspects some of the night.
KABKOTA = ["5312", "3576", "7174", "3371"]
ANOMALIES = [
    "stuffing_extreme:rate=0.4,target=357603",
    "fabricated:rate=0.4,target=337103",
    "ocr_misread:rate=0.03,corrected=0.9",
]
#: Seconds between the workers' regional assessments. The offline replay assesses once, at the end of
#: the input; the stream matches it only if its first assessment comes after the whole night is in
#: (each look is a Benjamini–Hochberg family of its own: looking while the night fills in can raise a
#: region a single final look would not). The whole schedule before it takes ~15-20 s.
ASSESS_INTERVAL = 30.0
#: The offline replay's ``assess_every``: never in between, once at the end.
ONCE_AT_THE_END = 10**9


# --------------------------------------------------------------------------------------------------
# Helpers


def health(port: int) -> tuple[int | None, dict]:
    """The HTTP status and body of a worker's /health (None and {} while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:  # 503 while rebalancing, with a body
        try:
            return error.code, json.load(error)
        except ValueError:
            return error.code, {}
    except (OSError, ValueError):
        return None, {}


def ready(port: int) -> int | None:
    """The worker's assigned partition count if /health says ok (200), else None."""
    status, body = health(port)
    return body.get("assigned_partitions") if status == 200 and body.get("status") == "ok" else None


def processed(settings: Settings) -> int:
    """Submissions the worker consumed (processed or dead-lettered), from its /metrics."""
    return int(metric_total(settings.web_port, "pantau_submissions_total") or 0)


def lag_partitions(settings: Settings) -> set[int]:
    """The submissions partitions on the worker's consumer lag gauge: those it holds."""
    try:
        samples = metrics_samples(settings.web_port)
    except OSError:
        return set()
    return {int(dict(labels)["partition"]) for labels in by_name(samples, "pantau_consumer_lag_messages")}


def committed(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
    """The consumer group's committed offset per partition of ``topic`` (an OffsetFetch; joins no group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close(autocommit=False)


def subsets_with_sum(counts: dict[int, int], total: int) -> list[frozenset[int]]:
    """The sets of partitions whose message counts add up to ``total``."""
    return [frozenset(s) for r in range(len(counts) + 1) for s in itertools.combinations(sorted(counts), r)
            if sum(counts[p] for p in s) == total]  # fmt: skip


class Repeating(TpsInspector):
    """The offline replay's inspector, counting every alert it raises, a repeated one each time."""

    def __init__(self) -> None:
        super().__init__(Capacity(), monitor=RegionalMonitor())
        self.raised: Counter[str] = Counter()

    def __call__(self, tally: Tally) -> list[Alert]:
        alerts = super().__call__(tally)
        self.raised.update(a.alert_id for a in alerts)
        return alerts

    def repeated(self) -> int:
        return sum(n - 1 for n in self.raised.values())


PASLON = ("100025", "100026", "100027")


def counted(envelope: dict) -> bool:
    """Whether the form's chart has every candidate's votes, the leader's at least 20."""
    chart = envelope["doc"].get("chart") or {}
    return all(isinstance(chart.get(p), int) for p in PASLON) and max(chart[p] for p in PASLON) >= 20


def moved_votes(envelope: dict, votes: int = 5) -> dict:
    """A later version of a TPS's form with ``votes`` moved from the leader to another candidate (the sums still hold)."""
    changed = copy.deepcopy(envelope)
    chart = changed["doc"]["chart"]
    leader = max(PASLON, key=lambda p: chart[p])
    chart[leader] -= votes
    chart[next(p for p in PASLON if p != leader)] += votes
    changed["doc"]["ts"] = "2024-02-20 12:00:00"
    return changed


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The simulated night split in two halves by arrival, and the offline replay's alerts.

    The second half ends with votes moved at three clean TPS per kab/kota that reported in the first
    half (``revision.changed``), besides the night's own corrections (``revision.resolved``).
    """
    from pantau.simulate import simulate

    folder = tmp_path_factory.mktemp("night")
    whole = folder / "night.jsonl"
    simulate(whole, kabkota=KABKOTA, seed=3, synthetic_registry=True, complete=True, images=False, anomalies=ANOMALIES)
    lines = whole.read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    envelopes = [orjson.loads(line) for line in lines]
    reported_early = {e["kode_tps"] for e in envelopes[:half]}
    flagged = {a.kode_tps for a in replay(read_records(whole))}
    latest = {e["kode_tps"]: e for e in envelopes}
    moved = []
    for kabkota in KABKOTA:
        clean = sorted(k for k in reported_early - flagged if k.startswith(kabkota) and counted(latest[k]))
        moved += [moved_votes(latest[kode]) for kode in clean[:3]]
    first, second = folder / "first.jsonl", folder / "second.jsonl"
    first.write_bytes(b"".join(lines[:half]))
    second.write_bytes(b"".join(lines[half:]) + b"".join(orjson.dumps(e) + b"\n" for e in moved))

    # The offline replay keeps an alert id's first occurrence; the stream publishes every submission's
    # findings, a resubmitted form's again under the same ids (e.g. a capacity finding on the chart half,
    # found again when the administrasi half arrives): ``published`` counts them as the stream should.
    inspector = Repeating()
    expected = {a.alert_id: a for a in replay(records_of([first, second]), inspector=inspector,
                                              assessor=RegionalAssessor(), assess_every=ONCE_AT_THE_END)}  # fmt: skip
    regional = {a.alert_id: a for a in expected.values() if a.level != "tps"}
    published = inspector.raised + Counter(list(regional))  # one assessment: each regional alert once
    assert set(published) == set(expected) and inspector.repeated() >= 3  # the night does repeat findings
    # The first half's TPS alerts: what the two workers publish before one of them leaves.
    first_tps = {a.alert_id: a for a in replay(read_records(first)) if a.level == "tps"}
    assert set(first_tps) < set(expected)
    # The second half's revision alerts that need the first half's revision states: a worker without
    # them (the second half replayed alone) does not raise them.
    stateless = {a.alert_id for a in replay(read_records(second))}
    handover = [a for a in expected.values()
                if a.detector.startswith("revision.") and a.alert_id not in first_tps and a.alert_id not in stateless]  # fmt: skip
    kinds = Counter((a.kode_tps[:4], a.detector) for a in handover)
    assert all(kinds[k, d] >= 2 for k in KABKOTA for d in ("revision.resolved", "revision.changed")), kinds
    assert all(set(a.resolves) <= set(first_tps) for a in handover)
    assert {a.region for a in regional.values() if a.level == "kecamatan"} == {"357603", "337103"}
    return {"first": first, "second": second, "n_first": half, "n_second": len(lines) - half + len(moved),
            "expected": expected, "published": published, "first_tps": first_tps, "handover": handover,
            "regional": regional}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Two workers, one group; one leaves


def test_two_workers_share_the_partitions_and_the_survivor_takes_over_with_the_table_state(
    workers: Workers, tmp_path: Path, night: dict[str, Any]  # noqa: F811  (the fixture imported above)
):
    settings = dataclasses.replace(workers.settings("scaleout", partitions=PARTITIONS), assess_interval=ASSESS_INTERVAL,
                                   data_dir=tmp_path / "data-1")  # fmt: skip
    # Same app id (consumer group, changelog topics) and topics; its own web port and data dir.
    other = dataclasses.replace(settings, web_port=free_port(), data_dir=tmp_path / "data-2")
    ensure_topics(settings)
    alerts = TopicReader(settings.bootstrap, settings.topic_alerts)
    submissions = TopicReader(settings.bootstrap, settings.topic_submissions)
    try:
        # 1. One worker alone holds every partition; a second one joins and they split them.
        started = time.monotonic()
        first_process = workers.start(settings)
        alone = wait_for(lambda: ready(settings.web_port), "the first worker alone to be ready", workers)
        phases = {"one worker ready": time.monotonic() - started}
        second_process = workers.start(other)
        # /health counts every partition the worker's consumer is assigned: of the submissions and
        # verdicts topics, of the tables' changelogs (those of its partitions, and standby replicas of the
        # other worker's), and of the single-partition topics (regional sums, the assessor's changelogs,
        # Faust's leader topic), which go together to one of the two. It does not say which partitions:
        # that is checked below from what each worker processed, and from its lag gauge on /metrics.
        counts = wait_for(lambda: (a := ready(settings.web_port)) and (b := ready(other.web_port))
                          and a < alone and b < alone and (a, b),
                          "both workers ready, each with a share of the partitions", workers)  # fmt: skip
        assert min(counts) > 0 and sum(counts) >= alone, (alone, counts)
        phases["two workers ready"] = time.monotonic() - started

        # 2. The first half of the night, through both.
        summary = publish(read_records(night["first"]), settings.bootstrap, settings.topic_submissions)
        assert (summary.published, summary.invalid) == (night["n_first"], 0)
        wait_for(lambda: processed(settings) + processed(other) >= night["n_first"],
                 f"{night['n_first']} submissions on the two workers' /metrics", workers)  # fmt: skip
        on_partition = Counter(m.partition for m in submissions.until(lambda m: len(m) >= night["n_first"],
                                                                      "the first half on the topic", workers))  # fmt: skip
        partition_of = {m.key.decode(): m.partition for m in submissions.messages}
        assert set(on_partition) == set(range(PARTITIONS)) and sorted(partition_of.values()) == list(range(PARTITIONS))
        # With these counts, a number of messages identifies the partitions it came from.
        sums = Counter(sum(s) for r in range(PARTITIONS + 1)
                       for s in itertools.combinations(on_partition.values(), r))  # fmt: skip
        assert max(sums.values()) == 1, f"two sets of partitions hold as many messages: {on_partition}"
        phases["first half processed"] = time.monotonic() - started
        done = {"first": processed(settings), "second": processed(other)}
        assert sum(done.values()) == night["n_first"], done  # each message processed once
        held = {name: subsets_with_sum(on_partition, n) for name, n in done.items()}
        assert all(len(s) == 1 for s in held.values()), (done, on_partition)
        held = {name: s[0] for name, s in held.items()}
        # Each worker processed exactly the messages of whole partitions; together all, no partition twice.
        assert held["first"] and held["second"] and held["first"] | held["second"] == set(range(PARTITIONS))
        assert not held["first"] & held["second"]
        # Each worker's /metrics says the same: its lag gauge has a sample per submissions partition it
        # holds (refreshed every 2 s).
        wait_for(lambda: lag_partitions(settings) == held["first"] and lag_partitions(other) == held["second"],
                 f"the lag gauges of partitions {sorted(held['first'])} and {sorted(held['second'])}", workers)  # fmt: skip
        # ... and so does /health, which also says who runs the regional assessor: exactly one of them.
        reports = {"first": health(settings.web_port)[1], "second": health(other.web_port)[1]}
        assert {name: set(r["submission_partitions"]) for name, r in reports.items()} == held
        assert sorted(r["assessor"] for r in reports.values()) == [False, True]

        # Quiescent before one leaves: its alerts are published and its offsets committed. (Leaving in
        # the middle of a batch is allowed too: the survivor would redo it, publishing some alerts again
        # under the same ids; see the assertions below.)
        alerts.until(lambda m: {orjson.loads(x.value)["alert_id"] for x in m} >= set(night["first_tps"]),
                     "the first half's alerts", workers)  # fmt: skip
        wait_for(lambda: committed(settings.bootstrap, settings.app_id, settings.topic_submissions,
                                   list(range(PARTITIONS))) == dict(on_partition),
                 "the first half's offsets committed", workers)  # fmt: skip

        phases["first half committed"] = time.monotonic() - started

        # 3. The worker holding the single-partition topics (the larger count: it assesses the regions)
        # leaves, so that the assessor moves too. SIGTERM: it leaves the group, commits, flushes.
        leaving = "first" if counts[0] > counts[1] else "second"
        staying = "second" if leaving == "first" else "first"
        process = {"first": first_process, "second": second_process}
        worker_settings = {"first": settings, "second": other}
        code = workers.stop(process[leaving])
        assert code == 0, f"the leaving worker did not stop cleanly (status {code})\n{workers.log_tail()}"
        survivor = worker_settings[staying]
        # The survivor is assigned everything a worker alone holds.
        wait_for(lambda: ready(survivor.web_port) == alone, "the survivor to hold every partition", workers)
        phases["survivor holds all"] = time.monotonic() - started

        # 4. The second half, through the survivor alone.
        summary = publish(read_records(night["second"]), settings.bootstrap, settings.topic_submissions)
        assert (summary.published, summary.invalid) == (night["n_second"], 0)
        wait_for(lambda: processed(survivor) >= done[staying] + night["n_second"],
                 "the second half on the survivor's /metrics", workers)  # fmt: skip
        elapsed = phases["second half processed"] = time.monotonic() - started
        print("seconds after the first worker started:", ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
        assert elapsed < ASSESS_INTERVAL - 2, (
            f"the night was in only {elapsed:.0f} s after the first worker started, too close to its first regional "
            f"assessment ({ASSESS_INTERVAL:.0f} s): the single offline assessment is no reference; raise ASSESS_INTERVAL")
        expected = night["expected"]
        messages = alerts.until(lambda m: {orjson.loads(x.value)["alert_id"] for x in m} >= set(expected),
                                f"{len(expected)} alerts, the regional ones included", workers,
                                timeout=ASSESS_INTERVAL + PROCESS_TIMEOUT)  # fmt: skip
        # The survivor did not redo any of the departed worker's submissions: they were committed.
        assert processed(survivor) == done[staying] + night["n_second"]
        assert lag_partitions(survivor) == set(range(PARTITIONS))
        status, report = health(survivor.web_port)
        assert status == 200 and report["submission_partitions"] == list(range(PARTITIONS)) and report["assessor"]
    finally:
        alerts.close()
        submissions.close()

    stream = alert_messages(messages)
    ids = Counter(a["alert_id"] for a in stream)
    expected, published = night["expected"], night["published"]
    # Delivery is at least once (stream/app.py, README): what is promised is the SET of alert ids, none
    # lost and none distinct extra; an id may come again -- a form resubmitted with a finding that
    # persists repeats it, and so would a batch redone after a crash or a rebalance in mid-batch.
    assert set(ids) == set(expected)
    for alert in stream:  # the very alerts of the offline replay (but observed_at, the receipt time)
        assert without_observed_at(alert) == without_observed_at(expected[alert["alert_id"]].model_dump(mode="json"))
    # Here the worker left with every batch committed and nothing was published while the group
    # rebalanced, so no batch was redone: each id is on the topic as often as the input's submissions
    # raise it (as one worker alone would publish them), none more (no duplicate from the handover).
    assert ids == published, {i: (ids[i], published[i]) for i in ids if ids[i] != published[i]}

    # The table state moved: the survivor recognised the corrections of forms the departed worker had
    # inspected, which it could know only from the revision table's changelog.
    by_id = {a["alert_id"]: a for a in stream}
    taken_over = [a for a in night["handover"] if partition_of[a.kode_tps[:4]] in held[leaving]]
    for alert in taken_over:
        assert by_id[alert.alert_id]["detector"] == alert.detector
        assert set(by_id[alert.alert_id]["resolves"]) == set(alert.resolves)
    assert {a.detector for a in taken_over} == {"revision.resolved", "revision.changed"}

    # The regional state moved: the region sums of the departed worker's kab/kota (region table), and the
    # assessor's sums and episodes, give the offline replay's regional alerts.
    regional = [a for a in stream if a["level"] != "tps"]
    assert {a["alert_id"] for a in regional} == set(night["regional"])
    assert {a["region"] for a in regional if a["level"] == "kecamatan"} == {"357603", "337103"}

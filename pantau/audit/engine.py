"""The offline replay in several processes, with the output of one.

Records are split by kabupaten/kota (:func:`~pantau.sources.shard_of`): a TPS's versions, and the
kecamatan and kabupaten/kota sums they feed, live in one shard, as they live on one partition in the
stream. Every shard process reads every input file, validates and inspects only the records it owns,
and reports in *rounds* of ``assess_every`` records of the whole input: the alerts of its records
(with their positions), the region sums they changed, the records it refused. The parent merges a
round's alerts by position, hands the sums to the one :class:`~pantau.detectors.assessor.RegionalAssessor`
(provinces and the nation span shards) and assesses, exactly where :func:`pantau.replay.replay`
assesses. So ``jobs=1`` and ``jobs=4`` give the same alerts, in the same order, as ``pantau replay``.

Besides the alerts, each shard reports what the audit report draws: documents and TPS per province,
first arrivals per hour, the photos of flagged TPS, the final numbers of every PPWP form (for the
fingerprints) and what became of each OCR suggestion (the TPS's final value of the field).
"""

from __future__ import annotations

import heapq
import multiprocessing
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pantau.detectors.alerts import observed_at
from pantau.detectors.assessor import FINAL, LOOK_GROWTH, RegionalAssessor
from pantau.detectors.form import Capacity
from pantau.detectors.inspector import TpsInspector
from pantau.detectors.monitor import RegionalMonitor
from pantau.detectors.regional import Profile, RegionSums
from pantau.detectors.revision import unpack
from pantau.replay import ASSESS_EVERY, ReplaySummary, Written, assess
from pantau.schemas import Alert, normalize
from pantau.sources import read_owned_records, shard_of


@dataclass
class ShardTotals:
    """What one shard saw, beyond its alerts (sent once, with its last round)."""

    documents: Counter[tuple[str, str]] = field(default_factory=Counter)  # (provinsi, jenis) → valid documents
    tps: Counter[tuple[str, str]] = field(default_factory=Counter)  # (provinsi, jenis) → TPS-ballots seen
    arrivals: Counter[tuple[str, int]] = field(default_factory=Counter)  # (jenis, hour, epoch s) → first arrivals
    undated: Counter[str] = field(default_factory=Counter)  # jenis → first arrivals without a time
    photos: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "kode:jenis" of a flagged TPS → latest photos
    forms: dict[str, Profile] = field(default_factory=dict)  # "kode:ppwp" → the final complete, consistent form
    suggestions: dict[str, list[tuple[str, int, int, int | None]]] = field(default_factory=dict)
    # alert id → [(field, current, proposed, the TPS's final value of the field or None)]

    def merge(self, other: ShardTotals) -> None:
        self.documents.update(other.documents)
        self.tps.update(other.tps)
        self.arrivals.update(other.arrivals)
        self.undated.update(other.undated)
        self.photos.update(other.photos)
        self.forms.update(other.forms)
        self.suggestions.update(other.suggestions)


@dataclass
class Round:
    """One shard's share of ``assess_every`` consecutive records of the input."""

    end: int  # records of the whole input read so far
    alerts: list[tuple[int, Alert]]  # (position in the input, alert), in the order the detectors raised them
    refused: list[tuple[int, str, int, str, str]]  # (position, source, line, code, reason)
    regions: dict[str, RegionSums]
    documents: int
    totals: ShardTotals | None = None  # with the last round only


def shard_rounds(paths: Sequence[str | Path], shard: int, shards: int, assess_every: int = ASSESS_EVERY,
                 capacity: Capacity = Capacity()) -> Iterator[Round]:  # fmt: skip
    """The rounds of one shard: every record of ``paths`` counted, those of ``shard`` inspected."""
    if assess_every < 1:
        raise ValueError(f"assess_every must be at least 1, got {assess_every!r}")
    inspector = TpsInspector(capacity, monitor=RegionalMonitor())
    totals = ShardTotals()
    suggested: dict[str, tuple[str, list]] = {}  # alert id → (state key, suggestions)

    def owned(kode: str | None) -> bool:
        return shard_of(kode, shards) == shard

    def records() -> Iterator:
        for path in paths:
            yield from read_owned_records(path, owned if shards > 1 else None)

    round_ = Round(0, [], [], {}, 0)
    position = 0
    for position, record in enumerate(records(), 1):
        if record is not None:
            if record.envelope is None:
                round_.refused.append((position, record.source, record.line, record.error.code, record.error.reason))
            else:
                _inspect(inspector, normalize(record.envelope), position, round_, totals, suggested)
        if position % assess_every == 0:
            round_.end, round_.regions = position, inspector.monitor.flush()
            yield round_
            round_ = Round(position, [], [], {}, 0)
    for alert_id, (key, suggestions) in suggested.items():
        final = unpack(inspector.states[key]["c"])
        totals.suggestions[alert_id] = [(s.field, s.current, s.proposed, final.get(s.field)) for s in suggestions]
    round_.end, round_.regions, round_.totals = position, inspector.monitor.flush(), totals
    yield round_


def _inspect(inspector: TpsInspector, tally, position: int, round_: Round, totals: ShardTotals, suggested: dict) -> None:
    inspection = inspector.inspect(tally)
    inspector.commit(inspection)
    round_.documents += 1
    provinsi, jenis, key = tally.kode_tps[:2], tally.jenis, inspection.key
    totals.documents[provinsi, jenis] += 1
    if inspection.first:
        totals.tps[provinsi, jenis] += 1
        seen = observed_at(tally)
        if seen is None:
            totals.undated[jenis] += 1
        else:
            totals.arrivals[jenis, int(seen.timestamp()) // 3600 * 3600] += 1
    if jenis == "ppwp":
        if inspection.profile is not None:
            totals.forms[key] = inspection.profile
        else:
            totals.forms.pop(key, None)
    for alert in inspection.alerts:
        round_.alerts.append((position, alert))
        if alert.suggestions:
            suggested[alert.alert_id] = (key, alert.suggestions)
    if tally.images and (inspection.alerts or key in totals.photos):
        totals.photos[key] = tally.images


@dataclass
class AuditRun:
    """The merged outcome of a sharded replay."""

    alerts: list[Alert]
    summary: ReplaySummary
    totals: ShardTotals
    assessor: RegionalAssessor
    records: int


def run_replay(paths: Sequence[str | Path], jobs: int = 1, assess_every: int = ASSESS_EVERY,
               progress: Callable[[int], None] | None = None) -> AuditRun:  # fmt: skip
    """Replay ``paths`` in ``jobs`` processes (1: in this one); ``progress`` gets the records read so far."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs!r}")
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no such input file: {', '.join(missing)}")
    assessor = RegionalAssessor()
    summary = ReplaySummary()
    totals = ShardTotals()
    alerts: list[Alert] = []
    written = Written(summary)

    with _Shards(paths, jobs, assess_every) as shards:
        while True:
            rounds = shards.next_round()
            alerts += written(alert for _, alert in heapq.merge(*(r.alerts for r in rounds), key=lambda pa: pa[0]))
            for _, *refused in heapq.merge(*(r.refused for r in rounds)):
                summary.reject(*refused)
            summary.documents += sum(r.documents for r in rounds)
            last = rounds[0].totals is not None
            alerts += written(assess(assessor, (kv for r in rounds for kv in r.regions.items()), FINAL if last else LOOK_GROWTH))
            if progress is not None:
                progress(rounds[0].end)
            if last:
                for r in rounds:
                    totals.merge(r.totals)
                return AuditRun(alerts, summary, totals, assessor, rounds[0].end)


class _Shards:
    """The shards' rounds, from generators in this process (one job) or from child processes."""

    def __init__(self, paths: Sequence[str | Path], jobs: int, assess_every: int):
        self.args = ([str(p) for p in paths], jobs, assess_every)
        self.local: Iterator[Round] | None = None
        self.workers: list = []

    def __enter__(self) -> _Shards:
        paths, jobs, assess_every = self.args
        if jobs == 1:
            self.local = shard_rounds(paths, 0, 1, assess_every)
            return self
        context = multiprocessing.get_context("spawn")  # no inherited threads or locks from the parent
        for shard in range(jobs):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_serve, args=(sender, paths, shard, jobs, assess_every), daemon=True,
                                      name=f"pantau-audit-{shard}")  # fmt: skip
            process.start()
            sender.close()
            self.workers.append((process, receiver))
        return self

    def next_round(self) -> list[Round]:
        if self.local is not None:
            return [next(self.local)]
        rounds = []
        for process, receiver in self.workers:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                process.join(5)
                raise RuntimeError(f"{process.name} exited (status {process.exitcode}) before the end of the input") from None
            if kind == "error":
                raise RuntimeError(f"{process.name} failed:\n{payload}")
            rounds.append(payload)
        if len({r.end for r in rounds}) != 1:
            raise RuntimeError(f"shards out of step: rounds end at {sorted({r.end for r in rounds})}")
        return rounds

    def __exit__(self, *exc_info) -> None:
        for process, receiver in self.workers:
            receiver.close()
            if process.is_alive():
                process.terminate()
            process.join()


def _serve(sender, paths: list[str], shard: int, shards: int, assess_every: int) -> None:
    """A shard process: send each round, or the traceback that stopped it."""
    try:
        for round_ in shard_rounds(paths, shard, shards, assess_every):
            sender.send(("round", round_))
    except BaseException:  # noqa: BLE001 - whatever it was, the parent must hear of it rather than wait
        sender.send(("error", traceback.format_exc()))
    finally:
        sender.close()


"""Offline audit replay: run the detectors over an archive and write the alerts, deterministically.

The same input gives byte-identical output: records are processed in input order, alerts are written
as canonical JSON, and an alert id already written is not written again (a resubmitted, unchanged
form repeats its findings; the file keeps the first).

The regional statistics run as in the stream: the inspector's monitor keeps the region sums, the
assessor tests them every ``assess_every`` records (refused ones included) and once more at the end of
the input. :mod:`pantau.audit` runs the same replay in several processes, with the same output.

Desk verdicts (``--verdicts``) suppress TPS alerts as in the stream, with one difference: the stream
suppresses from the moment it learns a verdict, the audit applies the verdicts in force at the end of
the file to the whole night.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

import orjson

from pantau.detectors.assessor import FINAL, LOOK_GROWTH, RegionalAssessor
from pantau.detectors.form import Capacity
from pantau.detectors.inspector import TpsInspector
from pantau.detectors.monitor import RegionalMonitor
from pantau.detectors.regional import RegionSums
from pantau.detectors.suppression import Suppressions
from pantau.schemas import Alert, InvalidSubmission, Verdict, normalize, parse_verdict

from .sources import Record, read_records


@dataclass
class ReplaySummary:
    """What a replay saw and found."""

    documents: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    severities: Counter[str] = field(default_factory=Counter)
    flagged_tps: set[str] = field(default_factory=set)
    rejections: list[tuple[str, int, str]] = field(default_factory=list)

    MAX_LISTED_REJECTIONS = 20

    def reject(self, source: str, line: int, code: str, reason: str) -> None:
        """Count a refused record (the first :attr:`MAX_LISTED_REJECTIONS` listed with their reason)."""
        self.rejected[code] += 1
        if len(self.rejections) < self.MAX_LISTED_REJECTIONS:
            self.rejections.append((source, line, reason))

    def count(self, alert: Alert) -> None:
        """Count an alert the replay writes."""
        self.alerts[alert.detector] += 1
        self.severities[alert.severity] += 1
        if alert.kode_tps:
            self.flagged_tps.add(f"{alert.kode_tps}:{alert.jenis}")


#: Records between two regional assessments (the stream assesses on a timer instead). An assessment
#: re-tests the regions that grew by half since their last test, ~0.1 ms each; the last one, at the end
#: of the input, every region that changed since.
ASSESS_EVERY = 50_000


def replay(
    records: Iterable[Record],
    inspector: TpsInspector | None = None,
    summary: ReplaySummary | None = None,
    assessor: RegionalAssessor | None = None,
    assess_every: int = ASSESS_EVERY,
    suppressions: Suppressions | None = None,
) -> Iterator[Alert]:
    """Alerts of every record in order, each id once; refused records are counted in ``summary``.

    Without arguments every detector runs, the regional ones included; an ``inspector`` without a
    monitor (or no ``assessor``) leaves the regional statistics out. Alerts ``suppressions`` does not
    allow are left out and counted in ``summary.suppressed``.
    """
    if inspector is None:
        inspector = TpsInspector(Capacity(), monitor=RegionalMonitor())
        assessor = assessor or RegionalAssessor()
    summary = summary if summary is not None else ReplaySummary()
    emit = Written(summary, suppressions)
    regional = assessor is not None and inspector.monitor is not None
    for position, record in enumerate(records, 1):
        if record.envelope is None:
            summary.reject(record.source, record.line, record.error.code, record.error.reason)
        else:
            summary.documents += 1
            yield from emit(inspector(normalize(record.envelope)))
        if regional and position % assess_every == 0:
            yield from emit(assess(assessor, inspector.monitor.flush().items()))
    if regional:
        yield from emit(assess(assessor, inspector.monitor.flush().items(), FINAL))


class Written:
    """The alerts a replay writes, each id once (a resubmitted form repeats its findings), counted in
    ``summary``; those ``suppressions`` do not allow are left out and counted as suppressed."""

    def __init__(self, summary: ReplaySummary, suppressions: Suppressions | None = None):
        self.summary = summary
        self.suppressions = suppressions
        self.seen: set[str] = set()

    def __call__(self, alerts: Iterable[Alert]) -> Iterator[Alert]:
        for alert in alerts:
            if alert.alert_id in self.seen:
                continue
            self.seen.add(alert.alert_id)
            if self.suppressions is not None and not self.suppressions.allows(alert):
                self.summary.suppressed[alert.detector] += 1
                continue
            self.summary.count(alert)
            yield alert


def assess(assessor: RegionalAssessor, changed: Iterable[tuple[str, RegionSums]], growth: float = LOOK_GROWTH) -> list[Alert]:
    """Hand the changed region sums to the assessor, in key order, and assess those grown by ``growth``."""
    for key, sums in sorted(changed):
        assessor.update(key, sums)
    return assessor.assess(growth)


def records_of(paths: Iterable[str | Path]) -> Iterator[Record]:
    for path in paths:
        yield from read_records(path)


def verdicts_of(path: str | Path) -> Iterator[Verdict]:
    """The verdicts of a JSONL file; raises ``ValueError`` naming the first invalid line."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield parse_verdict(line)
            except InvalidSubmission as exc:
                raise ValueError(f"{path}:{number}: not a verdict ({exc.code}): {exc.reason}") from None


def read_verdicts(path: str | Path) -> Suppressions:
    """The suppressions of a JSONL file of verdicts; raises ``ValueError`` naming the first invalid line."""
    suppressions = Suppressions()
    for verdict in verdicts_of(path):
        suppressions.learn(verdict)
    return suppressions


def write_alerts(alerts: Iterable[Alert], out: BinaryIO) -> int:
    count = 0
    for alert in alerts:
        out.write(alert.to_json() + b"\n")
        count += 1
    return count


def write_rejections(records: Iterable[Record], out: BinaryIO) -> Iterator[Record]:
    """Pass records through, writing each refused one to ``out`` as a JSON line with its reason."""
    for record in records:
        if record.error is not None:
            line = {"source": record.source, "line": record.line, "code": record.error.code,
                    "reason": record.error.reason, "raw": record.raw.decode("utf-8", "replace")}  # fmt: skip
            out.write(orjson.dumps(line) + b"\n")
        yield record


def print_summary(summary: ReplaySummary, alerts_written: int, stream: TextIO | None = None) -> None:
    """A readable account of the replay (rich tables when available on a terminal)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stderr, highlight=False)
    console.print(f"[bold]{summary.documents:,}[/] documents inspected, "
                  f"[bold]{sum(summary.rejected.values()):,}[/] refused, "
                  f"[bold]{alerts_written:,}[/] alerts on [bold]{len(summary.flagged_tps):,}[/] TPS/ballots")  # fmt: skip
    if summary.alerts:
        table = Table(title="Alerts by detector", title_justify="left")
        table.add_column("detector")
        table.add_column("alerts", justify="right")
        for detector, count in sorted(summary.alerts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(detector, f"{count:,}")
        console.print(table)
        console.print("By severity: " + ", ".join(f"{s} {summary.severities[s]:,}" for s in ("critical", "warning", "info")))
    if summary.suppressed:
        console.print(f"Suppressed as false alarms by desk verdicts: {sum(summary.suppressed.values()):,} "
                      f"({', '.join(f'{d} {n:,}' for d, n in sorted(summary.suppressed.items()))})")  # fmt: skip
    if summary.rejected:
        console.print("Refused records by reason: " + ", ".join(f"{c} {n:,}" for c, n in sorted(summary.rejected.items())))
        for source, line, reason in summary.rejections:
            console.print(f"  {source}:{line}: {reason}", markup=False)

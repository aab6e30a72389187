"""``pantau evaluate ALERTS.jsonl TRUTH.jsonl``: score alerts against a simulated night's ground truth.

A *unit* is one TPS and ballot type (``kode_tps``, ``jenis``). The truth file (``pantau simulate``)
lists every unit an anomaly hit; every other simulated unit is clean, except the source TPS of a
copied tally (unchanged, so neither a hit nor clean: not scored). Each anomaly type is expected to be
caught by some detectors (:data:`EXPECTED`); per anomaly type:

``recall``        hit units with an alert of an expected detector / hit units
``precision``     those / all units the expected detectors flag among hit-by-this-type and clean units
                  (units hit by *other* anomalies are left out: they are another type's business)
``FA/10k clean``  clean units flagged by the expected detectors, per 10,000 clean units
``any alert``     hit units with any alert at all
``top-1``         misreads and typos: the first ``ocr.misread`` alert's best suggestion is the true
                  field and value (``in sugg.``: among its suggestions)

Regional alerts (``level`` kelurahan … provinsi) are scored per level against the truth's regional
rows: a region is hit when at least ``min_share`` of its TPS were hit, not scored when fewer were,
clean when none were.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .simulate.truth import NAMES, REGIONAL, read_truth

LEVELS = ("provinsi", "kabkota", "kecamatan", "kelurahan")

#: Detectors not about the form's own arithmetic or its revisions: the statistical ones (issue 6).
STATISTICAL = "@statistical"
FOUNDATION = ("form.*", "ocr.*", "revision.*")
EXPECTED: dict[str, tuple[str, ...]] = {
    "ocr_misread": ("form.*", "ocr.*"),
    "typo": ("form.*", "ocr.*"),
    "stuffing_incremental": (STATISTICAL,),
    "stuffing_extreme": (STATISTICAL,),
    "vote_shifting": (STATISTICAL,),
    "fabricated": (STATISTICAL,),
    "copied_tally": (STATISTICAL,),
    "duplicate_submission": ("*duplicate*",),
}
DEFAULT_MIN_SHARE = 0.10

Unit = tuple[str, str]


def expected_by(anomaly: str, detector: str, expected: dict[str, tuple[str, ...]] | None = None) -> bool:
    """Whether ``detector`` is one of those expected to catch ``anomaly``."""
    for pattern in (expected or EXPECTED).get(anomaly, ()):
        if pattern == STATISTICAL:
            if not any(fnmatch.fnmatchcase(detector, p) for p in FOUNDATION):
                return True
        elif fnmatch.fnmatchcase(detector, pattern):
            return True
    return False


class _Rates:
    """Recall and precision from ``hit``, ``detected`` and ``false_alarms``."""

    hit: int
    detected: int
    false_alarms: int

    @property
    def recall(self) -> float | None:
        return self.detected / self.hit if self.hit else None

    @property
    def precision(self) -> float | None:
        flagged = self.detected + self.false_alarms
        return self.detected / flagged if flagged else None


@dataclass
class Row(_Rates):
    anomaly: str
    hit: int = 0
    detected: int = 0
    any_alert: int = 0
    false_alarms: int = 0
    top1: int | None = None
    among: int | None = None
    corrected: int | None = None
    resolved: int | None = None


@dataclass
class RegionalRow(_Rates):
    anomaly: str
    level: str
    hit: int = 0
    detected: int = 0
    false_alarms: int = 0
    clean: int = 0


@dataclass
class Evaluation:
    units: int
    clean: int
    alerts: int
    rows: list[Row]
    detectors: list[dict[str, Any]]
    regional: list[RegionalRow] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def fa_per_10k(self, count: int) -> float:
        return count / self.clean * 10_000 if self.clean else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "units": self.units, "clean_units": self.clean, "alerts": self.alerts,
            "anomalies": [{"anomaly": r.anomaly, "hit": r.hit, "detected": r.detected, "recall": r.recall,
                           "precision": r.precision, "false_alarms": r.false_alarms,
                           "false_alarms_per_10k_clean": round(self.fa_per_10k(r.false_alarms), 3),
                           "any_alert": r.any_alert, "top1": r.top1, "among_suggestions": r.among,
                           "corrected": r.corrected, "resolved": r.resolved} for r in self.rows],
            "detectors": self.detectors,
            "regional": [{"anomaly": r.anomaly, "level": r.level, "hit": r.hit, "detected": r.detected,
                          "recall": r.recall, "precision": r.precision, "false_alarms": r.false_alarms,
                          "clean": r.clean} for r in self.regional],
        }  # fmt: skip


def read_alerts(path: str | Path, idle_seconds: float = 5.0) -> Iterable[dict[str, Any]]:
    """Alerts of a JSONL file, or of the alerts topic for ``kafka://HOST:PORT[/TOPIC]`` (from the beginning
    until ``idle_seconds`` pass without a new alert)."""
    text = str(path)
    if text.startswith("kafka://"):
        from .stream.ingest import topic_consumer
        from .stream.settings import Settings

        bootstrap, _, topic = text[len("kafka://") :].partition("/")
        consumer = topic_consumer(bootstrap, topic or Settings.from_env().topic_alerts, poll_timeout=idle_seconds)
        try:
            for message in consumer:
                yield orjson.loads(message.value)
        finally:
            consumer.close()
        return
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def evaluate(
    alerts: Iterable[dict[str, Any]],
    meta: dict[str, Any],
    truth: list[dict[str, Any]],
    *,
    min_share: float = DEFAULT_MIN_SHARE,
    expected: dict[str, tuple[str, ...]] | None = None,
) -> Evaluation:
    """Score alerts (decoded Alert objects) against a truth file's meta and rows."""
    hit: dict[Unit, dict[str, Any]] = {}
    neutral: set[Unit] = set()
    regional: dict[str, dict[tuple[str, str, str], float]] = defaultdict(dict)
    for row in truth:
        if row["level"] == "tps":
            hit[(row["kode_tps"], row["jenis"])] = row
            source = row["detail"].get("source")
            if source:
                neutral.add((source, row["jenis"]))
        else:
            regional[row["anomaly"]][(row["level"], row["region"], row["jenis"])] = row["detail"]["share"]
    neutral -= hit.keys()
    units = sum(meta.get("units", {}).values())
    clean = units - len(hit) - len(neutral)

    flagged: dict[Unit, set[str]] = defaultdict(set)
    first_misread: dict[Unit, dict[str, Any]] = {}
    region_flags: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    per_detector: Counter[str] = Counter()
    count = 0
    for alert in alerts:
        count += 1
        detector = alert["detector"]
        per_detector[detector] += 1
        if alert.get("level", "tps") == "tps":
            unit = (alert["kode_tps"], alert["jenis"])
            flagged[unit].add(detector)
            if detector == "ocr.misread" and unit not in first_misread:
                first_misread[unit] = alert
        else:
            region_flags[(alert["level"], alert["region"], alert["jenis"])].add(detector)

    rows = []
    for anomaly in NAMES:
        units_hit = [u for u, r in hit.items() if r["anomaly"] == anomaly]
        row = Row(anomaly, hit=len(units_hit))
        for unit in units_hit:
            detectors = flagged.get(unit, set())
            row.any_alert += bool(detectors)
            row.detected += any(expected_by(anomaly, d, expected) for d in detectors)
        for unit, detectors in flagged.items():
            if unit not in hit and unit not in neutral and any(expected_by(anomaly, d, expected) for d in detectors):
                row.false_alarms += 1
        if anomaly in ("ocr_misread", "typo"):
            row.top1 = row.among = 0
            for unit in units_hit:
                detail = hit[unit]["detail"]
                suggestions = first_misread.get(unit, {}).get("suggestions") or []
                found = [(s["field"], s["proposed"]) for s in suggestions]
                row.top1 += found[:1] == [(detail["field"], detail["true"])]
                row.among += (detail["field"], detail["true"]) in found
            row.corrected = sum(1 for u in units_hit if hit[u]["detail"].get("corrected"))
            row.resolved = sum(1 for u in units_hit if hit[u]["detail"].get("corrected") and "revision.resolved" in flagged.get(u, ()))
        rows.append(row)

    detectors = []
    for detector, n in sorted(per_detector.items(), key=lambda kv: (-kv[1], kv[0])):
        on = [u for u, d in flagged.items() if detector in d]
        by_type = Counter(hit[u]["anomaly"] for u in on if u in hit)
        false = sum(1 for u in on if u not in hit and u not in neutral)
        detectors.append({"detector": detector, "alerts": n, "units": len(on), "on_hit_units": dict(by_type),
                          "clean_units": false, "false_alarms_per_10k_clean": round(false / clean * 10_000, 3) if clean else 0.0})  # fmt: skip

    regional_rows = _regional(regional, region_flags, meta, min_share, expected)
    return Evaluation(units, clean, count, rows, detectors, regional_rows, meta)


def _regional(regional, region_flags, meta, min_share, expected) -> list[RegionalRow]:
    jenis = meta.get("jenis", ["ppwp"])
    scored: dict[str, set] = defaultdict(set)  # level → region units hit by or left out for any anomaly
    for anomaly, shares in regional.items():
        for key in shares:
            scored[key[0]].add(key)
    out = []
    for anomaly in NAMES:
        shares = regional.get(anomaly, {})
        if anomaly not in REGIONAL and not shares:
            continue
        for level in LEVELS:
            total = meta.get("regions", {}).get(level, 0) * len(jenis)
            hits = {k for k, s in shares.items() if k[0] == level and s >= min_share}
            row = RegionalRow(anomaly, level, hit=len(hits), clean=max(total - len(scored[level]), 0))
            for key, detectors in region_flags.items():
                if key[0] != level or not any(expected_by(anomaly, d, expected) for d in detectors):
                    continue
                if key in hits:
                    row.detected += 1
                elif key not in scored[level]:
                    row.false_alarms += 1
            out.append(row)
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def print_evaluation(result: Evaluation, stream=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, highlight=False)
    meta = result.meta
    console.print(f"[bold]{result.units:,}[/] simulated TPS×ballot units ({', '.join(meta.get('jenis', []))}; seed {meta.get('seed')}), "
                  f"[bold]{result.units - result.clean:,}[/] hit or not scored, [bold]{result.clean:,}[/] clean; "
                  f"[bold]{result.alerts:,}[/] alerts")  # fmt: skip
    table = Table(title="Per anomaly type (TPS level)", title_justify="left")
    for name, justify in (("anomaly", "left"), ("expected detectors", "left"), ("hit", "right"), ("detected", "right"),
                          ("recall", "right"), ("precision", "right"), ("FA/10k clean", "right"), ("any alert", "right"),
                          ("top-1", "right"), ("in sugg.", "right"), ("corrected→resolved", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in result.rows:
        expect = ", ".join("statistical" if p == STATISTICAL else p for p in EXPECTED[row.anomaly])
        table.add_row(
            row.anomaly, expect, f"{row.hit:,}", f"{row.detected:,}", _pct(row.recall), _pct(row.precision),
            f"{result.fa_per_10k(row.false_alarms):.2f}", _pct(row.any_alert / row.hit if row.hit else None),
            _pct(row.top1 / row.hit) if row.top1 is not None and row.hit else "",
            _pct(row.among / row.hit) if row.among is not None and row.hit else "",
            f"{row.resolved:,}/{row.corrected:,}" if row.corrected is not None else "",
        )  # fmt: skip
    console.print(table)
    table = Table(title="Per detector", title_justify="left")
    for name, justify in (("detector", "left"), ("alerts", "right"), ("units", "right"), ("on hit units (by anomaly)", "left"),
                          ("clean units", "right"), ("FA/10k clean", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for d in result.detectors:
        hits = ", ".join(f"{k} {v:,}" for k, v in sorted(d["on_hit_units"].items(), key=lambda kv: -kv[1]))
        table.add_row(d["detector"], f"{d['alerts']:,}", f"{d['units']:,}", hits, f"{d['clean_units']:,}", f"{d['false_alarms_per_10k_clean']:.2f}")
    console.print(table)
    if result.regional:
        table = Table(title="Regional (a region is hit when ≥ min-share of its TPS were hit)", title_justify="left")
        for name in ("anomaly", "level", "hit regions", "detected", "recall", "precision", "false alarms", "clean regions"):
            table.add_column(name, justify="left" if name in ("anomaly", "level") else "right")
        for r in result.regional:
            table.add_row(r.anomaly, r.level, f"{r.hit:,}", f"{r.detected:,}", _pct(r.recall), _pct(r.precision),
                          f"{r.false_alarms:,}", f"{r.clean:,}")  # fmt: skip
        console.print(table)
    console.print("Statistical detectors flag regions (kecamatan and up) and, at the TPS level, peer outliers; a manipulation "
                  "that keeps the arithmetic and moves a TPS by less than its peers' spread is found only regionally, if at all.",
                  style="dim")  # fmt: skip


def run(alerts_path: str | Path, truth_path: str | Path, min_share: float = DEFAULT_MIN_SHARE) -> Evaluation:
    meta, truth = read_truth(truth_path)
    return evaluate(read_alerts(alerts_path), meta, truth, min_share=min_share)

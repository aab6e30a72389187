"""The audit report: one self-contained HTML page, the alerts as CSV and JSONL, the regions as CSV.

Everything written is a function of the inputs' bytes, the verdicts and the software's versions
(recorded in the report): no clock, no paths, no process count. Charts are the desk's inline SVG
(:mod:`pantau.desk.plots`), so the page needs no script, no network and no other file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from pantau import __version__
from pantau.desk.plots import digit_chart, fingerprint_chart, timeline_chart
from pantau.detectors.assessor import CLEAR_FACTOR, FDR, MIN_FINGERPRINT_TPS, MIN_TPS, MIN_UNITS
from pantau.detectors.form import Capacity
from pantau.detectors.monitor import PEER_FAR, PEER_MIN
from pantau.detectors.regional import FIELDS, IX, RegionSums, region_tests
from pantau.detectors.suppression import Ruling
from pantau.replay import write_alerts
from pantau.schemas import Alert, Verdict
from pantau.stream.metrics import expected_tps

from .engine import AuditRun

SEVERITIES = ("critical", "warning", "info")
JENIS_NAMES = {"ppwp": "Presiden (PPWP)", "pdpr": "DPR RI", "pdpd": "DPD", "pdprdp": "DPRD provinsi",
               "pdprdk": "DPRD kabupaten/kota"}  # fmt: skip
#: TPS listed in the page (most severe first); the CSV holds every alert.
MAX_LISTED_TPS = 1000
FINGERPRINT_BINS = 30
VERSIONED = ("numpy", "scipy", "river", "pydantic", "diptest", "orjson", "jinja2")
CSV_COLUMNS = (
    "alert_id", "detector", "severity", "level", "region", "provinsi", "provinsi_nama", "kabkota", "jenis", "kode_tps",
    "score", "observed_at", "reason", "reason_en", "suggestions", "final_values", "photo", "verdict_decision",
    "verdict_by", "verdict_role", "verdict_at", "verdict_note", "verdict_id",
)  # fmt: skip


@dataclass(frozen=True)
class InputFile:
    name: str
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> InputFile:
        digest = hashlib.sha256()
        with open(path, "rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
        return cls(Path(path).name, Path(path).stat().st_size, digest.hexdigest())


def province_names() -> dict[str, str]:
    raw = resources.files("pantau").joinpath("data/provinces.json").read_bytes()
    return json.loads(raw)["names"]


def ballots_not_held() -> dict[str, set[str]]:
    """Per province, the ballot types its TPS do not vote (shipped with the TPS counts)."""
    raw = json.loads(resources.files("pantau").joinpath("data/tps_expected.json").read_bytes())
    return {code: set(jenis) for code, jenis in raw.get("ballots_not_held", {}).items() if code != "_"}


def latest_verdicts(verdicts: Iterable[Verdict]) -> dict[str, Verdict]:
    """The verdict in force per alert id: the latest decided (ties: the larger verdict id)."""
    latest: dict[str, Verdict] = {}
    for verdict in verdicts:
        current = latest.get(verdict.alert_id)
        if current is None or Ruling.of(verdict).supersedes(Ruling.of(current)):
            latest[verdict.alert_id] = verdict
    return latest


def versions() -> dict[str, str]:
    found = {"pantau": __version__, "python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def photos_in_order(images: Sequence[str]) -> list[str]:
    """The web links among a document's photos, the tally page (C.Hasil page 2, the second image) first.
    Anything but http(s) is dropped: a document could carry a ``javascript:`` link."""
    ordered = ([images[1]] if len(images) > 1 else []) + [url for i, url in enumerate(images) if i != 1]
    return [url for url in ordered if url.startswith(("https://", "http://"))]


def _suggestions(alert: Alert) -> str:
    return "; ".join(f"{s.field}: {s.current} → {s.proposed}" for s in alert.suggestions)


def _final_values(alert: Alert, run: AuditRun) -> str:
    finals = run.totals.suggestions.get(alert.alert_id, [])
    return "; ".join(f"{name}: {'kosong' if final is None else final}" for name, _, _, final in finals)


def write_alerts_csv(run: AuditRun, verdicts: dict[str, Verdict], names: dict[str, str], out: Path) -> None:
    with open(out, "w", encoding="utf-8", newline="") as sink:
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for alert in run.alerts:
            verdict = verdicts.get(alert.alert_id)
            key = f"{alert.kode_tps}:{alert.jenis}"
            writer.writerow([
                alert.alert_id, alert.detector, alert.severity, alert.level, alert.region, alert.region[:2],
                names.get(alert.region[:2], ""), alert.region[:4] if len(alert.region) >= 4 else "", alert.jenis,
                alert.kode_tps or "", f"{alert.score:g}", alert.observed_at.isoformat() if alert.observed_at else "",
                alert.reason, alert.reason_en, _suggestions(alert), _final_values(alert, run),
                next(iter(photos_in_order(run.totals.photos.get(key, ()))), "") if alert.kode_tps else "",
                verdict.decision if verdict else "", verdict.decided_by if verdict else "", verdict.role if verdict else "",
                verdict.decided_at.isoformat() if verdict else "", verdict.note if verdict else "",
                verdict.verdict_id if verdict else "",
            ])  # fmt: skip


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _region_test_rows(results) -> list[dict[str, Any]]:
    rows = []
    for test in results:
        rows.append({
            "name": test.name, "n": test.n,
            "statistic": "–" if test.statistic != test.statistic else f"{test.statistic:.4f}",
            "expected": "–" if test.expected is None or test.expected != test.expected else f"{test.expected:.4f}",
            "textbook": "–" if test.textbook is None else f"{test.textbook:g}",
            "pvalue": "–" if test.pvalue is None else f"{test.pvalue:.2e}",
            "low": test.pvalue is not None and test.pvalue < FDR,
        })  # fmt: skip
    return rows


def _last_digit_chart(sums: RegionSums, title: str) -> str | None:
    observed = sums.vector[IX["ld0"] : IX["ld0"] + 10]
    expected = sums.vector[IX["le0"] : IX["le0"] + 10]
    if observed.sum() <= 0 or expected.sum() <= 0:
        return None
    return digit_chart((observed / observed.sum()).tolist(), (expected / expected.sum()).tolist(),
                       [str(d) for d in range(10)], title, "share of counts ≥ 10",
                       observed_label="observed", expected_label="expected for these counts")  # fmt: skip


def _arrival_chart(counter: Counter, jenis: str, title: str) -> str | None:
    hours = sorted(hour for (j, hour) in counter if j == jenis)
    if not hours:
        return None
    cumulative = np.cumsum([counter[jenis, hour] for hour in hours]).tolist()
    return timeline_chart(hours, cumulative, title, "time (WIB)", "TPS received")


def build_context(run: AuditRun, inputs: list[InputFile], verdicts: dict[str, Verdict], assess_every: int,
                  verdict_source: str | None, names: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    expected = expected_tps()
    not_held = ballots_not_held()
    totals, summary, alerts = run.totals, run.summary, run.alerts
    jenis_seen = sorted({j for _, j in totals.documents}, key=list(JENIS_NAMES).index)
    tps_alerts = [a for a in alerts if a.kode_tps]
    regional_alerts = [a for a in alerts if not a.kode_tps]

    by_detector: dict[str, Counter] = defaultdict(Counter)
    for alert in alerts:
        by_detector[alert.detector][alert.severity] += 1
    detector_rows = [{"detector": d, **{s: c[s] for s in SEVERITIES}, "total": sum(c.values())}
                     for d, c in sorted(by_detector.items())]  # fmt: skip

    provinces = sorted({p for p, _ in totals.documents} | {a.region[:2] for a in alerts})
    province_rows = []
    for code in provinces:
        docs = sum(n for (p, _), n in totals.documents.items() if p == code)
        tps = sum(n for (p, _), n in totals.tps.items() if p == code)
        want = expected.get(code, 0) * sum(1 for j in jenis_seen if j not in not_held.get(code, ()))
        mine = [a for a in tps_alerts if a.region[:2] == code]
        sev = Counter(a.severity for a in mine)
        province_rows.append({
            "code": code, "name": names.get(code, "?"), "documents": docs, "tps": tps, "expected": want,
            "coverage": _share(tps, want), **{s: sev[s] for s in SEVERITIES},
            "flagged": len({(a.kode_tps, a.jenis) for a in mine}),
            "regional": sum(1 for a in regional_alerts if a.region[:2] == code and a.detector.startswith("stat.")
                            and not a.resolves),
        })  # fmt: skip

    arrivals = []
    for jenis in jenis_seen:
        chart = _arrival_chart(totals.arrivals, jenis, f"{JENIS_NAMES[jenis]}: TPS received, cumulative")
        arrivals.append({"jenis": jenis, "name": JENIS_NAMES[jenis], "chart": chart, "undated": totals.undated[jenis]})
    alert_hours = Counter(int(a.observed_at.timestamp()) // 3600 * 3600 for a in tps_alerts if a.observed_at)
    alerts_chart = (timeline_chart(sorted(alert_hours), [alert_hours[h] for h in sorted(alert_hours)],
                                   "TPS alerts per hour (by the time of their data)", "time (WIB)", "alerts")
                    if alert_hours else None)  # fmt: skip

    digits = []
    for jenis in jenis_seen:
        keys = sorted(k for k in run.assessor.provinces if k.endswith(f":{jenis}"))
        national = RegionSums()
        for key in keys:
            national.merge(run.assessor.provinces[key])
        rows = [{"code": "", "name": "Nasional · National", "tests": _region_test_rows(region_tests(national))}]
        for key in keys:
            code = key.split(":")[1]
            rows.append({"code": code, "name": names.get(code, "?"), "tests": _region_test_rows(run.assessor.results.get(key, []))})
        digits.append({"jenis": jenis, "name": JENIS_NAMES[jenis], "rows": rows, "test_names": [t["name"] for t in rows[0]["tests"]],
                       "chart": _last_digit_chart(national, f"{JENIS_NAMES[jenis]}: last digit, national")})  # fmt: skip

    fingerprints = _fingerprints(run, names, tps_alerts)
    ocr = _ocr(run, verdicts)
    listed, total_flagged = _flagged(run, names, verdicts, tps_alerts)
    decisions = Counter(v.decision for a, v in ((a, verdicts.get(a.alert_id)) for a in alerts) if v is not None)
    capacity = Capacity()
    return {
        "version": __version__,
        "inputs": inputs,
        "records": run.records,
        "versions": versions(),
        "config": {
            "assess every (records)": f"{assess_every:,}", "FDR (Benjamini–Hochberg, per level)": FDR,
            "clear factor (hysteresis)": CLEAR_FACTOR, "minimum TPS per regional test": MIN_TPS,
            "minimum TPS, fingerprint test": MIN_FINGERPRINT_TPS,
            "minimum counts per digit test": MIN_UNITS, "peer outlier false-alarm rate": PEER_FAR,
            "minimum peers": PEER_MIN, "capacity, domestic TPS": capacity.domestic,
            "capacity, overseas units": capacity.overseas, "region-sum fields": len(FIELDS),
        },  # fmt: skip
        "national": {
            "documents": summary.documents, "refused": sum(summary.rejected.values()),
            "refused_by_code": sorted(summary.rejected.items()), "rejections": summary.rejections,
            "tps": sum(totals.tps.values()), "alerts": len(alerts), "tps_alerts": len(tps_alerts),
            "regional_alerts": len(regional_alerts), "flagged": total_flagged,
            "severities": {s: summary.severities[s] for s in SEVERITIES},
        },  # fmt: skip
        "jenis": [{"jenis": j, "name": JENIS_NAMES[j], "documents": sum(n for (_, jj), n in totals.documents.items() if jj == j),
                   "tps": sum(n for (_, jj), n in totals.tps.items() if jj == j),
                   "expected": sum(expected.get(p, 0) for p in provinces if j not in not_held.get(p, ()))}
                  for j in jenis_seen],  # fmt: skip
        "detectors": detector_rows,
        "provinces": province_rows,
        "arrivals": arrivals,
        "alerts_chart": alerts_chart,
        "digits": digits,
        "fingerprints": fingerprints,
        "ocr": ocr,
        "regional": [_alert_row(a, names, verdicts) for a in regional_alerts],
        "flagged": listed,
        "max_listed": MAX_LISTED_TPS,
        "verdict_source": verdict_source,
        "decisions": sorted(decisions.items()),
        "verdicts_total": len(verdicts),
    }


def _alert_row(alert: Alert, names: dict[str, str], verdicts: dict[str, Verdict]) -> dict[str, Any]:
    verdict = verdicts.get(alert.alert_id)
    return {
        "id": alert.alert_id, "detector": alert.detector, "severity": alert.severity, "level": alert.level,
        "region": alert.region, "province": names.get(alert.region[:2], "?"), "jenis": alert.jenis,
        "reason": alert.reason, "reason_en": alert.reason_en, "suggestions": _suggestions(alert),
        "verdict": verdict,
    }  # fmt: skip


def _fingerprints(run: AuditRun, names: dict[str, str], tps_alerts: list[Alert]) -> list[dict[str, Any]]:
    """Turnout × the province leader's share of every final PPWP form, flagged TPS circled."""
    forms = run.totals.forms
    if not forms:
        return []
    flagged = {a.kode_tps for a in tps_alerts if a.jenis == "ppwp"}
    by_province: dict[str, list] = defaultdict(list)
    for key in sorted(forms):
        by_province[key[:2]].append(forms[key])
    out = []
    for code, profiles in sorted(by_province.items()):
        votes = Counter()
        for p in profiles:
            votes.update(dict(p.counts))
        leader = min(votes, key=lambda k: (-votes[k], k))
        points, circled = [], []
        for p in profiles:
            point = (p.turnout, dict(p.counts).get(leader, 0) / p.valid)
            points.append(point)
            if p.kode_tps in flagged:
                circled.append(point)
        title = f"{names.get(code, code)}: turnout × share of {leader}"
        out.append({"code": code, "name": names.get(code, "?"), "leader": leader, "n": len(points), "circled": len(circled),
                    "chart": fingerprint_chart(points, circled, title, "turnout", f"share of {leader}", FINGERPRINT_BINS,
                                               highlight_label="flagged TPS")})  # fmt: skip
    return out


def _ocr(run: AuditRun, verdicts: dict[str, Verdict]) -> dict[str, Any]:
    """What became of each OCR suggestion: the TPS's final value, and the desk's word where given."""
    outcomes = Counter()
    desk = Counter()
    for alert in run.alerts:
        if not alert.suggestions:
            continue
        finals = run.totals.suggestions.get(alert.alert_id, [])
        for _, current, proposed, final in finals:
            outcomes["as suggested" if final == proposed else "unchanged" if final == current
                     else "withdrawn" if final is None else "otherwise"] += 1  # fmt: skip
        verdict = verdicts.get(alert.alert_id)
        if verdict is not None:
            accepted = verdict.decision == "corrected" and all(
                verdict.corrected_values.get(s.field) == s.proposed for s in alert.suggestions)
            desk["accepted" if accepted else verdict.decision] += 1
    total = sum(outcomes.values())
    rows = [{"outcome": o, "count": outcomes[o], "share": _share(outcomes[o], total),
             "width": round(100 * outcomes[o] / total, 1) if total else 0}
            for o in ("as suggested", "unchanged", "otherwise", "withdrawn")]  # fmt: skip
    return {"total": total, "rows": rows, "desk": sorted(desk.items())}


def _flagged(run: AuditRun, names: dict[str, str], verdicts: dict[str, Verdict], tps_alerts: list[Alert]):
    """The flagged TPS-ballots, most severe first, at most :data:`MAX_LISTED_TPS` of them."""
    grouped: dict[tuple[str, str], list[Alert]] = defaultdict(list)
    for alert in tps_alerts:
        grouped[alert.kode_tps, alert.jenis].append(alert)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    order = sorted(grouped, key=lambda k: (min(rank[a.severity] for a in grouped[k]), k))
    rows = []
    for kode, jenis in order[:MAX_LISTED_TPS]:
        photos = photos_in_order(run.totals.photos.get(f"{kode}:{jenis}", ()))
        rows.append({"kode": kode, "jenis": jenis, "province": names.get(kode[:2], "?"), "photos": photos,
                     "alerts": [_alert_row(a, names, verdicts) for a in grouped[kode, jenis]]})  # fmt: skip
    return rows, len(grouped)


def render(context: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("pantau.audit", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    return env.get_template("report.html").render(**context)


def write_report(run: AuditRun, out: Path, inputs: list[InputFile], verdicts: dict[str, Verdict], assess_every: int,
                 verdict_source: str | None = None) -> list[Path]:  # fmt: skip
    """Write ``index.html``, ``alerts.csv``, ``alerts.jsonl`` and ``regions.csv`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    names = province_names()
    context = build_context(run, inputs, verdicts, assess_every, verdict_source, names)
    written = [out / "index.html", out / "alerts.csv", out / "alerts.jsonl", out / "regions.csv"]
    written[0].write_text(render(context), encoding="utf-8")
    write_alerts_csv(run, verdicts, names, written[1])
    with open(written[2], "wb") as sink:
        write_alerts(run.alerts, sink)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["provinsi", "nama", "documents", "tps_ballots", "tps_ballots_expected", "critical", "warning", "info",
                     "flagged_tps_ballots", "regional_flags"])  # fmt: skip
    for row in context["provinces"]:
        writer.writerow([row["code"], row["name"], row["documents"], row["tps"], row["expected"], row["critical"],
                         row["warning"], row["info"], row["flagged"], row["regional"]])  # fmt: skip
    written[3].write_text(buffer.getvalue(), encoding="utf-8")
    return written

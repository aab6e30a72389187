"""``pantau audit``: the sharded replay gives the single replay's alerts; the report is deterministic,
self-consistent with its alert files, joins desk verdicts, and shows document-derived text inert."""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from pantau import demo_data
from pantau.audit import audit, desk_verdicts
from pantau.audit.engine import run_replay
from pantau.audit.report import MAX_LISTED_TPS
from pantau.cli import main
from pantau.replay import records_of, replay
from pantau.schemas import Verdict
from pantau.simulate import simulate
from pantau.sources import read_owned_records, read_records, shard_of

NIGHT_ANOMALIES = ["ocr_misread:rate=0.05", "stuffing_extreme:rate=0.4,target=340206", "duplicate_submission:rate=0.02"]


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """Two kabupaten/kota on different shards of two, with misreads, corrections and a stuffed kecamatan."""
    path = tmp_path_factory.mktemp("night") / "night.jsonl"
    simulate(path, kabkota=["3402", "3471"], seed=5, synthetic_registry=True, anomalies=NIGHT_ANOMALIES)
    assert {shard_of(k + "0" * 9, 2) for k in ("3402", "3471")} == {0, 1}
    return path


@pytest.fixture(scope="module")
def reports(night, tmp_path_factory) -> tuple[Path, Path]:
    """The same audit twice: in this process, and in two processes."""
    first, second = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    audit([night, demo_data()], first, jobs=1, assess_every=2000)
    audit([night, demo_data()], second, jobs=2, assess_every=2000)
    return first, second


def hostile_file(tmp_path: Path) -> Path:
    """Real documents with refused lines between them, ending in a truncated gzip stream."""
    lines = gzip.decompress(demo_data().read_bytes()).splitlines()[:60]
    lines[10:10] = [b'{"kode_tps": "3173011002', b"not json", b'{"jenis": "ppwp", "doc": {}}', b'{"kode_tps": 12}']
    path = tmp_path / "mixed.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n")[:-30])
    return path


def view(record) -> tuple:
    error = record.error and (record.error.code, record.error.reason)
    return record.source, record.line, record.raw, record.envelope, error


def test_shards_partition_every_record_of_a_file_once_in_file_order(tmp_path):
    path = hostile_file(tmp_path)
    whole = list(read_records(path))
    assert whole[-1].error is not None and "unreadable" in whole[-1].error.reason
    shards = [list(read_owned_records(path, lambda kode, s=s: shard_of(kode, 3) == s)) for s in range(3)]
    assert {len(records) for records in shards} == {len(whole)}
    for position, record in enumerate(whole):
        owners = [view(records[position]) for records in shards if records[position] is not None]
        assert owners == [view(record)]
    assert all(r is None or r.envelope is None or shard_of(r.envelope.kode_tps, 3) == s
               for s, records in enumerate(shards) for r in records)  # fmt: skip


@pytest.mark.parametrize("assess_every", [1000, 7])
def test_any_number_of_processes_gives_the_single_replay_s_alerts_in_its_order(night, tmp_path, assess_every):
    inputs = [night, hostile_file(tmp_path)] if assess_every == 1000 else [demo_data()]
    expected = [a.to_json() for a in replay(records_of(inputs), assess_every=assess_every)]
    assert any(b'"level":"kecamatan"' in a for a in expected) or assess_every == 7
    for jobs in (1, 2, 3):
        run = run_replay(inputs, jobs=jobs, assess_every=assess_every)
        assert [a.to_json() for a in run.alerts] == expected, f"jobs={jobs}"
    assert run.summary.rejected or assess_every == 7


def test_the_report_is_the_same_bytes_for_one_process_and_two(reports):
    first, second = reports
    names = sorted(p.name for p in first.iterdir())
    assert names == ["alerts.csv", "alerts.jsonl", "index.html", "regions.csv"] == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def cell(page: str, element_id: str) -> int:
    match = re.search(rf'id="{re.escape(element_id)}">([\d,]+)<', page)
    assert match, element_id
    return int(match.group(1).replace(",", ""))


def test_the_report_s_numbers_are_those_of_its_alert_files(reports, night):
    report = reports[0]
    page = (report / "index.html").read_text(encoding="utf-8")
    with open(report / "alerts.csv", encoding="utf-8", newline="") as rows:
        alerts = list(csv.DictReader(rows))
    jsonl = [orjson.loads(line) for line in (report / "alerts.jsonl").read_bytes().splitlines()]
    assert [a["alert_id"] for a in alerts] == [a["alert_id"] for a in jsonl]
    assert len(set(a["alert_id"] for a in alerts)) == len(alerts) == cell(page, "alerts") > 0
    tps = [a for a in alerts if a["kode_tps"]]
    assert cell(page, "tps-alerts") == len(tps) and cell(page, "regional-alerts") == len(alerts) - len(tps) > 0
    assert cell(page, "flagged") == len({(a["kode_tps"], a["jenis"]) for a in tps})
    for severity, count in Counter(a["severity"] for a in alerts).items():
        assert cell(page, f"severity-{severity}") == count
    table = page.split('id="by-detector"')[1].split("</table>")[0]
    shown = {m[0]: tuple(map(int, m[1:])) for m in re.findall(
        r'data-detector="([^"]+)">.*?<td class="n">(\d+)</td><td class="n">(\d+)</td><td class="n">(\d+)</td><td class="n">(\d+)</td>', table)}  # fmt: skip
    counted = Counter((a["detector"], a["severity"]) for a in alerts)
    assert shown == {d: (counted[d, "critical"], counted[d, "warning"], counted[d, "info"], sum(counted[d, s] for s in ("critical", "warning", "info")))
                     for d, _ in counted}  # fmt: skip
    with open(report / "regions.csv", encoding="utf-8", newline="") as rows:
        regions = {r["provinsi"]: r for r in csv.DictReader(rows)}
    assert set(regions) == {"31", "34"}
    for code, row in regions.items():
        mine = [a for a in tps if a["provinsi"] == code]
        assert int(row["critical"]) == sum(a["severity"] == "critical" for a in mine)
        assert int(row["flagged_tps_ballots"]) == len({(a["kode_tps"], a["jenis"]) for a in mine})
    documents = sum(1 for r in records_of([night, demo_data()]) if r.envelope is not None)
    assert cell(page, "documents") == documents == sum(int(r["documents"]) for r in regions.values())
    listed = page.count('<tr data-tps="')
    assert listed == min(cell(page, "flagged"), MAX_LISTED_TPS)


def test_the_report_records_its_inputs_and_configuration(reports, night):
    page = (reports[0] / "index.html").read_text(encoding="utf-8")
    assert hashlib.sha256(night.read_bytes()).hexdigest() in page
    assert hashlib.sha256(demo_data().read_bytes()).hexdigest() in page
    assert "2,000" in page.split('id="konfigurasi"')[1]  # assess every
    assert str(night.parent) not in page  # no machine paths: the page is the same wherever it is made


def test_ocr_suggestions_are_followed_to_the_tps_s_final_value(reports):
    page = (reports[0] / "index.html").read_text(encoding="utf-8")
    with open(reports[0] / "alerts.csv", encoding="utf-8", newline="") as rows:
        suggested = [a for a in csv.DictReader(rows) if a["suggestions"]]
    assert suggested and all(a["final_values"] for a in suggested)
    as_suggested = sum(
        1 for a in suggested for s, f in zip(a["suggestions"].split("; "), a["final_values"].split("; "))
        if s.rsplit("→ ", 1)[1] == f.rsplit(": ", 1)[1]
    )  # fmt: skip
    assert as_suggested > 0  # the simulator corrects misreads later in the night
    shown = re.search(r'data-outcome="as suggested"><td>as suggested</td><td class="n">(\d+)</td>', page)
    assert shown and int(shown.group(1)) == as_suggested


def verdict_for(alert: dict, decision: str, note: str, when: str, verdict_id: str) -> Verdict:
    return Verdict(verdict_id=verdict_id, alert_id=alert["alert_id"], detector=alert["detector"], jenis=alert["jenis"],
                   kode_tps=alert["kode_tps"], region=alert["region"], decision=decision, note=note, decided_by="rina",
                   role="verifier", decided_at=datetime.fromisoformat(when))  # fmt: skip


def test_desk_verdicts_are_joined_from_an_export_or_the_desk_database_latest_first(tmp_path):
    first = tmp_path / "plain"
    audit([demo_data()], first)
    alerts = [orjson.loads(line) for line in (first / "alerts.jsonl").read_bytes().splitlines()]
    target = next(a for a in alerts if a["detector"] == "form.sum_valid")
    xss = '<script>window.__xss = 1</script>'
    export = tmp_path / "verdicts.jsonl"
    export.write_bytes(b"".join(v.model_dump_json().encode() + b"\n" for v in (
        verdict_for(target, "false_alarm", "salah baca", "2024-02-15T10:00:00+07:00", "v-2"),
        verdict_for(target, "confirmed", f"sesuai foto {xss}", "2024-02-15T09:00:00+07:00", "v-1"),
    )))  # fmt: skip
    joined = tmp_path / "joined"
    audit([demo_data()], joined, verdicts_file=export)
    with open(joined / "alerts.csv", encoding="utf-8", newline="") as rows:
        decided = {a["alert_id"]: a for a in csv.DictReader(rows) if a["verdict_id"]}
    assert list(decided) == [target["alert_id"]] and decided[target["alert_id"]]["verdict_decision"] == "false_alarm"
    page = (joined / "index.html").read_text(encoding="utf-8")
    assert "false_alarm 1" in page and "salah baca" in page

    from pantau.desk.db import Outbox, connect

    sessions = connect(f"sqlite:///{tmp_path}/desk.db")
    with sessions() as session:
        verdict = verdict_for(target, "confirmed", xss, "2024-02-16T08:00:00+07:00", "v-3")
        session.add(Outbox(key="3173", value=verdict.model_dump_json(), created_at=datetime.now(timezone.utc)))
        session.commit()
    assert [v.verdict_id for v in desk_verdicts(str(tmp_path / "desk.db"))] == ["v-3"]
    from_db = tmp_path / "from-db"
    audit([demo_data()], from_db, verdicts_file=export, desk_db=f"sqlite:///{tmp_path}/desk.db")
    page = (from_db / "index.html").read_text(encoding="utf-8")
    assert "confirmed 1" in page and xss not in page and html.escape(xss) in page
    with pytest.raises(ValueError, match="not a pantau desk database"):
        desk_verdicts(str(tmp_path / "empty.db"))


def test_document_text_and_links_cannot_script_the_page(tmp_path):
    line = gzip.decompress(demo_data().read_bytes()).splitlines()[0]
    envelope = orjson.loads(line)
    doc = envelope["doc"]
    doc["chart"] = {"null": None, "100025": 105, "100026": 48, "100027": 880}
    doc["administrasi"] = {**(doc.get("administrasi") or {}), "suara_sah": 233, "suara_tidak_sah": 4, "suara_total": 237}
    doc["images"] = ["javascript:alert(1)", 'https://x.test/"><script>alert(2)</script>.jpg', "https://x.test/p3.jpg"]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(orjson.dumps(envelope) + b"\n")
    audit([path], tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert 'data-tps="' in page and "<script" not in page and "javascript:" not in page
    assert 'href="https://x.test/&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;.jpg"' in page  # page 2 first, escaped


def test_the_command_writes_the_report_and_refuses_what_it_cannot_read(tmp_path, capsys):
    assert main(["audit", str(demo_data()), "--out", str(tmp_path / "r"), "--jobs", "2"]) == 0
    assert (tmp_path / "r" / "index.html").stat().st_size > 10_000
    assert "report:" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m")]) == 1
    assert "no such" in capsys.readouterr().err.lower()
    assert main(["audit", str(demo_data()), "--out", str(tmp_path / "j"), "--jobs", "0"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"verdict_id": "x"}\n')
    assert main(["audit", str(demo_data()), "--out", str(tmp_path / "v"), "--verdicts", str(bad)]) == 1
    assert "bad.jsonl:1: not a verdict" in capsys.readouterr().err


def without_versions(page: bytes) -> bytes:
    return re.sub(rb'<table id="versions">.*?</table>', b"", page, flags=re.S)


def test_the_sample_report_in_docs_is_what_its_documented_command_writes(tmp_path):
    """README: ``pantau audit pantau/data/raw_ppwp_dki_1000.jsonl.gz --out docs/audit-sample``
    (the library versions may differ from the machine that wrote it: that table is left out)."""
    sample = Path(__file__).resolve().parents[1] / "docs" / "audit-sample"
    assert main(["audit", str(demo_data()), "--out", str(tmp_path)]) == 0
    for name in ("alerts.csv", "alerts.jsonl", "regions.csv"):
        assert (tmp_path / name).read_bytes() == (sample / name).read_bytes(), name
    assert without_versions((tmp_path / "index.html").read_bytes()) == without_versions((sample / "index.html").read_bytes())


def test_coverage_counts_only_the_ballots_a_province_votes(tmp_path):
    """Jakarta elects no DPRD kabupaten/kota: its expected TPS-ballots are its TPS × 4 ballot types, not 5."""
    night = tmp_path / "night.jsonl"
    simulate(night, kabkota=["3171", "3471"], jenis=("ppwp", "pdpr", "pdpd", "pdprdp", "pdprdk"), seed=2,
             synthetic_registry=True, anomalies=[])  # fmt: skip
    audit([night], tmp_path / "report")
    with open(tmp_path / "report" / "regions.csv", encoding="utf-8", newline="") as rows:
        regions = {r["provinsi"]: r for r in csv.DictReader(rows)}
    from pantau.stream.metrics import expected_tps

    tps = expected_tps()
    assert int(regions["31"]["tps_ballots_expected"]) == 4 * tps["31"]
    assert int(regions["34"]["tps_ballots_expected"]) == 5 * tps["34"]

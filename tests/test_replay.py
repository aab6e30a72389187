"""Offline audit replay: exactness on the real dev data, determinism, and malformed input."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
from collections import Counter

import pytest

from pantau import demo_data
from pantau.cli import main
from pantau.replay import ReplaySummary, records_of, replay
from pantau.sources import read_records

from .conftest import CONSISTENT_DOC, shared_file

ADMIN_GROUPS = ("pemilih_dpt", "pengguna_dpt", "pengguna_dptb", "pengguna_non_dpt", "pengguna_total")


def expected_findings(row: dict[str, str]) -> set[str]:
    """The identities a flattened CSV row breaks, computed from the cells without pantau's code."""
    v = {k: (int(x) if x != "" else None) for k, x in row.items() if k.startswith(("paslon_", "suara_", "pemilih_", "pengguna_"))}

    def present(*names):
        return all(v[n] is not None for n in names)

    found = set()
    if present("paslon_01", "paslon_02", "paslon_03", "suara_sah") and v["paslon_01"] + v["paslon_02"] + v["paslon_03"] != v["suara_sah"]:
        found.add("form.sum_valid")
    if present("suara_sah", "suara_tidak_sah", "suara_total") and v["suara_sah"] + v["suara_tidak_sah"] != v["suara_total"]:
        found.add("form.sum_total")
    for s in "jlp":
        parts = (f"pengguna_dpt_{s}", f"pengguna_dptb_{s}", f"pengguna_non_dpt_{s}", f"pengguna_total_{s}")
        if present(*parts) and v[parts[0]] + v[parts[1]] + v[parts[2]] != v[parts[3]]:
            found.add("form.voters_total")
        if present(f"pengguna_dpt_{s}", f"pemilih_dpt_{s}") and v[f"pengguna_dpt_{s}"] > v[f"pemilih_dpt_{s}"]:
            found.add("form.turnout_exceeds_register")
    for g in ADMIN_GROUPS:
        if present(f"{g}_j", f"{g}_l", f"{g}_p") and v[f"{g}_j"] != v[f"{g}_l"] + v[f"{g}_p"]:
            found.add("form.gender_split")
    if present("suara_total", "pengguna_total_j") and v["suara_total"] > v["pengguna_total_j"]:
        found.add("form.ballots_exceed_voters")
    limit = 10_000 if row["kode_tps"].startswith("99") else 500
    if any(x is not None and x > limit for x in v.values()):
        found.add("form.capacity")
    return found


@pytest.mark.shared_data
def test_dev_replay_flags_exactly_the_tps_that_break_each_identity():
    path = shared_file("sirekap", "tps_latest_dev.csv.gz")
    with gzip.open(path, "rt", newline="") as text:
        rows = list(csv.DictReader(text))
    assert len(rows) == 27_168
    expected = {(row["kode_tps"], d) for row in rows for d in expected_findings(row)}
    summary = ReplaySummary()
    alerts = list(replay(read_records(path), summary=summary))
    found = {(a.kode_tps, a.detector) for a in alerts if a.detector.startswith("form.")}
    assert summary.documents == 27_168 and not summary.rejected
    assert found == expected
    per_detector = Counter(d for _, d in expected)
    assert per_detector["form.sum_valid"] > 300  # the real data does hold misreads: the test has teeth
    assert len(found) == len({(a.kode_tps, a.detector) for a in alerts if a.detector.startswith("form.")})


@pytest.mark.shared_data
def test_dev_revisions_replay_in_version_order():
    path = shared_file("sirekap", "tps_revisions_dev.csv.gz")
    alerts = list(replay(read_records(path)))
    assert alerts, "the revisions file holds inconsistent versions"
    # every revision there fills in nulls or repeats a version: none is a change of a number
    assert not [a for a in alerts if a.detector in ("revision.changed", "revision.flipflop")]


def run_cli(tmp_path, *args) -> tuple[int, bytes]:
    out = tmp_path / "alerts.jsonl"
    code = main(["replay", "--offline", "--out", str(out), *map(str, args)])
    return code, out.read_bytes()


def test_replay_is_byte_identical_across_runs(tmp_path):
    first = run_cli(tmp_path, demo_data())
    second = run_cli(tmp_path, demo_data())
    assert first[0] == 0 and first[1] and first == second
    ids = [json.loads(line)["alert_id"] for line in first[1].splitlines()]
    assert len(ids) == len(set(ids)), "each alert id is written once"


def test_demo_sample_finds_real_misreads():
    alerts = list(replay(records_of([demo_data()])))
    detectors = Counter(a.detector for a in alerts)
    assert detectors["form.sum_valid"] >= 20 and detectors["ocr.misread"] >= 20
    assert all(a.suggestions for a in alerts if a.detector == "ocr.misread")


def envelope_line(**overrides) -> str:
    return json.dumps({"kode_tps": "3173011005116", "jenis": "ppwp", "doc": CONSISTENT_DOC, **overrides})


def test_malformed_jsonl_lines_are_reported_and_skipped(tmp_path):
    bad = {
        "truncated": envelope_line()[:50],
        "bad kode": envelope_line(kode_tps="31730110051"),
        "bad jenis": envelope_line(jenis="dprd"),
        "negative": envelope_line(doc={"chart": {"null": None, "100025": -5}}),
        "array": "[1, 2, 3]",
    }
    inconsistent = {**CONSISTENT_DOC, "chart": {"null": None, "100025": 53, "100026": 118, "100027": 86}}
    lines = [envelope_line(), *bad.values(), envelope_line(kode_tps="3173011005117", doc=inconsistent), ""]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe not utf-8\n")
    summary = ReplaySummary()
    alerts = list(replay(read_records(path), summary=summary))
    assert summary.documents == 2
    assert sum(summary.rejected.values()) == len(bad) + 1
    assert summary.rejected["kode_tps"] == 1 and summary.rejected["not_json"] == 2
    assert {a.kode_tps for a in alerts} == {"3173011005117"}
    reasons = [r for _, _, r in summary.rejections]
    assert any("kode_tps" in r and "13 digits" in r for r in reasons)
    assert any("greater than or equal to 0" in r for r in reasons)


def test_malformed_csv_rows_and_truncated_gzip(tmp_path):
    header = "kode_tps,provinsi_kode,kabkota_kode,paslon_01,paslon_02,paslon_03,suara_sah,suara_tidak_sah,suara_total"
    rows = [
        "3401012001001,34,3401,31,101,63,195,1,196",  # consistent
        "3401012001002,34,3401,31,101,63,196,1,197",  # breaks Σ chart = suara_sah
        "3401012001003,35,3401,31,101,63,195,1,196",  # province column contradicts the code
        "3401012001004,34,3401,31,1o1,63,195,1,196",  # not a number
        "3401012001005,34,3401,31.0,101,63,195,1,196",  # fractional
        "3401012001006,34,3401,31,101",  # short row
    ]
    path = tmp_path / "rows.csv.gz"
    data = gzip.compress(("\n".join([header, *rows]) + "\n").encode())
    path.write_bytes(data)
    summary = ReplaySummary()
    alerts = list(replay(read_records(path), summary=summary))
    assert summary.documents == 2 and sum(summary.rejected.values()) == 4
    assert {a.kode_tps for a in alerts} == {"3401012001002"}
    assert any("provinsi_kode '35' does not match" in r for _, _, r in summary.rejections)
    assert any("'1o1' is not a whole number" in r for _, _, r in summary.rejections)

    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(data[: len(data) // 2])
    summary = ReplaySummary()
    list(replay(read_records(truncated), summary=summary))
    assert any("unreadable" in r for _, _, r in summary.rejections)


def test_unknown_format_is_refused_not_fatal(tmp_path):
    path = tmp_path / "alerts.parquet"
    path.write_bytes(b"PAR1")
    summary = ReplaySummary()
    assert list(replay(read_records(path), summary=summary)) == []
    assert "unknown input format" in summary.rejections[0][2]


def test_cli_writes_rejects_and_prints_a_summary(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(envelope_line() + "\n{oops\n")
    rejects = tmp_path / "rejects.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "pantau.cli", "replay", "--offline", "--out", str(tmp_path / "a.jsonl"),
         "--rejects", str(rejects), str(src)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "1 documents inspected, 1 refused" in result.stderr
    (line,) = rejects.read_text().splitlines()
    assert json.loads(line)["line"] == 2 and json.loads(line)["code"] == "not_json"


def test_schemas_export_command(tmp_path):
    assert main(["schemas", "export", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{t}.schema.json" for t in sorted(["pantau.alerts", "pantau.deadletter", "pantau.regional", "pantau.verdicts", "sirekap.submissions"])]


def test_demo_command_runs_on_shipped_data(tmp_path, capsys):
    out = tmp_path / "demo.jsonl"
    assert main(["demo", "--offline", "--out", str(out)]) == 0
    assert len(out.read_bytes().splitlines()) > 100
    assert "1,000 documents inspected" in capsys.readouterr().err


def test_summary_counts_stream_io():
    buf = io.BytesIO()
    from pantau.replay import write_alerts

    assert write_alerts(replay(records_of([demo_data()])), buf) == len(buf.getvalue().splitlines())

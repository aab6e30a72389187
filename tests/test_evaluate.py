"""``pantau evaluate``: scoring alerts against a simulated night's ground truth."""

from __future__ import annotations

import json

import orjson
import pytest

from pantau.cli import main
from pantau.evaluate import STATISTICAL, evaluate, expected_by
from pantau.replay import records_of, replay
from pantau.simulate import read_truth, simulate

META = {"seed": 1, "jenis": ["ppwp"], "units": {"ppwp": 10_000},
        "regions": {"provinsi": 1, "kabkota": 5, "kecamatan": 40, "kelurahan": 400}}  # fmt: skip


def tps(kode: str, anomaly: str, **detail) -> dict:
    return {"kode_tps": kode, "level": "tps", "jenis": "ppwp", "anomaly": anomaly, "detail": detail, "seed": 1}


def region(code: str, level: str, anomaly: str, share: float) -> dict:
    return {"region": code, "level": level, "jenis": "ppwp", "anomaly": anomaly, "detail": {"share": share}, "seed": 1}


def alert(kode: str, detector: str, suggestions=(), level: str = "tps", region_code: str | None = None) -> dict:
    return {"detector": detector, "jenis": "ppwp", "kode_tps": kode if level == "tps" else None,
            "region": region_code or kode, "level": level, "suggestions": list(suggestions)}  # fmt: skip


def suggestion(field: str, proposed: int) -> dict:
    return {"field": field, "current": 880, "proposed": proposed, "confidence": 0.9, "edit": "crossed_box"}


def test_expected_detectors():
    assert expected_by("ocr_misread", "form.sum_valid") and expected_by("ocr_misread", "ocr.misread")
    assert not expected_by("ocr_misread", "revision.resolved")
    assert expected_by("stuffing_extreme", "turnout.klimek") and expected_by("fabricated", "digits.last")
    assert not any(expected_by("vote_shifting", d) for d in ("form.sum_valid", "ocr.misread", "revision.changed"))
    assert expected_by("duplicate_submission", "ingest.duplicate") and not expected_by("duplicate_submission", "form.sum_valid")
    assert expected_by("copied_tally", "x", {"copied_tally": (STATISTICAL,)})


def test_scores_per_anomaly_type():
    truth = [
        tps("3471010001001", "ocr_misread", field="chart.100025", true=80, published=880, corrected=True),
        tps("3471010001002", "ocr_misread", field="chart.100026", true=55, published=95, corrected=False),
        tps("3471010001003", "ocr_misread", field="chart.100027", true=12, published=17, corrected=False),
        tps("3471010001004", "typo", field="administrasi.suara_sah", true=200, published=201),
        tps("3471010001005", "stuffing_extreme", candidate="100026"),
        tps("3471010001006", "copied_tally", source="3471010001007"),
    ]
    alerts = [
        alert("3471010001001", "form.sum_valid"),
        alert("3471010001001", "ocr.misread", [suggestion("chart.100025", 80)]),
        alert("3471010001001", "ocr.misread", [suggestion("chart.100025", 81)]),  # only the first one counts
        alert("3471010001001", "revision.resolved"),
        alert("3471010001002", "ocr.misread", [suggestion("chart.100025", 1), suggestion("chart.100026", 55)]),
        alert("3471010001004", "form.sum_total"),
        alert("3471010001005", "form.capacity"),  # a foundation detector on a manipulated TPS: not expected
        alert("3471010001007", "stat.copy"),  # the copied TPS's source: not scored
        alert("3471010001099", "form.gender_split"),  # clean: a false alarm of the form detectors
        alert("3471010001098", "stat.turnout"),  # clean: a false alarm of the statistical detectors
    ]
    result = evaluate(alerts, META, truth)
    rows = {r.anomaly: r for r in result.rows}
    assert result.units == 10_000 and result.clean == 10_000 - 6 - 1 and result.alerts == len(alerts)
    misread = rows["ocr_misread"]
    assert (misread.hit, misread.detected, misread.any_alert, misread.false_alarms) == (3, 2, 2, 1)
    assert misread.recall == pytest.approx(2 / 3) and misread.precision == pytest.approx(2 / 3)
    assert (misread.top1, misread.among, misread.corrected, misread.resolved) == (1, 2, 1, 1)
    assert result.fa_per_10k(misread.false_alarms) == pytest.approx(1 / result.clean * 10_000)
    assert (rows["typo"].hit, rows["typo"].detected, rows["typo"].top1) == (1, 1, 0)
    stuffing = rows["stuffing_extreme"]
    assert (stuffing.hit, stuffing.detected, stuffing.any_alert, stuffing.false_alarms) == (1, 0, 1, 1)
    assert rows["copied_tally"].false_alarms == 1  # stat.turnout on the clean TPS; stat.copy on the source is not scored
    assert rows["vote_shifting"].hit == 0 and rows["vote_shifting"].recall is None
    by_detector = {d["detector"]: d for d in result.detectors}
    assert by_detector["ocr.misread"]["alerts"] == 3 and by_detector["ocr.misread"]["units"] == 2
    assert by_detector["form.gender_split"]["clean_units"] == 1
    assert by_detector["form.capacity"]["on_hit_units"] == {"stuffing_extreme": 1}


def test_regional_scoring_by_level_and_share():
    truth = [
        region("347101", "kecamatan", "stuffing_extreme", 0.5),
        region("347102", "kecamatan", "stuffing_extreme", 0.05),  # too few hit TPS: not scored
        region("3471", "kabkota", "stuffing_extreme", 0.12),
    ]
    alerts = [
        alert("", "stat.klimek", level="kecamatan", region_code="347101"),
        alert("", "stat.klimek", level="kecamatan", region_code="347102"),
        alert("", "stat.klimek", level="kecamatan", region_code="347109"),  # clean kecamatan
        alert("", "form.sum_valid", level="kabkota", region_code="3471"),  # not a statistical detector
    ]
    result = evaluate(alerts, META, truth, min_share=0.1)
    rows = {(r.anomaly, r.level): r for r in result.regional}
    kec = rows[("stuffing_extreme", "kecamatan")]
    assert (kec.hit, kec.detected, kec.false_alarms, kec.clean) == (1, 1, 1, 38)
    assert kec.precision == pytest.approx(0.5)
    kab = rows[("stuffing_extreme", "kabkota")]
    assert (kab.hit, kab.detected, kab.false_alarms) == (1, 0, 0)
    shifting = rows[("vote_shifting", "kecamatan")]  # no vote shifting in this truth: every flag is false
    assert (shifting.hit, shifting.detected, shifting.false_alarms) == (0, 0, 1)
    assert ("copied_tally", "kecamatan") not in rows  # not a regional manipulation


def test_a_simulated_night_through_the_foundation_detectors(tmp_path, capsys):
    night = tmp_path / "night.jsonl"
    simulate(night, kabkota=["3471", "3402"], seed=17, synthetic_registry=True,
             anomalies=["ocr_misread:rate=0.05", "typo:rate=0.01", "stuffing_extreme:rate=0.5,target=random:1@kecamatan",
                        "duplicate_submission:rate=0.02"])  # fmt: skip
    alerts = tmp_path / "alerts.jsonl"
    with open(alerts, "wb") as out:
        out.writelines(a.to_json() + b"\n" for a in replay(records_of([night])))
    truth = tmp_path / "night.truth.jsonl"
    meta, rows = read_truth(truth)
    result = evaluate((orjson.loads(line) for line in alerts.read_bytes().splitlines()), meta, rows)
    by_type = {r.anomaly: r for r in result.rows}
    misread = by_type["ocr_misread"]
    assert misread.hit > 50 and misread.recall == 1.0 and misread.precision == 1.0
    assert misread.top1 / misread.hit > 0.75 and misread.among / misread.hit > 0.9
    assert misread.corrected and misread.resolved == misread.corrected
    assert by_type["typo"].recall == 1.0
    # stuffed TPS of Kota Yogyakarta: too few peers for the TPS-level test (its kecamatan is the regional tests')
    assert by_type["stuffing_extreme"].hit > 0 and by_type["stuffing_extreme"].recall == 0.0
    assert by_type["duplicate_submission"].hit > 0 and by_type["duplicate_submission"].any_alert == 0
    # on clean TPS the form checks raise nothing; the peer test stays within its false-alarm rate (1 in 500)
    assert all(d["clean_units"] == 0 for d in result.detectors if not d["detector"].startswith("stat."))
    assert all(d["false_alarms_per_10k_clean"] <= 20 for d in result.detectors)

    assert main(["evaluate", str(alerts), str(truth), "--json", str(tmp_path / "scores.json")]) == 0
    printed = capsys.readouterr().out
    assert "ocr_misread" in printed and "FA/10k clean" in printed and "Regional" in printed
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert {r["anomaly"]: r["recall"] for r in scores["anomalies"]}["ocr_misread"] == 1.0


def test_simulate_command_writes_night_and_truth(tmp_path, capsys):
    out = tmp_path / "n.jsonl.gz"
    assert main(["simulate", "--kabkota", "3471", "--seed", "3", "--out", str(out), "--synthetic-registry",
                 "--anomaly", "ocr_misread:rate=0.02", "--jenis", "ppwp,pdpr"]) == 0  # fmt: skip
    meta, rows = read_truth(tmp_path / "n.truth.jsonl")
    assert meta["jenis"] == ["ppwp", "pdpr"] and meta["seed"] == 3 and rows
    assert {r["anomaly"] for r in rows} == {"ocr_misread"}
    assert sum(1 for r in records_of([out]) if r.envelope is not None) > meta["tps"]
    assert main(["simulate", "--kabkota", "3471", "--out", str(tmp_path / "c.jsonl"), "--no-anomalies", "--synthetic-registry"]) == 0
    assert read_truth(tmp_path / "c.truth.jsonl")[1] == []
    assert main(["simulate", "--kabkota", "3471", "--out", str(tmp_path / "x.jsonl"), "--anomaly", "bogus"]) == 2
    capsys.readouterr()

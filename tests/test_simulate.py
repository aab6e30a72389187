"""The election-night simulator: realism against the 2024 data, exact ground truth, determinism."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime

import numpy as np
import orjson
import pytest
from pantau.schemas import ADMIN_FIELDS, parse_envelope, validate_kode_tps

from pantau.replay import replay
from pantau.simulate import prepare, simulate
from pantau.simulate.anomalies import NAMES, parse_spec
from pantau.simulate.generate import arrival_curve, night_lines
from pantau.simulate.model import default_params_path, load_params
from pantau.simulate.registry import Registry, synthetic_registry
from pantau.sources import Record

from .conftest import shared_file

PARAMS = load_params()
CLEAN = {"anomalies": [], "synthetic_registry": True}


def lines_of(night) -> list[bytes]:
    return list(night_lines(night))


def records(lines: list[bytes]) -> list[Record]:
    return [Record("sim", n, line, envelope=parse_envelope(line)) for n, line in enumerate(lines, 1)]


def by_unit(lines: list[bytes]) -> dict[tuple[str, str], list[dict]]:
    units: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in lines:
        envelope = orjson.loads(line)
        units[(envelope["kode_tps"], envelope["jenis"])].append(envelope)
    return units


def quantile_distance(values: np.ndarray, reference: list[float], probabilities: np.ndarray) -> float:
    """Largest gap between the empirical CDF of ``values`` and the reference quantiles (KS at 49 points)."""
    values = np.sort(values)
    below = np.searchsorted(values, reference, side="left") / len(values)
    at_or_below = np.searchsorted(values, reference, side="right") / len(values)
    return float(np.max(np.where(probabilities < below, below - probabilities,
                                 np.where(probabilities > at_or_below, probabilities - at_or_below, 0.0))))  # fmt: skip


def ppwp_series(night) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    ballot = night.ballots["ppwp"]
    a = ballot.admin
    dpt = a["pemilih_dpt_j"].astype(float)
    sah = np.maximum(a["suara_sah"], 1)
    codes = night.registry.codes[ballot.units]
    return codes, {
        "dpt": dpt,
        "turnout": a["pengguna_total_j"] / dpt,
        "share_01": ballot.votes[:, 0] / sah,
        "share_02": ballot.votes[:, 1] / sah,
        "share_03": ballot.votes[:, 2] / sah,
        "invalid": a["suara_tidak_sah"] / np.maximum(a["suara_total"], 1),
        "dptb": a["pengguna_dptb_j"] / dpt,
    }


# -- the shipped parameters (no ../shared needed) --------------------------------------------------


def test_shipped_parameters_are_summaries_not_rows():
    raw = json.loads(default_params_path().read_text())
    assert {"34", "51", "99"} <= set(raw["provinces"])
    assert raw["registry"]["tps"] == 823_366
    arrivals = raw["timeline"]["arrivals"]
    assert sum(arrivals["per_minute"]) + sum(arrivals["per_hour"]) == pytest.approx(1.0, abs=0.01)

    def longest(node) -> int:
        if isinstance(node, dict):
            return max((longest(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return max([len(node), *(longest(v) for v in node)])
        return 0

    assert longest(raw) < 3_000  # quantile tables and a per-minute density, never per-TPS rows
    assert default_params_path().stat().st_size < 200_000


def test_synthetic_registry_has_the_real_region_sizes():
    registry = synthetic_registry(PARAMS)
    assert len(registry) == 823_366
    expected = PARAMS.registry["kabkota"]
    kab = registry.region_numbers(4)
    kab_codes, counts = np.unique(kab, return_counts=True)
    assert {f"{k:04d}": int(n) for k, n in zip(kab_codes, counts)} == {k: v[2] for k, v in expected.items()}
    for digits, column in ((6, 0), (10, 1)):
        parents = np.unique(registry.region_numbers(digits)) // 10 ** (digits - 4)
        kab_of, n = np.unique(parents, return_counts=True)
        assert {f"{k:04d}": int(c) for k, c in zip(kab_of, n)} == {k: v[column] for k, v in expected.items()}
    for code in registry.codes[:: 50_000]:
        validate_kode_tps(str(code))


def test_clean_night_of_every_ballot_type_breaks_no_identity():
    """Jakarta (no DPRD kab/kota), Aceh (local parties), overseas (PPWP and DPR only), Yogyakarta."""
    night, _, rows = prepare(kabkota=["3101", "1171", "9962", "3471"], jenis=("ppwp", "pdpr", "pdpd", "pdprdp", "pdprdk"), seed=3, **CLEAN)
    assert rows == []
    lines = lines_of(night)
    recs = records(lines)
    assert all(r.envelope is not None for r in recs)
    alerts = list(replay(recs))
    assert [a for a in alerts if a.detector != "stat.peer_outlier"] == []
    units = by_unit(lines)
    assert len(alerts) <= 0.002 * len(units)  # the peer test's false-alarm rate, 1 in 500 (Yogyakarta's TPS)
    jenis_by_kab = defaultdict(set)
    for kode, jenis in units:
        jenis_by_kab[kode[:4]].add(jenis)
    assert jenis_by_kab["3101"] == {"ppwp", "pdpr", "pdpd", "pdprdp"}
    assert jenis_by_kab["9962"] == {"ppwp", "pdpr"}
    assert jenis_by_kab["1171"] == jenis_by_kab["3471"] == {"ppwp", "pdpr", "pdpd", "pdprdp", "pdprdk"}
    aceh = next(e for (k, j), es in units.items() if k.startswith("1171") and j == "pdprdk" for e in es if e["doc"]["chart"])
    assert {"18", "21", "24"} <= set(aceh["doc"]["chart"])
    # every TPS's form shows the same caleg of its dapil, and the halves mirror the status flags
    for envelopes in units.values():
        for e in envelopes:
            doc = e["doc"]
            assert doc["status_suara"] == (doc["chart"] is not None) and doc["status_adm"] == (doc["administrasi"] is not None)
            assert doc["chart"] is None or doc["chart"]["null"] is None
            assert e["received_at"].endswith("+07:00") and doc["ts"] <= e["received_at"].replace("T", " ")[:19]


def test_halves_arrive_separately_then_complete():
    night, _, _ = prepare(provinces=["34"], seed=2, **CLEAN)
    units = by_unit(lines_of(night))
    first = [es[0]["doc"] for es in units.values()]
    chart_only = sum(d["chart"] is not None and d["administrasi"] is None for d in first)
    admin_only = sum(d["chart"] is None and d["administrasi"] is not None for d in first)
    assert 0.30 < chart_only / len(first) < 0.45 and 0.08 < admin_only / len(first) < 0.18
    completed = [es for es in units.values() if es[0]["doc"]["chart"] is None or es[0]["doc"]["administrasi"] is None]
    later = [es for es in completed if len(es) > 1 and es[1]["doc"]["chart"] is not None and es[1]["doc"]["administrasi"] is not None]
    assert later and all(es[1]["received_at"] > es[0]["received_at"] for es in later)
    # some stay half-digitised, as in 2024 (fitted from the latest snapshot); --complete forbids it
    final = [es[-1]["doc"] for es in units.values()]
    assert 0.15 < sum(d["administrasi"] is None for d in final) / len(final) < 0.35
    night, _, _ = prepare(kabkota=["3471"], seed=2, complete=True, **CLEAN)
    assert all(es[-1]["doc"]["chart"] and es[-1]["doc"]["administrasi"] for es in by_unit(lines_of(night)).values())


def same_composition(codes: np.ndarray) -> np.ndarray:
    """Rows of each fitted kabupaten/kota in the proportions of the real reference sample (the complete,
    consistent 2024 TPS are not spread over kabupaten/kota like all TPS). Overseas TPS draw their
    profiles in the reference's proportions already."""
    keep = np.char.startswith(codes, "99")
    kab = codes.astype("U4")
    for k in np.unique(kab):
        fitted = PARAMS.kabkota(str(k))
        if fitted:
            rows = np.flatnonzero(kab == k)
            keep[rows[: fitted["n"]]] = True
    return keep


def test_distributions_match_the_shipped_real_reference():
    """Without ../shared: simulated provinces against the real quantiles shipped in the parameters."""
    night, _, _ = prepare(provinces=["34", "51", "99"], seed=11, complete=True, **CLEAN)
    codes, series = ppwp_series(night)
    probabilities = np.linspace(0.02, 0.98, 49)
    composition = same_composition(codes)
    for province, tolerance in (("34", 0.1), ("51", 0.12), ("99", 0.15)):
        reference = PARAMS.province(province)["reference"]
        mask = np.char.startswith(codes, province) & composition
        for name, values in series.items():
            distance = quantile_distance(values[mask], reference[name], probabilities)
            assert distance < tolerance, (province, name, distance)


def test_the_whole_country_adds_up_to_about_the_official_result():
    """Provinces without data are drawn from a prior calibrated on the official 2024 national result
    (24.95 / 58.59 / 16.47%); one night varies around it (a few provinces hold half the TPS)."""
    night, meta, _ = prepare(seed=1, **CLEAN)
    ballot = night.ballots["ppwp"]
    assert meta["tps"] == 823_366 and meta["regions"] == {"provinsi": 39, "kabkota": 610, "kecamatan": 7405, "kelurahan": 84035}
    shares = ballot.votes.sum(axis=0) / ballot.votes.sum()
    assert np.abs(shares - np.array([0.2495, 0.5859, 0.1647])).max() < 0.1
    turnout = ballot.admin["pengguna_total_j"].sum() / ballot.admin["pemilih_dpt_j"].sum()
    assert 0.8 < turnout < 0.92
    domestic = ~np.char.startswith(night.registry.codes[ballot.units], "99")
    assert ballot.admin["pemilih_dpt_j"][domestic].max() <= 300


def test_arrivals_follow_the_real_curve_and_ts_are_batches():
    night, _, _ = prepare(provinces=["34", "51"], seed=4, **CLEAN)
    units = by_unit(lines_of(night))
    first = np.array([datetime.fromisoformat(es[0]["received_at"]).timestamp() for es in units.values()])
    starts, widths, cdf = arrival_curve(PARAMS)
    hours = np.arange(starts[0] - starts[0] % 3600, starts[0] + 4 * 86400, 3600)
    simulated = np.histogram(first, bins=hours)[0] / len(first)
    expected = np.diff(np.interp(hours, np.append(starts, starts[-1] + widths[-1]), np.append(0.0, cdf)))
    assert np.corrcoef(simulated, expected)[0, 1] > 0.98
    assert abs(simulated.max() - expected.max()) < 0.01
    ts = {e["doc"]["ts"] for es in units.values() for e in es}
    assert len(ts) < sum(len(es) for es in units.values()) / 20  # a few hundred publication batches


def test_same_seed_same_bytes(tmp_path):
    outputs = []
    for run, seed in enumerate((5, 5, 6)):
        out = tmp_path / f"n{run}.jsonl.gz"
        simulate(out, kabkota=["3471"], seed=seed, jenis=("ppwp", "pdpr"), synthetic_registry=True)
        outputs.append((out.read_bytes(), (tmp_path / f"n{run}.truth.jsonl").read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] != outputs[2][0] and outputs[0][1] != outputs[2][1]


def test_a_region_gets_the_same_numbers_whichever_subset_is_simulated():
    alone, _, _ = prepare(kabkota=["3471"], seed=8, **CLEAN)
    within, _, _ = prepare(provinces=["34"], seed=8, **CLEAN)
    a, b = alone.ballots["ppwp"], within.ballots["ppwp"]
    rows = np.flatnonzero(np.char.startswith(within.registry.codes[b.units], "3471"))
    assert np.array_equal(alone.registry.codes[a.units], within.registry.codes[b.units][rows])
    for field in ADMIN_FIELDS:
        assert np.array_equal(a.admin[field], b.admin[field][rows])
    assert np.array_equal(a.votes, b.votes[rows])


def test_anomaly_specs_are_checked():
    spec = parse_spec("stuffing_extreme:rate=0.3,target=3471+5171,candidate=100026,seed=9", 1, ("ppwp",))
    assert (spec.rate, spec.target, spec.seed, spec.jenis, spec.options) == (0.3, "3471+5171", 9, ("ppwp",), {"candidate": "100026"})
    assert parse_spec("ocr_misread", 1, ("ppwp", "pdpr")).jenis == ("ppwp", "pdpr")
    assert parse_spec("vote_shifting", 1, ("ppwp", "pdpr")).jenis == ("ppwp",)
    for bad in ("nonsense", "typo:rate=2", "typo:rate", "typo:jenis=ppwx"):
        with pytest.raises(ValueError):
            parse_spec(bad, 1, ("ppwp",))
    with pytest.raises(ValueError):
        prepare(kabkota=["3471"], anomalies=["typo:target=34x"], synthetic_registry=True)
    for bad in ("vote_shifting:moved=0.7-0.2", "vote_shifting:moved=lots", "stuffing_incremental:added=0.5-1.5"):
        with pytest.raises(ValueError, match="LOW"):
            parse_spec(bad, 1, ("ppwp",))


def test_a_manipulation_has_the_size_it_is_given():
    """``moved``/``added`` set how much of the others' votes / the non-voters' ballots each hit TPS takes."""
    sizes = {}
    for moved in ("0.1-0.2", "0.8-0.9"):
        _, _, rows = prepare(kabkota=["3471"], seed=4, complete=True, images=False, synthetic_registry=True,
                             anomalies=[f"vote_shifting:rate=0.5,target=3471,moved={moved}"])  # fmt: skip
        hit = [r["detail"] for r in rows if r["level"] == "tps"]
        others = np.array([d["votes_after"] - d["votes_before"] for d in hit], dtype=float)
        before = np.array([d["votes_before"] / d["share_before"] - d["votes_before"] for d in hit if d["share_before"]])
        sizes[moved] = others.sum() / before.sum()
    assert 0.1 <= sizes["0.1-0.2"] <= 0.2 and 0.8 <= sizes["0.8-0.9"] <= 0.9


# -- the truth is exactly what changed -------------------------------------------------------------

HEAVY = [
    "ocr_misread:rate=0.05,corrected=0.5",
    "typo:rate=0.02",
    "stuffing_incremental:rate=0.5,target=random:2@kecamatan",
    "stuffing_extreme:rate=0.5,target=random:1@kecamatan",
    "vote_shifting:rate=0.5,target=random:1@kecamatan",
    "fabricated:rate=0.5,target=random:1@kecamatan",
    "copied_tally:rate=0.02",
    "duplicate_submission:rate=0.03",
]


@pytest.fixture(scope="module")
def heavy_night():
    options = {"kabkota": ["3471", "3402"], "seed": 13, "jenis": ("ppwp", "pdpr"), "synthetic_registry": True}
    clean, _, none = prepare(anomalies=[], **options)
    night, meta, truth = prepare(anomalies=HEAVY, **options)
    assert none == []
    return lines_of(clean), lines_of(night), meta, truth


def _numbers(doc: dict) -> dict[str, int]:
    out = {}
    for key, value in (doc["chart"] or {}).items():
        if isinstance(value, dict):
            out.update({f"chart.{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            out[f"chart.{key}"] = value
    for party, caleg in (doc.get("caleg") or {}).items():
        out.update({f"caleg.{party}.{k}": v for k, v in caleg.items()})
    out.update({f"administrasi.{k}": v for k, v in (doc["administrasi"] or {}).items()})
    return out


def test_truth_lists_exactly_the_units_that_changed(heavy_night):
    clean_lines, lines, _, truth = heavy_night
    clean, dirty = by_unit(clean_lines), by_unit(lines)
    assert clean.keys() == dirty.keys()
    changed = {unit for unit in clean if clean[unit] != dirty[unit]}
    listed = {(r["kode_tps"], r["jenis"]) for r in truth if r["level"] == "tps"}
    assert changed == listed
    assert len(listed) == sum(1 for r in truth if r["level"] == "tps")  # one anomaly per unit
    assert {r["anomaly"] for r in truth} == set(NAMES)
    assert {"ppwp", "pdpr"} == {r["jenis"] for r in truth if r["anomaly"] == "ocr_misread"}


def test_truth_details_are_what_the_documents_show(heavy_night):
    clean_lines, lines, _, truth = heavy_night
    clean, dirty = by_unit(clean_lines), by_unit(lines)
    for row in (r for r in truth if r["level"] == "tps"):
        unit = (row["kode_tps"], row["jenis"])
        detail, before, after = row["detail"], clean[unit], dirty[unit]
        if row["anomaly"] in ("ocr_misread", "typo"):
            field = detail["field"]
            shown = [_numbers(e["doc"]) for e in after]
            wrong = [n for n in shown if field in n and n[field] == detail["published"]]
            assert wrong and all(n[field] == detail["true"] for n in shown if field in n and n not in wrong)
            assert detail["published"] != detail["true"]
            for n in wrong:  # nothing else differs from the truth
                reference = _numbers(before[-1]["doc"])
                assert {k for k in n if n[k] != reference.get(k)} == {field}
            assert len(after) == len(before) + detail["corrected"]
            if detail["corrected"]:
                assert _numbers(after[-1]["doc"]) == _numbers(before[-1]["doc"]) or after[-1]["received_at"] == detail["corrected_at"]
        elif row["anomaly"] == "duplicate_submission":
            assert len(after) == len(before) + 1
            docs = [e["doc"] for e in after]
            assert any(docs.count(d) == 2 for d in docs)
            assert any(e["received_at"] == detail["at"] for e in after)
        elif row["anomaly"] == "copied_tally":
            source = clean[(detail["source"], row["jenis"])][-1]["doc"]
            assert _numbers(after[-1]["doc"]) == {k: v for k, v in _numbers(source).items()}
        else:
            final = _numbers(after[-1]["doc"])
            candidate = detail["candidate"]
            key = f"chart.{candidate}" if row["jenis"] == "ppwp" else f"chart.{candidate}.jml_suara_total"
            assert final[key] == detail["votes_after"] and _numbers(before[-1]["doc"])[key] == detail["votes_before"]
            if row["anomaly"].startswith("stuffing"):
                assert detail["turnout_after"] >= detail["turnout_before"] and detail["added"] + detail["shifted"] > 0
                assert (detail["turnout_after"] > detail["turnout_before"]) == (detail["added"] > 0)
            if row["anomaly"] == "vote_shifting":
                assert detail["turnout_after"] == detail["turnout_before"] and detail["shifted"] > 0


def test_manipulated_forms_stay_consistent_and_form_errors_are_caught(heavy_night):
    _, lines, _, truth = heavy_night
    alerts = list(replay(records(lines)))
    flagged = {(a.kode_tps, a.jenis) for a in alerts if not a.detector.startswith("stat.")}  # the form detectors
    kind = {(r["kode_tps"], r["jenis"]): r["anomaly"] for r in truth if r["level"] == "tps"}
    for unit in flagged:
        assert kind.get(unit) in ("ocr_misread", "typo"), unit  # manipulations keep every identity
    errors = {u for u, k in kind.items() if k in ("ocr_misread", "typo")}
    assert errors <= flagged
    resolved = {(a.kode_tps, a.jenis) for a in alerts if a.detector == "revision.resolved"}
    corrected = {(r["kode_tps"], r["jenis"]) for r in truth if r["anomaly"] == "ocr_misread" and r["detail"]["corrected"]}
    assert corrected and corrected <= resolved


def test_regional_truth_rows_describe_the_hit_regions(heavy_night):
    _, _, meta, truth = heavy_night
    tps = [r for r in truth if r["level"] == "tps" and r["anomaly"] == "stuffing_extreme"]
    regions = [r for r in truth if r["level"] != "tps" and r["anomaly"] == "stuffing_extreme"]
    for level, digits in (("provinsi", 2), ("kabkota", 4), ("kecamatan", 6), ("kelurahan", 10)):
        counts = defaultdict(int)
        for r in tps:
            counts[r["kode_tps"][:digits]] += 1
        rows = {r["region"]: r["detail"] for r in regions if r["level"] == level}
        assert {k: v["affected_tps"] for k, v in rows.items()} == dict(counts)
        assert all(0 < v["share"] <= 1 for v in rows.values())
    assert sum(r["detail"]["targeted"] for r in regions) == 1
    spec = next(a for a in meta["anomalies"] if a["name"] == "stuffing_extreme")
    assert all(r["seed"] == spec["seed"] for r in tps + regions)


# -- against the real 2024 data (../shared) --------------------------------------------------------


@pytest.mark.shared_data
def test_two_sample_distributions_match_the_real_data_they_were_fitted_on():
    from scipy.stats import ks_2samp

    from pantau.simulate.fit import clean_table

    x, c, codes = clean_table(shared_file("sirekap", "tps_latest_dev.csv.gz"))
    registry = Registry(np.sort(codes.astype("U13")), "the real complete, consistent TPS")
    night, _, _ = prepare(seed=21, anomalies=[], complete=True, registry=registry)
    sim_codes, sim = ppwp_series(night)
    d = x[:, c["pemilih_dpt_j"]].astype(float)
    sah = np.maximum(x[:, c["suara_sah"]], 1)
    real = {
        "dpt": d, "turnout": x[:, c["pengguna_total_j"]] / d,
        "share_01": x[:, c["paslon_01"]] / sah, "share_02": x[:, c["paslon_02"]] / sah, "share_03": x[:, c["paslon_03"]] / sah,
        "invalid": x[:, c["suara_tidak_sah"]] / np.maximum(x[:, c["suara_total"]], 1),
        "dptb": x[:, c["pengguna_dptb_j"]] / d,
    }  # fmt: skip
    codes = codes.astype("U13")
    for province, tolerance in (("34", 0.08), ("51", 0.12), ("99", 0.15)):
        real_mask, sim_mask = np.char.startswith(codes, province), np.char.startswith(sim_codes, province)
        assert real_mask.sum() == sim_mask.sum()
        for name in real:
            statistic = ks_2samp(real[name][real_mask], sim[name][sim_mask]).statistic
            assert statistic < tolerance, (province, name, statistic)
    # aggregate shares and turnout of every kabupaten/kota with enough TPS
    real_kab, sim_kab = np.array([k[:4] for k in codes]), np.array([k[:4] for k in sim_codes])
    ballot = night.ballots["ppwp"]
    for kab in np.unique(real_kab):
        r, s = real_kab == kab, sim_kab == kab
        if r.sum() < 100 or kab.startswith("99"):  # overseas TPS draw profiles, not their code's
            continue
        real_share = np.array([x[r, c[f"paslon_0{i}"]].sum() for i in (1, 2, 3)]) / x[r, c["suara_sah"]].sum()
        sim_share = ballot.votes[s].sum(axis=0) / ballot.admin["suara_sah"][s].sum()
        assert np.abs(real_share - sim_share).max() < 0.08, kab
        real_turnout = x[r, c["pengguna_total_j"]].sum() / d[r].sum()
        sim_turnout = ballot.admin["pengguna_total_j"][s].sum() / ballot.admin["pemilih_dpt_j"][s].sum()
        assert abs(real_turnout - sim_turnout) < 0.05, kab


@pytest.mark.shared_data
def test_fit_regenerates_the_shipped_parameters():
    from pantau.simulate.fit import fit

    fitted = fit(shared_file("sirekap", "tps_latest_dev.csv.gz").parent)
    assert json.dumps(fitted, separators=(",", ":")) + "\n" == default_params_path().read_text()


@pytest.mark.shared_data
def test_the_real_registry_covers_the_country():
    from pantau.simulate.registry import load_registry

    registry = load_registry(shared_file("sirekap", "tps_registry.csv.gz"))
    assert len(registry) == 823_366 and len(np.unique(registry.region_numbers(2))) == 39

"""Form identities on real documents and on hand-made edge cases."""

from __future__ import annotations

import pytest

from pantau.detectors.form import Capacity, check_form, form_alerts
from pantau.schemas import normalize, parse_envelope

from .conftest import CONSISTENT_DOC, tally_of


def failing(tally, capacity=Capacity()):
    result = check_form(tally, capacity)
    return sorted({f.identity.detector for f in result.failures} | ({"form.capacity"} if result.over_capacity else set()))


def with_admin(**changes):
    return {**CONSISTENT_DOC, "administrasi": {**CONSISTENT_DOC["administrasi"], **changes}}


def test_consistent_document_judges_every_identity_and_fails_none():
    result = check_form(tally_of(**CONSISTENT_DOC))
    assert len(result.judged) == 14
    assert result.consistent
    assert form_alerts(tally_of(**CONSISTENT_DOC), result) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"suara_sah": 208}, ["form.sum_total", "form.sum_valid"]),
        ({"suara_tidak_sah": 3}, ["form.sum_total"]),
        ({"pengguna_dptb_j": 1}, ["form.gender_split", "form.voters_total"]),
        ({"pemilih_dpt_l": 139}, ["form.gender_split"]),
        ({"suara_total": 210, "suara_tidak_sah": 3}, ["form.ballots_exceed_voters"]),
        ({"pemilih_dpt_j": 200, "pemilih_dpt_l": 62, "pemilih_dpt_p": 138}, ["form.turnout_exceeds_register"]),
    ],
)
def test_each_broken_identity_is_named(changes, expected):
    assert failing(tally_of(**with_admin(**changes))) == expected


def test_chart_sum_failure_alone():
    doc = {**CONSISTENT_DOC, "chart": {"null": None, "100025": 53, "100026": 118, "100027": 37}}
    assert failing(tally_of(**doc)) == ["form.sum_valid"]


def test_identities_with_missing_fields_are_not_judged():
    chart_only = tally_of(chart=CONSISTENT_DOC["chart"], administrasi=None)
    assert check_form(chart_only).judged == ()
    partial = tally_of(**with_admin(suara_sah=None, pengguna_total_l=None))
    labels = {i.label for i in check_form(partial).judged}
    assert "Σ chart = suara_sah" not in labels
    assert "suara_sah + suara_tidak_sah = suara_total" not in labels
    assert "pengguna_total_l ≤ pemilih_dpt_l" not in labels
    assert "pengguna_total_j = pengguna_total_l + pengguna_total_p" not in labels
    assert "pengguna_dpt_j = pengguna_dpt_l + pengguna_dpt_p" in labels
    null_candidate = {**CONSISTENT_DOC, "chart": {"null": None, "100025": 53, "100026": None, "100027": 36}}
    assert "Σ chart = suara_sah" not in {i.label for i in check_form(tally_of(**null_candidate)).judged}


def test_capacity_depends_on_domestic_or_overseas():
    big = with_admin(pemilih_dpt_j=2000, pemilih_dpt_l=1000, pemilih_dpt_p=1000)
    assert failing(tally_of(**big)) == ["form.capacity"]
    assert failing(tally_of(kode_tps="9901010001001", **big)) == []
    assert failing(tally_of(kode_tps="9901010001001", **with_admin(pemilih_dpt_j=20000, pemilih_dpt_l=10000,
                                                                  pemilih_dpt_p=10000))) == ["form.capacity"]
    assert failing(tally_of(**big), Capacity(domestic=3000)) == []


def test_party_ballot_identities():
    doc = {
        "chart": {"null": None, "1": {"jml_suara_total": 50, "jml_suara_partai": 20}, "2": {"jml_suara_total": 30, "jml_suara_partai": 30}},
        "caleg": {"1": {"11": 25, "12": 10}, "2": {"21": 0}},
        "administrasi": {"suara_sah": 80, "suara_tidak_sah": 5, "suara_total": 85},
    }
    assert failing(tally_of(jenis="pdpr", **doc)) == ["form.party_total"]
    failure = check_form(tally_of(jenis="pdpr", **doc)).failures[0]
    assert (failure.lhs_total, failure.rhs_total) == (50, 20 + 25 + 10)
    doc["caleg"]["1"]["11"] = 20
    assert failing(tally_of(jenis="pdpr", **doc)) == []
    doc["caleg"]["1"]["11"] = None
    labels = {i.label for i in check_form(tally_of(jenis="pdpr", **doc)).judged}
    assert "partai 1: jml_suara_total = jml_suara_partai + Σ caleg" not in labels
    assert "partai 2: jml_suara_total = jml_suara_partai + Σ caleg" in labels


def test_real_curated_documents(curated):
    def detectors(name):
        return failing(normalize(parse_envelope(curated[name])))

    assert detectors("complete_consistent") == []
    assert detectors("with_mode_field_pengguna_dpt_eq_dpt") == ["form.voters_total"]  # 292 + 1 + 0 ≠ 292
    assert detectors("chart_only_admin_null") == []
    assert detectors("empty_not_yet_submitted") == []
    assert detectors("images_only_no_numbers") == []
    assert detectors("admin_only_chart_null") == ["form.gender_split", "form.voters_total"]  # p: 83 + 2 + 1 ≠ 85
    assert detectors("ocr_misread_paslon03_551") == ["form.capacity", "form.sum_valid"]
    assert detectors("ocr_misread_sum_ne_sah") == ["form.capacity", "form.sum_valid"]
    assert "form.sum_total" in detectors("admin_misread_sah15_dpt778")
    assert "form.gender_split" in detectors("admin_misread_sah15_dpt778")


def test_alerts_carry_numbers_reasons_in_both_languages_and_severity():
    doc = {**CONSISTENT_DOC, "chart": {"null": None, "100025": 53, "100026": 118, "100027": 880}}
    tally = tally_of(**doc)
    alerts = {a.detector: a for a in form_alerts(tally, check_form(tally))}
    assert set(alerts) == {"form.sum_valid", "form.capacity"}
    valid = alerts["form.sum_valid"]
    assert valid.severity == "critical" and valid.level == "tps" and valid.region == valid.kode_tps == "3173011005116"
    assert valid.evidence["failures"][0]["lhs_total"] == 1051
    assert valid.evidence["failures"][0]["rhs_total"] == 207
    assert "1051" in valid.reason and "1051" in valid.reason_en
    assert valid.reason != valid.reason_en
    assert alerts["form.capacity"].evidence == {"limit": 500, "over": {"chart.100027": 880}}
    assert valid.observed_at.isoformat() == "2024-02-15T00:41:44+07:00"

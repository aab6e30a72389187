"""Contract tests of ``pantau.schemas``: what every topic message may and may not say.

The shipped 1,000 real DKI documents and the curated edge cases must parse; what no real C.Hasil form
can say must be refused with :class:`InvalidSubmission`, a fixed ``code`` and a reason naming the field;
the committed JSON Schemas must be exactly what the models generate, and real messages must validate
against them.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import json
from datetime import datetime, timezone
from typing import Any

import jsonschema
import orjson
import pytest
from tests.conftest import CONSISTENT_DOC, tally_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pantau.detectors.inspector import TpsInspector
from pantau.schemas import (
    ADMIN_FIELDS,
    JENIS,
    PARTY_BALLOTS,
    Alert,
    DeadLetter,
    Envelope,
    InvalidSubmission,
    PartyVotes,
    Suggestion,
    Verdict,
    normalize,
    parse_envelope,
    validate_kode_tps,
)
from pantau.schemas.alert import alert_id
from pantau.schemas.export import COMMITTED, TOPIC_MODELS, render
from pantau.schemas.sirekap import MAX_COUNT, MAX_MESSAGE_BYTES

KODE = "3173011005116"
PPWP_IDS = ("100025", "100026", "100027")


def envelope(doc: dict[str, Any] | None = None, kode_tps: Any = KODE, jenis: Any = "ppwp", **extra: Any) -> dict:
    return {"kode_tps": kode_tps, "jenis": jenis, "doc": {} if doc is None else doc, **extra}


def rejection(data: Any) -> InvalidSubmission:
    with pytest.raises(InvalidSubmission) as info:
        parse_envelope(data)
    return info.value


def validator(topic: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((COMMITTED / f"{topic}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# --------------------------------------------------------------------------------------------------
# Real documents parse


def test_every_shipped_dki_envelope_parses(dki_envelopes):
    assert len(dki_envelopes) == 1000
    with_chart = with_null_key = 0
    for raw in dki_envelopes:
        env = parse_envelope(raw)
        assert isinstance(env, Envelope)
        assert (env.kode_tps, env.jenis) == (raw["kode_tps"], raw["jenis"])
        assert env.kabkota == raw["kode_tps"][:4]
        chart = raw["doc"].get("chart")
        with_chart += chart is not None
        if chart is not None and "null" in chart:
            with_null_key += 1
            tally = normalize(env)
            assert "chart.null" not in tally.declared and "chart.null" not in tally.counts
    # the quirk the models must accept really is in the shipped data: every digitised chart carries it
    assert with_chart > 400 and with_null_key == with_chart


def test_shipped_envelopes_parse_from_raw_bytes(dki_envelopes):
    """The stream hands parse_envelope bytes; the result must equal parsing the decoded object."""
    for raw in dki_envelopes[:200]:
        assert parse_envelope(orjson.dumps(raw)) == parse_envelope(raw)
        assert parse_envelope(json.dumps(raw)) == parse_envelope(raw)


def test_shipped_documents_are_kept_verbatim(dki_envelopes):
    """model_dump of what was set gives back the document exactly as served (incl. ``mode`` when present)."""
    with_mode = 0
    for raw in dki_envelopes:
        doc = parse_envelope(raw).doc
        assert doc.model_dump(exclude_unset=True) == raw["doc"]
        with_mode += "mode" in raw["doc"]
    assert with_mode > 0


CURATED_EXPECTATIONS = {
    # name: (chart_present, admin_present, number of counts, images kept)
    "complete_consistent": (True, True, 3 + len(ADMIN_FIELDS), 3),
    "chart_only_admin_null": (True, False, 3, 3),
    "admin_only_chart_null": (False, True, len(ADMIN_FIELDS), 2),
    "empty_not_yet_submitted": (False, False, 0, 0),
    "images_only_no_numbers": (False, False, 0, 3),
    "ocr_misread_paslon03_551": (True, True, 3 + len(ADMIN_FIELDS), 3),
    "ocr_misread_sum_ne_sah": (True, True, 3 + len(ADMIN_FIELDS), 3),
    "admin_misread_sah15_dpt778": (True, True, 3 + len(ADMIN_FIELDS), 3),
    "with_mode_field_pengguna_dpt_eq_dpt": (True, True, 3 + len(ADMIN_FIELDS), 3),
}


def test_curated_documents_parse(curated):
    assert set(curated) == set(CURATED_EXPECTATIONS)
    for name, raw in curated.items():
        env = parse_envelope(raw)
        tally = normalize(env)
        chart_present, admin_present, n_counts, n_images = CURATED_EXPECTATIONS[name]
        assert (tally.chart_present, tally.admin_present) == (chart_present, admin_present), name
        assert len(tally.counts) == n_counts, name
        assert len(tally.images) == n_images, name  # null image slots are dropped
        assert env.doc.model_dump(exclude_unset=True) == raw["doc"], name
        if chart_present:
            assert env.doc.chart["null"] is None  # kept verbatim ...
            assert tally.declared == tuple(f"chart.{i}" for i in PPWP_IDS)  # ... and dropped by normalize


def test_curated_mode_field_is_kept(curated):
    for name in ("with_mode_field_pengguna_dpt_eq_dpt", "admin_only_chart_null"):
        assert parse_envelope(curated[name]).doc.mode == "hhcw"
    assert parse_envelope(curated["complete_consistent"]).doc.mode is None


def test_null_chart_key_is_accepted_and_dropped_by_normalize():
    env = parse_envelope(envelope({"chart": {"null": None, "100025": 5, "100026": None}}))
    assert env.doc.chart == {"null": None, "100025": 5, "100026": None}
    tally = normalize(env)
    assert tally.counts == {"chart.100025": 5}
    assert tally.declared == ("chart.100025", "chart.100026")
    assert tally.chart_present and not tally.admin_present


def test_chart_of_only_the_null_key_is_present_but_empty():
    tally = normalize(parse_envelope(envelope({"chart": {"null": None}})))
    assert tally.chart_present
    assert tally.counts == {} and tally.declared == ()


def test_unknown_keys_are_kept_verbatim():
    doc = copy.deepcopy(CONSISTENT_DOC)
    doc["catatan_kpu"] = {"nested": [1, "x", None]}
    doc["administrasi"]["kolom_baru"] = 12
    env = parse_envelope(envelope(doc))
    dumped = env.doc.model_dump(exclude_unset=True)
    assert dumped["catatan_kpu"] == {"nested": [1, "x", None]}
    assert dumped["administrasi"]["kolom_baru"] == 12
    assert dumped == doc
    # and survive a full trip through JSON and back
    again = parse_envelope(env.model_dump_json())
    assert again == env
    assert again.doc.model_dump(exclude_unset=True)["catatan_kpu"] == {"nested": [1, "x", None]}
    # extras never become counts
    assert "administrasi.kolom_baru" not in normalize(env).counts


def test_unknown_keys_in_a_party_line_are_kept():
    doc = {"chart": {"1": {"jml_suara_total": 3, "jml_suara_partai": 3, "urut": 1}}}
    env = parse_envelope(envelope(doc, jenis="pdpr"))
    assert env.doc.model_dump(exclude_unset=True) == doc


def test_received_at_is_optional_and_parsed():
    assert parse_envelope(envelope()).received_at is None
    env = parse_envelope(envelope(received_at="2024-02-14T20:15:00+07:00"))
    assert env.received_at is not None and env.received_at.utcoffset().total_seconds() == 7 * 3600
    assert normalize(env).received_at == env.received_at


def test_max_count_is_accepted():
    doc = {"chart": {"100025": MAX_COUNT}, "administrasi": {"suara_sah": 0}}
    assert normalize(parse_envelope(envelope(doc))).counts == {"chart.100025": MAX_COUNT, "administrasi.suara_sah": 0}


def test_message_of_exactly_the_size_limit_is_accepted():
    base = orjson.dumps(envelope({"pad": ""}))
    padded = orjson.dumps(envelope({"pad": "x" * (MAX_MESSAGE_BYTES - len(base))}))
    assert len(padded) == MAX_MESSAGE_BYTES
    assert parse_envelope(padded).doc.model_extra["pad"].startswith("xxx")


# --------------------------------------------------------------------------------------------------
# Rejections: code and a reason naming the field

REJECTIONS = [
    # id, envelope, code, substrings the reason must contain
    ("negative_chart_count", envelope({"chart": {"null": None, "100025": -1}}), "schema",
     ["doc.chart.100025", "greater than or equal to 0", "-1"]),
    ("negative_admin_count", envelope({"administrasi": {"suara_sah": -3}}), "schema",
     ["doc.administrasi.suara_sah", "greater than or equal to 0"]),
    ("fractional_count", envelope({"chart": {"100025": 12.5}}), "schema",
     ["doc.chart.100025", "valid integer", "12.5"]),
    ("fractional_admin_count", envelope({"administrasi": {"suara_total": 12.5}}), "schema",
     ["doc.administrasi.suara_total", "valid integer"]),
    ("integral_float_count", envelope({"chart": {"100025": 12.0}}), "schema", ["doc.chart.100025", "12.0"]),
    ("count_as_string", envelope({"chart": {"100025": "12"}}), "schema",
     ["doc.chart.100025", "valid integer", "'12'"]),
    ("admin_count_as_string", envelope({"administrasi": {"suara_sah": "207"}}), "schema",
     ["doc.administrasi.suara_sah", "'207'"]),
    ("boolean_count", envelope({"chart": {"100025": True}}), "schema", ["doc.chart.100025", "True"]),
    ("boolean_admin_count", envelope({"administrasi": {"suara_sah": False}}), "schema",
     ["doc.administrasi.suara_sah", "False"]),
    ("count_above_max", envelope({"chart": {"100025": MAX_COUNT + 1}}), "schema",
     ["doc.chart.100025", f"less than or equal to {MAX_COUNT}"]),
    ("kode_tps_12_digits", envelope(kode_tps="317301100511"), "kode_tps", ["kode_tps", "13 digits"]),
    ("kode_tps_14_digits", envelope(kode_tps="31730110051160"), "kode_tps", ["kode_tps", "13 digits"]),
    ("kode_tps_letters", envelope(kode_tps="31730110051a6"), "kode_tps", ["kode_tps", "13 digits"]),
    ("kode_tps_arabic_indic_digits", envelope(kode_tps="٣١٧٣٠١١٠٠٥١١٦"), "kode_tps", ["kode_tps", "13 digits"]),
    ("kode_tps_fullwidth_digits", envelope(kode_tps="３１７３０１１００５１１６"), "kode_tps",
     ["kode_tps", "13 digits"]),
    ("kode_tps_as_number", envelope(kode_tps=3173011005116), "kode_tps", ["kode_tps", "string"]),
    ("kode_tps_unknown_province_00", envelope(kode_tps="0073011005116"), "kode_tps",
     ["kode_tps", "unknown province code '00'"]),
    ("kode_tps_unknown_province_20", envelope(kode_tps="2073011005116"), "kode_tps",
     ["kode_tps", "unknown province code '20'"]),
    ("kode_tps_zero_kabkota", envelope(kode_tps="3100011005116"), "kode_tps", ["kabupaten/kota part is all zeros"]),
    ("kode_tps_zero_kecamatan", envelope(kode_tps="3173001005116"), "kode_tps", ["kecamatan part is all zeros"]),
    ("kode_tps_zero_kelurahan", envelope(kode_tps="3173010000116"), "kode_tps", ["kelurahan/desa part is all zeros"]),
    ("kode_tps_zero_tps_number", envelope(kode_tps="3173011005000"), "kode_tps", ["TPS number part is all zeros"]),
    ("unknown_jenis", envelope(jenis="dpd"), "schema", ["jenis", "'dpd'"]),
    ("jenis_upper_case", envelope(jenis="PPWP"), "schema", ["jenis", "'PPWP'"]),
    ("party_value_in_ppwp", envelope({"chart": {"100025": {"jml_suara_total": 5, "jml_suara_partai": 5}}}),
     "schema", ["ppwp chart.100025 must be a count"]),
    ("party_value_in_pdpd", envelope({"chart": {"5101": {"jml_suara_total": 5}}}, jenis="pdpd"),
     "schema", ["pdpd chart.5101 must be a count"]),
    ("plain_count_in_pdpr", envelope({"chart": {"null": None, "1": 5}}, jenis="pdpr"), "schema",
     ["pdpr chart.1 must be an object of party votes"]),
    ("plain_count_in_pdprdk", envelope({"chart": {"7": 5}}, jenis="pdprdk"), "schema",
     ["pdprdk chart.7 must be an object of party votes"]),
    ("caleg_in_ppwp", envelope({"caleg": {"1": {"1001": 3}}}), "schema", ["ppwp", "caleg"]),
    ("caleg_in_pdpd", envelope({"caleg": {"1": {"1001": 3}}}, jenis="pdpd"), "schema", ["pdpd", "caleg"]),
    ("non_numeric_chart_key", envelope({"chart": {"paslon01": 3}}), "schema",
     ["doc.chart", "'paslon01'", "not a numeric id"]),
    ("non_ascii_chart_key", envelope({"chart": {"١٠٠٠٢٥": 3}}), "schema", ["doc.chart", "not a numeric id"]),
    ("non_numeric_caleg_key", envelope({"chart": {"1": {}}, "caleg": {"1": {"budi": 3}}}, jenis="pdpr"),
     "schema", ["doc.caleg", "'budi'", "not a numeric id"]),
    ("non_null_under_null_key", envelope({"chart": {"null": 5, "100025": 1}}), "schema",
     ["doc.chart", "'null' must hold null"]),
    ("party_line_count_as_string", envelope({"chart": {"1": {"jml_suara_total": "5"}}}, jenis="pdpr"), "schema",
     ["doc.chart.1.jml_suara_total", "'5'"]),
    ("negative_caleg_count", envelope({"chart": {"1": {}}, "caleg": {"1": {"1001": -2}}}, jenis="pdpr"), "schema",
     ["doc.caleg.1.1001", "greater than or equal to 0"]),
    ("extra_envelope_key", envelope(source="scraper-7"), "schema", ["source", "Extra inputs are not permitted"]),
    ("missing_doc", {"kode_tps": KODE, "jenis": "ppwp"}, "schema", ["doc", "Field required"]),
    ("doc_not_an_object", envelope(doc=None) | {"doc": [1, 2]}, "schema", ["doc"]),
    ("chart_not_an_object", envelope({"chart": [53, 118, 36]}), "schema", ["doc.chart"]),
    ("images_not_a_list", envelope({"images": "https://x/y.jpg"}), "schema", ["doc.images"]),
]  # fmt: skip


@pytest.mark.parametrize("data, code, needles", [pytest.param(*r[1:], id=r[0]) for r in REJECTIONS])
@pytest.mark.parametrize("as_bytes", [False, True], ids=["object", "bytes"])
def test_rejections(data, code, needles, as_bytes):
    error = rejection(orjson.dumps(data) if as_bytes else data)
    assert error.code == code
    assert isinstance(error, ValueError)
    assert str(error) == f"{code}: {error.reason}"
    for needle in needles:
        assert needle in error.reason, f"{needle!r} not in reason {error.reason!r}"


def test_union_tags_do_not_leak_into_the_reason():
    """The chart's count/party discriminator is an implementation detail: the path is the document path."""
    for data in (envelope({"chart": {"100025": -1}}),
                 envelope({"chart": {"1": {"jml_suara_total": -1}}}, jenis="pdpr")):  # fmt: skip
        reason = rejection(data).reason
        assert ".count" not in reason and ".party" not in reason, reason


def test_several_errors_are_all_reported():
    error = rejection(envelope({"chart": {"100025": -1, "100026": "x"}, "administrasi": {"suara_sah": 1.5}}))
    assert error.code == "schema"
    for field in ("doc.chart.100025", "doc.chart.100026", "doc.administrasi.suara_sah"):
        assert field in error.reason


def test_bad_kode_with_other_errors_is_a_kode_tps_rejection():
    assert rejection(envelope({"chart": {"100025": -1}}, kode_tps="12")).code == "kode_tps"


def test_reason_of_a_huge_value_is_shortened():
    error = rejection(envelope({"chart": {"100025": "9" * 500}}))
    assert len(error.reason) < 200
    assert "..." in error.reason


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\x00", b'{"kode_tps": "3173011005116",', "{'a': 1}"])
def test_non_json_is_refused(raw):
    error = rejection(raw)
    assert error.code == "not_json"
    assert "not valid JSON" in error.reason


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"3173011005116"', b"null", b"42", b"true", [1, 2], "[]"])
def test_json_that_is_not_an_object_is_refused(raw):
    error = rejection(raw)
    assert error.code == "schema"
    assert "expected a JSON object" in error.reason


@pytest.mark.parametrize("as_str", [False, True], ids=["bytes", "str"])
def test_message_above_the_size_limit_is_refused_before_parsing(as_str):
    padded = orjson.dumps(envelope({"pad": "x" * MAX_MESSAGE_BYTES}))
    error = rejection(padded.decode() if as_str else padded)
    assert error.code == "too_large"
    assert str(MAX_MESSAGE_BYTES) in error.reason and str(len(padded)) in error.reason
    # size is measured in bytes, not characters, and the limit holds even for invalid JSON
    wide = "é" * (MAX_MESSAGE_BYTES // 2 + 1)
    assert len(wide) < MAX_MESSAGE_BYTES and rejection(wide).code == "too_large"
    assert rejection(b"{" * (MAX_MESSAGE_BYTES + 1)).code == "too_large"


def test_invalid_submission_codes_are_a_fixed_set():
    assert set(InvalidSubmission.CODES) == {"not_json", "schema", "kode_tps", "too_large"}
    with pytest.raises(ValueError, match="unknown rejection code"):
        InvalidSubmission("weird", "x")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=st.dictionaries(st.sampled_from(["chart", "caleg", "administrasi", "images", "ts", "psu", "mode", "x"]),
                        JSON_VALUES, max_size=4),
    jenis=st.sampled_from(JENIS),
)  # fmt: skip
def test_any_json_document_either_parses_or_is_refused_with_invalid_submission(doc, jenis):
    try:
        env = parse_envelope(orjson.dumps(envelope(doc, jenis=jenis)))
    except InvalidSubmission as error:
        assert error.code == "schema"
        assert error.reason
    else:
        normalize(env)  # anything accepted must normalize


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_ever_raise_invalid_submission(raw):
    try:
        parse_envelope(raw)
    except InvalidSubmission as error:
        # bytes that happen to be a JSON object without a TPS code are a kode_tps refusal: b'{"":null}'
        assert error.code in ("not_json", "schema", "kode_tps") and error.reason


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(ADMIN_FIELDS), value=st.integers(0, MAX_COUNT))
def test_every_count_in_range_is_accepted(field, value):
    tally = normalize(parse_envelope(envelope({"administrasi": {field: value}, "chart": {"100026": value}})))
    assert tally.counts == {f"administrasi.{field}": value, "chart.100026": value}


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(ADMIN_FIELDS),
       value=st.integers(max_value=-1) | st.integers(min_value=MAX_COUNT + 1))  # fmt: skip
def test_every_count_out_of_range_is_refused(field, value):
    error = rejection(envelope({"administrasi": {field: value}}))
    assert error.code == "schema" and f"doc.administrasi.{field}" in error.reason


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=13, max_size=13))
def test_kode_tps_check_agrees_with_its_definition(kode):
    from pantau.schemas.sirekap import PROVINCES

    parts = (kode[2:4], kode[4:6], kode[6:10], kode[10:])
    expected_ok = kode[:2] in PROVINCES and all(int(p) > 0 for p in parts)
    try:
        env = parse_envelope(envelope(kode_tps=kode))
    except InvalidSubmission as error:
        assert not expected_ok, error.reason
        assert error.code == "kode_tps"
        with pytest.raises(ValueError):
            validate_kode_tps(kode)
    else:
        assert expected_ok and env.kode_tps == kode


# --------------------------------------------------------------------------------------------------
# Party ballots

PARTY_DOC = {
    "chart": {
        "null": None,
        "1": {"jml_suara_total": 30, "jml_suara_partai": 10},
        "2": {"jml_suara_total": None, "jml_suara_partai": 5},
        "3": None,
    },
    "caleg": {"1": {"1001": 15, "1002": 5, "1003": None}, "2": {"2001": None}, "3": None},
    "administrasi": {"suara_sah": 40},
}


@pytest.mark.parametrize("jenis", sorted(PARTY_BALLOTS))
def test_party_ballot_normalizes_to_documented_paths(jenis):
    env = parse_envelope(envelope(copy.deepcopy(PARTY_DOC), jenis=jenis))
    assert isinstance(env.doc.chart["1"], PartyVotes)
    tally = normalize(env)
    assert tally.party_ballot
    assert tally.counts == {
        "chart.1.jml_suara_total": 30,
        "chart.1.jml_suara_partai": 10,
        "chart.2.jml_suara_partai": 5,
        "caleg.1.1001": 15,
        "caleg.1.1002": 5,
        "administrasi.suara_sah": 40,
    }
    assert tally.declared == (
        "chart.1.jml_suara_total", "chart.1.jml_suara_partai",
        "chart.2.jml_suara_total", "chart.2.jml_suara_partai",
        "chart.3.jml_suara_total", "chart.3.jml_suara_partai",
        "caleg.1.1001", "caleg.1.1002", "caleg.1.1003",
        "caleg.2.2001",
    )  # fmt: skip
    # null caleg entries are declared (an identity over them waits), never counted
    assert "caleg.1.1003" in tally.declared and "caleg.1.1003" not in tally.counts


def test_party_paths_are_the_ones_the_form_identities_use():
    """A complete party line is judged: jml_suara_total = jml_suara_partai + Σ caleg, on these paths."""
    doc = {"chart": {"null": None, "1": {"jml_suara_total": 30, "jml_suara_partai": 10}},
           "caleg": {"1": {"1001": 15, "1002": 4}}, "administrasi": {"suara_sah": 30}}  # fmt: skip
    alerts = TpsInspector()(tally_of(jenis="pdpr", **doc))
    assert [a.detector for a in alerts if a.detector.startswith("form.")] == ["form.party_total"]
    values = alerts[0].evidence["failures"][0]["values"]
    assert values == {"chart.1.jml_suara_total": 30, "chart.1.jml_suara_partai": 10,
                      "caleg.1.1001": 15, "caleg.1.1002": 4}  # fmt: skip


def test_pdpd_has_a_flat_chart():
    env = parse_envelope(envelope({"chart": {"null": None, "5101": 40, "5102": None}, "administrasi": {"suara_sah": 40}},
                                  jenis="pdpd"))  # fmt: skip
    tally = normalize(env)
    assert not tally.party_ballot
    assert tally.counts == {"chart.5101": 40, "administrasi.suara_sah": 40}
    assert tally.declared == ("chart.5101", "chart.5102")


def test_empty_caleg_object_is_allowed_on_any_ballot():
    for jenis in JENIS:
        tally = normalize(parse_envelope(envelope({"caleg": {}}, jenis=jenis)))
        assert tally.declared == () and tally.counts == {}


# --------------------------------------------------------------------------------------------------
# Verdict, Alert


def verdict(**changes: Any) -> dict:
    base = dict(
        verdict_id="v-1", alert_id="afd42a8ed3a17673b246f9bc8b7151bd", detector="ocr.misread", jenis="ppwp",
        kode_tps="3173011002090", region="3173011002090", decision="corrected", corrected_values={"chart.100027": 10},
        note="Foto C.Hasil: paslon 03 = 10", decided_by="rina", role="verifier",
        decided_at=datetime(2024, 2, 16, 9, 0, tzinfo=timezone.utc),
    )  # fmt: skip
    return base | changes


def test_valid_verdicts():
    assert Verdict(**verdict()).corrected_values == {"chart.100027": 10}
    for decision in ("confirmed", "false_alarm", "field_check"):
        assert Verdict(**verdict(decision=decision, corrected_values={})).decision == decision
        assert Verdict(**{k: v for k, v in verdict(decision=decision).items() if k != "corrected_values"})


@pytest.mark.parametrize("changes", [{"note": ""}, {"note": None}, {"note": "x" * 4001}], ids=["empty", "null", "long"])
def test_verdict_requires_a_note(changes):
    with pytest.raises(ValidationError, match="note"):
        Verdict(**verdict(**changes))


def test_verdict_without_note_field_is_refused():
    data = verdict()
    del data["note"]
    with pytest.raises(ValidationError, match="note"):
        Verdict(**data)


def test_corrected_requires_corrected_values():
    with pytest.raises(ValidationError, match="corrected_values is required"):
        Verdict(**verdict(corrected_values={}))


@pytest.mark.parametrize("decision", ["confirmed", "false_alarm", "field_check"])
def test_corrected_values_only_for_corrected(decision):
    with pytest.raises(ValidationError, match="corrected_values"):
        Verdict(**verdict(decision=decision))


@pytest.mark.parametrize("changes", [{"extra": 1}, {"role": "admin"}, {"decision": "maybe"}, {"decided_by": ""}])
def test_verdict_refuses_unknown_keys_and_values(changes):
    with pytest.raises(ValidationError):
        Verdict(**verdict(**changes))


def sample_alert(**changes: Any) -> Alert:
    evidence = {"failures": [{"identity": "Σ chart = suara_sah", "lhs_total": 704, "rhs_total": 163}], "a": 1}
    data = dict(
        alert_id=alert_id("form.sum_valid", "ppwp", "3173011002090", evidence), detector="form.sum_valid",
        severity="critical", jenis="ppwp", kode_tps="3173011002090", region="3173011002090", level="tps",
        score=3.319, reason="Jumlah ...", reason_en="Sum ...", evidence=evidence,
        suggestions=[Suggestion(field="chart.100027", current=551, proposed=10, confidence=0.03, edit="arithmetic")],
        observed_at=datetime(2024, 2, 16, 12, 51, 22, tzinfo=timezone.utc),
    )  # fmt: skip
    return Alert(**(data | changes))


def _keys_sorted(value: Any) -> bool:
    if isinstance(value, dict):
        return list(value) == sorted(value) and all(_keys_sorted(v) for v in value.values())
    if isinstance(value, list):
        return all(_keys_sorted(v) for v in value)
    return True


def test_alert_to_json_is_canonical():
    alert = sample_alert()
    raw = alert.to_json()
    assert isinstance(raw, bytes)
    assert _keys_sorted(json.loads(raw))
    # same content, different insertion order: same bytes
    shuffled = sample_alert(evidence={"a": 1, "failures": [{"rhs_total": 163, "lhs_total": 704,
                                                           "identity": "Σ chart = suara_sah"}]})  # fmt: skip
    assert shuffled == alert and shuffled.to_json() == raw
    # different content: different bytes
    assert sample_alert(score=3.3).to_json() != raw
    # and it reads back to the same alert
    assert Alert.model_validate_json(raw) == alert
    assert Alert.model_validate_json(raw).to_json() == raw


def test_alert_id_is_deterministic_and_content_addressed():
    evidence = {"sum": 704, "suara_sah": 163}
    first = alert_id("form.sum_valid", "ppwp", "3173011002090", evidence)
    assert len(first) == 32 and int(first, 16) >= 0
    assert alert_id("form.sum_valid", "ppwp", "3173011002090", {"suara_sah": 163, "sum": 704}) == first
    assert alert_id("form.sum_valid", "ppwp", "3173011002090", dict(evidence)) == first
    different = [
        alert_id("form.sum_valid", "ppwp", "3173011002090", {"sum": 705, "suara_sah": 163}),
        alert_id("form.sum_valid", "ppwp", "3173011002090", {"sum": 704, "suara_sah": 163, "x": None}),
        alert_id("form.sum_total", "ppwp", "3173011002090", evidence),
        alert_id("form.sum_valid", "pdpr", "3173011002090", evidence),
        alert_id("form.sum_valid", "ppwp", "3173011002091", evidence),
    ]
    assert first not in different and len(set(different)) == len(different)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 1000), min_size=1, max_size=6), st.data())
def test_alert_id_ignores_key_order_but_not_values(evidence, data):
    keys = data.draw(st.permutations(list(evidence)))
    assert alert_id("d", "ppwp", KODE, {k: evidence[k] for k in keys}) == alert_id("d", "ppwp", KODE, evidence)
    key = data.draw(st.sampled_from(list(evidence)))
    assert alert_id("d", "ppwp", KODE, evidence | {key: evidence[key] + 1}) != alert_id("d", "ppwp", KODE, evidence)


def test_alerts_from_the_inspector_survive_validation(dki_envelopes):
    """tps_alert builds alerts with model_construct (no validation): what it builds must still be valid."""
    inspector = TpsInspector()
    alerts = [a for raw in dki_envelopes for a in inspector(normalize(parse_envelope(raw)))]
    assert len({a.detector for a in alerts}) >= 5
    for alert in alerts:
        again = Alert.model_validate_json(alert.to_json())
        assert again == alert and again.to_json() == alert.to_json()


# --------------------------------------------------------------------------------------------------
# JSON Schemas


@pytest.mark.parametrize("topic", list(TOPIC_MODELS))
def test_committed_json_schema_matches_the_models(topic):
    path = COMMITTED / f"{topic}.schema.json"
    assert path.exists(), f"{path} is missing: run `pantau schemas export schemas/json`"
    assert path.read_text(encoding="utf-8") == render(topic), (
        f"{path.name} is out of date with the pydantic models: run `pantau schemas export schemas/json`"
    )


def test_no_stale_committed_json_schemas():
    committed = {p.name for p in COMMITTED.glob("*.schema.json")}
    assert committed == {f"{topic}.schema.json" for topic in TOPIC_MODELS}, (
        "schemas/json holds files for topics that no longer exist (or lacks some): "
        "run `pantau schemas export schemas/json` and delete the stale ones"
    )


def test_every_shipped_envelope_validates_against_the_submissions_schema(dki_envelopes):
    check = validator("sirekap.submissions")
    errors = [(raw["kode_tps"], next(check.iter_errors(raw)).message) for raw in dki_envelopes if not check.is_valid(raw)]
    assert not errors, errors[:3]


def test_curated_documents_validate_against_the_submissions_schema(curated):
    check = validator("sirekap.submissions")
    for name, raw in curated.items():
        assert check.is_valid(raw), (name, next(check.iter_errors(raw)).message)


def test_party_ballot_validates_against_the_submissions_schema():
    check = validator("sirekap.submissions")
    raw = envelope(copy.deepcopy(PARTY_DOC), jenis="pdpr", received_at="2024-02-14T20:15:00+07:00")
    parse_envelope(raw)
    assert check.is_valid(raw), next(check.iter_errors(raw)).message


@pytest.mark.parametrize(
    "rid", ["negative_chart_count", "negative_admin_count", "fractional_count", "count_as_string", "boolean_count",
            "count_above_max", "unknown_jenis", "extra_envelope_key", "missing_doc", "kode_tps_as_number",
            "party_line_count_as_string", "negative_caleg_count", "chart_not_an_object"],
)  # fmt: skip
def test_submissions_schema_refuses_what_the_models_refuse(rid):
    """Other teams validate with the JSON Schema: it must refuse what it can express of the contract."""
    data = next(r[1] for r in REJECTIONS if r[0] == rid)
    assert not validator("sirekap.submissions").is_valid(data)


def test_inspector_alerts_validate_against_the_alerts_schema(dki_envelopes):
    check = validator("pantau.alerts")
    inspector = TpsInspector()
    alerts = [a for raw in dki_envelopes for a in inspector(normalize(parse_envelope(raw)))]
    assert len(alerts) > 20
    assert any(a.suggestions for a in alerts)
    assert {"form.sum_valid", "ocr.misread"} <= {a.detector for a in alerts}
    for alert in alerts:
        payload = json.loads(alert.to_json())
        assert check.is_valid(payload), (alert.detector, next(check.iter_errors(payload)).message)


def test_revision_alerts_validate_against_the_alerts_schema():
    check = validator("pantau.alerts")
    inspector = TpsInspector()
    doc = copy.deepcopy(CONSISTENT_DOC)
    alerts = inspector(tally_of(**doc))
    for value in (63, 53, 36):
        doc["chart"]["100025"] = value
        alerts += inspector(tally_of(**doc))
    assert {"revision.changed", "revision.flipflop"} <= {a.detector for a in alerts}
    for alert in alerts:
        assert check.is_valid(json.loads(alert.to_json()))


def test_verdict_and_deadletter_validate_against_their_schemas():
    assert validator("pantau.verdicts").is_valid(Verdict(**verdict()).model_dump(mode="json"))
    assert not validator("pantau.verdicts").is_valid(Verdict(**verdict()).model_dump(mode="json") | {"x": 1})
    letter = DeadLetter(original="e30=", code="not_json", reason="not valid JSON", topic="sirekap.submissions",
                        partition=3, offset=42, failed_at=datetime(2024, 2, 14, 13, 0, tzinfo=timezone.utc))  # fmt: skip
    assert letter.original_bytes() == b"{}"
    assert validator("pantau.deadletter").is_valid(letter.model_dump(mode="json"))


# --------------------------------------------------------------------------------------------------
# Doctests of the library

DOCTEST_MODULES = [
    "pantau.schemas.sirekap",
    "pantau.schemas.alert",
    "pantau.detectors.form",
    "pantau.detectors.ocr",
    "pantau.detectors.inspector",
    "pantau.detectors.assessor",
    "pantau.detectors.regional",
    "pantau.detectors.monitor",
    "pantau.detectors.revision",
    "pantau.detectors.forensics",
    "pantau.misreads",
    "pantau.stream.metrics",
    "pantau.stream.backoff",
]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.attempted > 0, f"{name} has no doctests"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests of {name} failed (see output above)"

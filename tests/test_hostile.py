"""Hostile input: whatever arrives on ``sirekap.submissions``, the worker publishes alerts or a dead letter
with the reason -- never an exception of another kind, never a hang, never a corrupted state.

Offline (fast, no broker), through :class:`OfflineWorker` (``bench/fuzz_ingest.py``), which makes the calls
``Pipeline.process`` makes: ``parse_envelope`` on the raw bytes, ``normalize``, ``TpsInspector.inspect`` /
``commit`` with a ``RegionalMonitor``, ``Alert.to_json``, the region sums sent to the assessor, the table
states as their changelog carries them. Inputs are mutations of the real shipped documents (the 1,000
DKI envelopes, the curated documents when ``../shared/data`` is there, the conftest documents) and of
party-ballot documents: truncated JSON at every cut point, every JSON type and out-of-range or non-JSON
number in every field, nesting up to 100,000 deep, 10 MB strings and messages, invalid UTF-8, byte
order marks, duplicate keys, malformed TPS codes, unknown ballot types, charts that do not fit the
ballot, more entries than a form has, unknown keys (kept, and changing no alert), random byte edits.
Every message either gives alerts or raises ``InvalidSubmission`` with a code of the fixed set and a
reason; each runs under a time limit; and valid documents interleaved with hostile messages give
exactly the alerts and states they give alone.

Through the broker (``@pytest.mark.broker``): ~200 hostile messages of every category, a 10 MB one
among them, interleaved with the shipped documents, twice; the worker stays up (same process, /health
200, no agent crash), dead-letters every hostile message with the code and reason the offline path
gives, publishes exactly the offline replay's alerts, and its RSS stays bounded.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from functools import cache
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pantau import demo_data
from pantau.replay import replay
from pantau.schemas import ADMIN_FIELDS, PARTY_BALLOTS, Alert, DeadLetter, InvalidSubmission, parse_envelope
from pantau.schemas.sirekap import MAX_CALEG, MAX_DEPTH, MAX_ENTRIES, MAX_MESSAGE_BYTES
from pantau.sources import read_records

from .conftest import CONSISTENT_DOC, CURATED, MISREAD_DOC, load_bench
from .test_stream import (  # noqa: F401  (broker and workers are the fixtures of test_stream.py)
    PROCESS_TIMEOUT,
    TopicReader,
    alert_messages,
    assert_same_alerts,
    broker,
    by_name,
    metrics_samples,
    offline_alerts,
    wait_for,
    wait_processed,
    workers,
)

fuzz = load_bench("fuzz_ingest")
OfflineWorker, Raw, Pairs = fuzz.OfflineWorker, fuzz.Raw, fuzz.Pairs
CATEGORIES = fuzz.CATEGORIES

#: Longest one message may take through the offline path before it counts as a hang. The slowest
#: legitimate message (a maximal party ballot with a misread to search) takes well under 0.1 s; the
#: margin is for a 2-core machine shared with broker tests.
MESSAGE_SECONDS = 5.0
HYPOTHESIS = {"deadline": 10_000, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


# --------------------------------------------------------------------------------------------------
# The documents mutated


def party_envelope(kode: str, jenis: str = "pdpr", parties: int = 18, candidates: int = 8, misread: bool = False) -> dict:
    """A consistent party-ballot document (chart per party, caleg per candidate), optionally with one
    candidate's 3 read as 8 (``form.party_total`` and ``form.sum_valid`` fail; ``ocr.misread`` mends them)."""
    chart, caleg, valid = {"null": None}, {}, 0
    for p in range(1, parties + 1):
        votes = {str(1000 * p + c): (p * 7 + c * 3) % 13 for c in range(candidates)}
        partai = (p * 5) % 11
        total = partai + sum(votes.values())
        chart[str(p)] = {"jml_suara_total": total, "jml_suara_partai": partai}
        caleg[str(p)] = votes
        valid += total
    if misread:
        first = next(k for k, v in caleg["1"].items() if v == 3)
        caleg["1"][first] = 8
    admin = {**CONSISTENT_DOC["administrasi"], "suara_sah": valid, "suara_total": valid + 2, "pengguna_total_j": valid + 2}
    admin.update({"pengguna_dpt_j": valid + 2 - 7, "pengguna_dpt_l": (valid - 5) // 2, "pengguna_dpt_p": valid - 5 - (valid - 5) // 2,
                  "pengguna_total_l": (valid - 5) // 2 + 6, "pengguna_total_p": valid - 5 - (valid - 5) // 2 + 1,
                  "pemilih_dpt_j": 2 * valid, "pemilih_dpt_l": valid, "pemilih_dpt_p": valid})  # fmt: skip
    return {"kode_tps": kode, "jenis": jenis, "doc": {**CONSISTENT_DOC, "chart": chart, "caleg": caleg, "administrasi": admin}}


def pdpd_envelope(kode: str, candidates: int = 40) -> dict:
    chart = {"null": None, **{str(200000 + c): (c * 17) % 29 for c in range(candidates)}}
    admin = {**CONSISTENT_DOC["administrasi"]}
    admin["suara_sah"] = sum(v for v in chart.values() if v is not None)
    admin["suara_total"] = admin["suara_sah"] + admin["suara_tidak_sah"]
    return {"kode_tps": kode, "jenis": "pdpd", "doc": {**CONSISTENT_DOC, "chart": chart, "administrasi": admin}}


@cache
def dki() -> list[dict]:
    return fuzz.load_envelopes()


@cache
def bases() -> list[dict]:
    """Every document the mutations start from: the shipped DKI sample, the conftest and curated
    documents, and party ballots (which the DKI sample, PPWP only, lacks)."""
    out = list(dki())
    out += [{"kode_tps": "3173011005116", "jenis": "ppwp", "doc": CONSISTENT_DOC},
            {"kode_tps": "3173011002090", "jenis": "ppwp", "doc": MISREAD_DOC},
            party_envelope("3171011001001"), party_envelope("3171011001002", "pdprdk", misread=True),
            party_envelope("1101011001003", "pdprdp", parties=24, candidates=12), pdpd_envelope("3171011001004"),
            {"kode_tps": "9901011001005", "jenis": "ppwp", "doc": {"chart": None, "administrasi": None}}]  # fmt: skip
    if CURATED.exists():
        for path in sorted(CURATED.glob("*.json")):
            out.append({"kode_tps": path.stem.rsplit("__", 1)[1], "jenis": "ppwp", "doc": json.loads(path.read_text())})
    return out


def special_bases() -> list[dict]:
    """The non-DKI bases (hypothesis draws from them as often as from the 1,000 DKI documents)."""
    return bases()[len(dki()) :]


base_strategy = st.one_of(st.sampled_from(range(len(bases()))), st.sampled_from(range(len(dki()), len(bases()))))


# --------------------------------------------------------------------------------------------------
# The property every message must have


def outcome(worker: OfflineWorker, value: bytes) -> list[Alert] | InvalidSubmission:
    """What the worker does with ``value``: its alerts, or the rejection it dead-letters, checked.
    Any other exception, or a message running longer than MESSAGE_SECONDS, fails the test."""
    started = time.perf_counter()
    try:
        with fuzz.time_limit(MESSAGE_SECONDS):
            result = worker.process(value)
    except fuzz.Hang:
        pytest.fail(f"a message took over {MESSAGE_SECONDS} s: {value[:200]!r}")
    except Exception as exc:  # the stream would dead-letter it as "error": a bug
        raise AssertionError(f"{type(exc).__name__} escaped the worker's path for {value[:200]!r}") from exc
    assert time.perf_counter() - started < MESSAGE_SECONDS
    if isinstance(result, InvalidSubmission):
        fuzz.check_rejection(result)
    else:
        assert isinstance(result, list) and all(isinstance(a, Alert) for a in result)
        fuzz.check_reencodable(value)
    return result


def code_of(result: list[Alert] | InvalidSubmission) -> str:
    return fuzz.outcome_of(result)


def ids(alerts: list[Alert]) -> list[str]:
    return [a.alert_id for a in alerts]


def raw_of(envelope: dict) -> bytes:
    return orjson.dumps(envelope)


# --------------------------------------------------------------------------------------------------
# 0. The helper is the worker's path: on the shipped documents it gives the offline replay's alerts


def test_the_offline_worker_gives_the_offline_replays_alerts():
    worker = OfflineWorker()
    alerts: dict[str, Alert] = {}
    for envelope in dki():
        result = outcome(worker, raw_of(envelope))
        assert isinstance(result, list)
        for alert in result:
            alerts.setdefault(alert.alert_id, alert)
    for alert in worker.assess():
        alerts.setdefault(alert.alert_id, alert)
    expected = {a.alert_id: a for a in replay(read_records(demo_data()))}
    assert len(expected) == 172
    assert alerts.keys() == expected.keys()
    assert all(alerts[k].to_json() == expected[k].to_json() for k in expected)


# --------------------------------------------------------------------------------------------------
# 1. Every category, on every kind of document (hypothesis)


@settings(max_examples=1200, **HYPOTHESIS)
@given(category=st.sampled_from(sorted(CATEGORIES)), index=base_strategy, seed=st.integers(0, 2**32 - 1))
def test_every_mutation_gives_alerts_or_a_dead_letter_with_its_reason(category: str, index: int, seed: int):
    envelope = bases()[index]
    value = CATEGORIES[category].mutate(random.Random(seed), envelope, raw_of(envelope))
    result = outcome(OfflineWorker(), value)
    expect = CATEGORIES[category].expect
    if expect is not None:
        assert code_of(result) in expect, (category, code_of(result), str(result)[:200], value[:200])
    if len(value) > MAX_MESSAGE_BYTES:
        assert code_of(result) == "too_large"


@settings(max_examples=60, **HYPOTHESIS)
@given(st.lists(st.tuples(st.sampled_from(sorted(CATEGORIES)), base_strategy, st.integers(0, 2**32 - 1)), min_size=1, max_size=40))
def test_one_worker_survives_any_sequence_of_mutations(plan: list[tuple[str, int, int]]):
    """State built by earlier (accepted) mutants -- revisions, region sums -- never makes a later one fail."""
    worker = OfflineWorker()
    for category, index, seed in plan:
        envelope = bases()[index]
        outcome(worker, CATEGORIES[category].mutate(random.Random(seed), envelope, raw_of(envelope)))
        outcome(worker, raw_of(envelope))  # and the original after it (a revision of the mutant)
    worker.assess()


# --------------------------------------------------------------------------------------------------
# 2. Each category exhaustively where it is small enough


@pytest.mark.parametrize("envelope", [bases()[0], special_bases()[1], special_bases()[3], special_bases()[5]],
                         ids=["dki", "misread", "pdprdk", "pdpd"])  # fmt: skip
def test_truncated_at_every_cut_point_is_not_json(envelope: dict):
    value = raw_of(envelope)
    worker = OfflineWorker()
    for cut in range(len(value)):
        result = outcome(worker, value[:cut])
        assert code_of(result) == "not_json", (cut, value[:cut][-40:])
        assert "JSON" in result.reason
    assert code_of(outcome(worker, value)) == "accepted"


COUNT_PATHS = [("doc", "administrasi", name) for name in ADMIN_FIELDS] + [("doc", "chart", "100025")]
#: Tokens a count must refuse as a schema error: other types, negatives, fractions, beyond any form's boxes.
NOT_A_COUNT = (b'"12"', b'"abc"', b'""', b'1.5', b'12.0', b'-0.0', b'1e3', b'true', b'false', b'[]', b'{}', b'-1', b'10000000',
               b'-9223372036854775808', b'9223372036854775807', b'18446744073709551616', b'1' + b'0' * 30, b'-1' + b'0' * 30)  # fmt: skip
NOT_JSON = (b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"1e400", b"-1e400", b"0x10", b"01", b"+1", b".5")


@pytest.mark.parametrize("index", [0, len(dki()), len(dki()) + 3, len(dki()) + 5], ids=["dki", "consistent", "pdprdk", "pdpd"])
def test_every_token_in_every_field(index: int):
    """Every JSON type, out-of-range and non-JSON number in every field of the envelope and document."""
    envelope = bases()[index]
    worker = OfflineWorker()
    seen = Counter()
    for path in fuzz.paths_of(envelope):
        for token in fuzz.TOKENS:
            value = fuzz.dumps(fuzz.put(envelope, path, Raw(token)))
            result = outcome(worker, value)
            seen[code_of(result)] += 1
            if token in NOT_JSON:
                assert code_of(result) == "not_json", (path, token)
            elif path in COUNT_PATHS and token in NOT_A_COUNT and not (path[1] == "chart" and envelope["jenis"] in PARTY_BALLOTS):
                assert code_of(result) == "schema", (path, token, str(result))
                assert ".".join(path[1:3]) in result.reason  # the reason names the field
            elif path == ("kode_tps",) and token != b'"3173011005116"':
                assert code_of(result) in ("kode_tps", "not_json"), (path, token)
    assert seen["accepted"] and seen["schema"] and seen["not_json"] and seen["kode_tps"], seen


@pytest.mark.parametrize("depth", fuzz.DEPTHS)
def test_deep_nesting_anywhere(depth: int):
    """Nesting past orjson's 1,024 levels is not JSON; below it, a schema error where a value is expected,
    and where the document allows unknown keys, kept verbatim up to MAX_DEPTH levels and refused beyond
    (a document nested 256 deep made the desk's feed raise on every retry: desk/cases.py re-encodes it).
    Deep structures do not break the reason either (repr of a 1,000-deep list raises RecursionError)."""
    envelope = bases()[len(dki())]
    worker = OfflineWorker()
    rng = random.Random(depth)

    def parses(value: bytes) -> bool:
        try:
            orjson.loads(value)
            return True
        except orjson.JSONDecodeError:
            return False

    for path in fuzz.paths_of(envelope) + [("doc", "x_extra"), ("doc", "administrasi", "x_extra")]:
        value = fuzz.dumps(fuzz.put(envelope, path, Raw(fuzz.nested(depth, rng))))
        result = outcome(worker, value)
        if not parses(value):
            assert code_of(result) == "not_json" and "depth" in result.reason, (depth, path)
            assert depth + len(path) > 1024
        elif path[-1] == "x_extra" and len(path) + depth <= MAX_DEPTH:
            assert code_of(result) == "accepted", (depth, path, str(result))
        elif path[-1] == "x_extra":  # kept verbatim, it must stay re-encodable by every consumer
            assert code_of(result) == "schema" and "levels deep" in result.reason, (depth, path, str(result))
        else:
            assert code_of(result) in ("schema", "kode_tps", "accepted"), (depth, path)
    value = fuzz.nested(depth, rng)
    assert code_of(outcome(worker, value)) in ({"schema", "kode_tps"} if parses(value) else {"not_json"})


def test_huge_strings_and_ten_megabyte_messages_are_too_large():
    envelope = bases()[len(dki())]
    worker = OfflineWorker()
    ten = b'"' + b"x" * fuzz.TEN_MB + b'"'
    for path in fuzz.paths_of(envelope) + [("doc", "x_extra")]:
        result = outcome(worker, fuzz.dumps(fuzz.put(envelope, path, Raw(ten))))
        assert code_of(result) == "too_large" and "exceeds" in result.reason
    rng = random.Random(1)
    for _ in range(5):
        value = fuzz.m_oversized(rng, envelope, raw_of(envelope))
        assert len(value) >= fuzz.TEN_MB and code_of(outcome(worker, value)) == "too_large"
    # Just under the limit, a long string is kept where the document allows one.
    frame = fuzz.dumps(fuzz.put(envelope, ("doc", "x_extra"), Raw(b'""')))
    value = fuzz.dumps(fuzz.put(envelope, ("doc", "x_extra"), Raw(b'"' + b"x" * (MAX_MESSAGE_BYTES - len(frame)) + b'"')))
    assert len(value) == MAX_MESSAGE_BYTES and code_of(outcome(worker, value)) == "accepted"
    assert code_of(outcome(worker, value[:-3] + b'x"}}')) == "too_large"


@pytest.mark.parametrize("junk", fuzz.INVALID_UTF8, ids=lambda b: b.hex())
def test_invalid_utf8_anywhere_is_not_json(junk: bytes):
    value = raw_of(bases()[len(dki())])
    worker = OfflineWorker()
    for at in range(0, len(value) + 1, 7):
        for mutated in (value[:at] + junk + value[at:], value[:at] + junk + value[at + len(junk) :]):
            result = outcome(worker, mutated)
            assert code_of(result) == "not_json", (at, mutated[max(at - 20, 0) : at + 20])


def test_byte_order_marks_are_not_json():
    envelope = bases()[len(dki())]
    worker = OfflineWorker()
    rng = random.Random(0)
    for _ in range(60):
        assert code_of(outcome(worker, fuzz.m_bom(rng, envelope, raw_of(envelope)))) == "not_json"
    # A BOM inside a string is just a character.
    assert code_of(outcome(worker, fuzz.dumps(fuzz.put(envelope, ("doc", "ts"), "\ufeff2024-02-15 00:41:44")))) == "accepted"


@settings(max_examples=300, **HYPOTHESIS)
@given(index=base_strategy, seed=st.integers(0, 2**32 - 1))
def test_duplicate_keys_read_as_the_decoded_document(index: int, seed: int):
    """A key twice in one object: the last value wins, exactly as in the decoded document every other
    consumer (the desk, ``pantau replay``) re-encodes -- same outcome, same alerts."""
    envelope = bases()[index]
    value = fuzz.m_duplicate_keys(random.Random(seed), envelope, raw_of(envelope))
    result = outcome(OfflineWorker(), value)
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        assert code_of(result) == "not_json"
        return
    again = outcome(OfflineWorker(), orjson.dumps(decoded))
    assert code_of(result) == code_of(again)
    if isinstance(result, list):
        assert [a.to_json() for a in result] == [a.to_json() for a in again]


@pytest.mark.parametrize("kode", fuzz.BAD_KODES, ids=repr)
def test_malformed_tps_codes_are_refused_as_kode_tps(kode: Any):
    worker = OfflineWorker()
    for envelope in (bases()[0], special_bases()[2]):
        result = outcome(worker, orjson.dumps({**envelope, "kode_tps": kode}))
        assert code_of(result) == "kode_tps", (kode, str(result))
        assert "kode_tps" in result.reason


@pytest.mark.parametrize("jenis", fuzz.BAD_JENIS, ids=repr)
def test_unknown_ballot_types_are_refused(jenis: Any):
    result = outcome(OfflineWorker(), orjson.dumps({**bases()[0], "jenis": jenis}))
    assert code_of(result) == "schema" and "jenis" in result.reason


@settings(max_examples=200, **HYPOTHESIS)
@given(index=base_strategy, seed=st.integers(0, 2**32 - 1))
def test_charts_that_do_not_fit_the_ballot_are_refused(index: int, seed: int):
    envelope = bases()[index]
    result = outcome(OfflineWorker(), fuzz.m_chart_mismatch(random.Random(seed), envelope, raw_of(envelope)))
    assert code_of(result) == "schema" and ("chart" in result.reason or "caleg" in result.reason), str(result)


@settings(max_examples=40, **HYPOTHESIS)
@given(seed=st.integers(0, 2**32 - 1))
def test_more_entries_than_any_form_are_refused_quickly(seed: int):
    """Tens of thousands of chart or caleg entries (under 1 MiB) used to reach the detectors: a sum of
    ~2,500 terms overflowed the compiler's recursion in detectors/form.py, and below that the misread
    search is quadratic (a 220 KB chart took 26 s). The schema now refuses them."""
    envelope = bases()[0]
    value = fuzz.m_too_many_entries(random.Random(seed), envelope, raw_of(envelope))
    started = time.perf_counter()
    result = outcome(OfflineWorker(), value)
    assert code_of(result) == "schema" and "more than any form" in result.reason
    assert time.perf_counter() - started < 2.0


def test_the_largest_forms_the_schema_accepts_are_inspected_quickly():
    """MAX_ENTRIES chart entries and MAX_CALEG caleg counts, with a misread to search for."""
    largest = [
        pdpd_envelope("3171011001010", candidates=MAX_ENTRIES - 1),
        party_envelope("3171011001011", parties=MAX_CALEG // MAX_ENTRIES, candidates=MAX_ENTRIES, misread=True),
        party_envelope("3171011001012", parties=MAX_ENTRIES - 1, candidates=MAX_CALEG // (MAX_ENTRIES - 1), misread=True),
    ]
    largest[0]["doc"]["chart"]["200001"] += 1  # Σ chart ≠ suara_sah, mendable by any of 99 candidates
    worker = OfflineWorker()
    for envelope in largest:
        started = time.perf_counter()
        result = outcome(worker, raw_of(envelope))
        seconds = time.perf_counter() - started
        assert isinstance(result, list) and {"form.sum_valid", "form.party_total"} & {a.detector for a in result}, str(result)[:300]
        assert seconds < 2.0, seconds
    one_more = pdpd_envelope("3171011001013", candidates=MAX_ENTRIES)  # 100 candidates + the "null" key
    assert code_of(outcome(worker, raw_of(one_more))) == "schema"


@settings(max_examples=200, **HYPOTHESIS)
@given(index=base_strategy, seed=st.integers(0, 2**32 - 1))
def test_unknown_keys_are_kept_and_change_no_alert(index: int, seed: int):
    envelope = bases()[index]
    mutated, added = fuzz.add_extras(random.Random(seed), envelope)
    parsed = parse_envelope(orjson.dumps(mutated))
    for path, value in added:
        holder = parsed.doc if path[1:-1] == () else parsed.doc.administrasi
        assert holder.model_extra[path[-1]] == value  # kept verbatim
    with_extras = outcome(OfflineWorker(), orjson.dumps(mutated))
    without = outcome(OfflineWorker(), raw_of(envelope))
    assert [a.to_json() for a in with_extras] == [a.to_json() for a in without]
    # On the envelope itself, which has a fixed shape, an unknown key is refused.
    result = outcome(OfflineWorker(), fuzz.m_envelope_extra(random.Random(seed), envelope, raw_of(envelope)))
    assert code_of(result) == "schema" and "Extra inputs" in result.reason


# --------------------------------------------------------------------------------------------------
# 3. Hostile messages leave no trace: the valid ones give exactly what they give alone


def hostile_mix(rng: random.Random, count: int, provinces: set[str], categories: list[str] | None = None) -> list[tuple[str, bytes]]:
    """``count`` hostile messages of every category but ``valid``, mutated from random bases: the rejected
    ones, and accepted ones only outside the valid documents' provinces (an accepted form is data: it
    rightly changes its TPS's revision state and its regions' sums, up to the province)."""
    names = categories or [c for c in sorted(CATEGORIES) if c != "valid"]
    out = []
    while len(out) < count:
        name = names[len(out) % len(names)]
        envelope = bases()[rng.randrange(len(bases()))]
        value = CATEGORIES[name].mutate(rng, envelope, raw_of(envelope))
        try:
            provinsi = parse_envelope(value).kode_tps[:2]
        except InvalidSubmission:
            out.append((name, value))
            continue
        if provinsi not in provinces:
            out.append((name, value))
    return out


def run_valid(worker: OfflineWorker, valid: list[bytes], hostile: list[bytes], rng: random.Random) -> list[list[bytes]]:
    """Feed ``valid`` in order with ``hostile`` spread between them; the valid ones' alerts, as published."""
    slots = sorted(rng.randrange(len(valid) + 1) for _ in hostile)
    published, h = [], 0
    for i, value in enumerate(valid):
        while h < len(hostile) and slots[h] <= i:
            outcome(worker, hostile[h])
            h += 1
        result = outcome(worker, value)
        assert isinstance(result, list)
        published.append([a.to_json() for a in result])
    for value in hostile[h:]:
        outcome(worker, value)
    return published


def test_thousands_of_hostile_messages_leave_the_valid_alerts_and_states_unchanged():
    rng = random.Random(2024)
    valid = [raw_of(e) for e in dki()]
    provinces = {e["kode_tps"][:2] for e in dki()}
    hostile = [value for _, value in hostile_mix(rng, 2000, provinces)]
    alone, mixed = OfflineWorker(), OfflineWorker()
    expected = run_valid(alone, valid, [], rng)
    got = run_valid(mixed, valid, hostile, rng)
    assert got == expected
    regional = [a.to_json() for a in mixed.assess() if a.region[:2] in provinces]
    assert regional == [a.to_json() for a in alone.assess()]
    # The revision and region states of the valid documents' TPS and regions are exactly as without them.
    assert {k: v for k, v in mixed.states.data.items() if k in alone.states.data} == alone.states.data
    assert {k: v for k, v in mixed.region_states.data.items() if k in alone.region_states.data} == alone.region_states.data
    assert {k: v for k, v in mixed.regional.items() if k in alone.regional} == alone.regional


@settings(max_examples=15, **HYPOTHESIS)
@given(start=st.integers(0, 900), seed=st.integers(0, 2**32 - 1), count=st.integers(1, 120))
def test_any_interleaving_leaves_the_valid_alerts_unchanged(start: int, seed: int, count: int):
    rng = random.Random(seed)
    envelopes = dki()[start : start + 100] + special_bases()[:6]
    valid = [raw_of(e) for e in envelopes]
    hostile = [value for _, value in hostile_mix(rng, count, {e["kode_tps"][:2] for e in envelopes})]
    expected = run_valid(OfflineWorker(), valid, [], rng)
    assert run_valid(OfflineWorker(), valid, hostile, rng) == expected


# --------------------------------------------------------------------------------------------------
# 4. Through a real worker on the embedded broker


#: Messages beyond the worker's 1 MiB limit but within what the producer and broker take; the 3.5 MB
#: one's dead letter (its base64 > PANTAU_MAX_MESSAGE_BYTES, 4 MiB) keeps only the first 64 KiB.
OVERSIZES = (MAX_MESSAGE_BYTES + 1, 2 << 20, 3_500_000, fuzz.TEN_MB)
#: Keys the hostile messages come with (the dead letter keeps it).
HOSTILE_KEYS = (None, b"3173", b"\xff\x00not a kabkota", b"9999")
PER_CATEGORY = 15


def broker_hostile(seed: int = 9) -> list[tuple[str, bytes | None, bytes, InvalidSubmission]]:
    """~200 hostile messages of every category the worker must dead-letter: (category, key, value, the
    offline rejection). Within the producer's request limit, except one 10 MB message."""
    rng = random.Random(seed)
    out = []
    names = [c for c in sorted(CATEGORIES) if c not in ("valid", "extra_keys", "oversized")]
    for name in names:
        made = 0
        while made < PER_CATEGORY:
            envelope = bases()[rng.randrange(len(bases()))]
            value = CATEGORIES[name].mutate(rng, envelope, raw_of(envelope))
            if len(value) > 2 * MAX_MESSAGE_BYTES:
                continue  # 10 MB strings: one 10 MB message below is enough for the broker
            result = outcome(OfflineWorker(), value)
            if isinstance(result, InvalidSubmission):
                out.append((name, rng.choice(HOSTILE_KEYS), value, result))
                made += 1
    envelope = bases()[len(dki())]
    for size in OVERSIZES:
        frame = fuzz.dumps(fuzz.put(envelope, ("doc", "x_padding"), Raw(b'""')))
        value = fuzz.dumps(fuzz.put(envelope, ("doc", "x_padding"), Raw(b'"' + b"x" * (size - len(frame)) + b'"')))
        assert len(value) == size
        out.append(("oversized", b"3173", value, outcome(OfflineWorker(), value)))
    return out


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.broker
def test_a_worker_dead_letters_every_hostile_message_and_stays_up(workers):
    from kafka import KafkaProducer
    from pantau.stream.app import ensure_topics
    from pantau.stream.ingest import envelope_bytes

    settings = workers.settings("hostile")
    ensure_topics(settings)
    process = workers.start(settings)
    pid = process.pid
    expected = {alert.alert_id: alert for alert in offline_alerts(demo_data())}
    records = list(read_records(demo_data()))
    assert len(records) == 1000 and len(expected) == 172
    hostile = broker_hostile()
    per_category = Counter(name for name, *_ in hostile)
    assert len(hostile) >= 190 and max(len(value) for _, _, value, _ in hostile) >= fuzz.TEN_MB

    # kafka-python's producer takes the 10 MB message with a large enough request limit; the embedded
    # broker (Tansu 0.6, memory storage) enforces no topic max.message.bytes (it stored 120 MB messages).
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap.split(","), acks="all", linger_ms=5,
                             max_request_size=fuzz.TEN_MB + (1 << 20))  # fmt: skip
    letters = TopicReader(settings.bootstrap, settings.topic_deadletter)
    alerts = TopicReader(settings.bootstrap, settings.topic_alerts)
    rng = random.Random(7)
    rss: dict[str, int] = {}

    def send(sequence: list[tuple[str, Any]]) -> None:
        futures = []
        for kind, item in sequence:
            if kind == "valid":
                value = envelope_bytes(item, datetime.now(timezone.utc))
                futures.append(producer.send(settings.topic_submissions, key=item.envelope.kabkota.encode(), value=value))
            else:
                _, key, value, _ = item
                futures.append(producer.send(settings.topic_submissions, key=key, value=value))
        producer.flush()
        for future in futures:
            future.get(timeout=120)  # every message is on the topic

    try:
        # Warm-up: the first half of the real documents, valid only.
        send([("valid", r) for r in records[:500]])
        wait_processed(settings, 500, workers)
        rss["warm-up"] = rss_kb(pid)
        # Burst 1: every hostile message, spread among the second half of the real documents. Burst 2:
        # the same hostile messages again (new offsets), alone: a leak per message would show as growth.
        consumed = 500
        for burst, valid in (("burst 1", records[500:]), ("burst 2", [])):
            sequence: list[tuple[str, Any]] = [("valid", r) for r in valid]
            for item in hostile:
                sequence.insert(rng.randrange(len(sequence) + 1), ("hostile", item))
            send(sequence)
            consumed += len(sequence)
            wait_processed(settings, consumed, workers)
            rss[burst] = rss_kb(pid)
        dead = letters.until(lambda m: len(m) >= 2 * len(hostile), f"{2 * len(hostile)} dead letters", workers)
        published = alerts.until(lambda m: len(m) >= len(expected), f"{len(expected)} alerts", workers)
        status, body = wait_for(lambda: (lambda h: h if h[0] == 200 else None)(health(settings.web_port)), "/health 200", workers)
    finally:
        producer.close()
        letters.close()
        alerts.close()

    # The worker never crashed: the same process, healthy, no agent crash, nothing dead-lettered as "error".
    assert process.poll() is None and process.pid == pid and rss_kb(pid) > 0
    assert status == 200 and body["status"] == "ok" and body["crashed"] == [], body
    assert workers.failure() is None
    samples = metrics_samples(settings.web_port)
    outcomes = {dict(labels)["outcome"]: v for labels, v in by_name(samples, "pantau_submissions_total").items()}
    assert outcomes == {"processed": 1000, "deadlettered": 2 * len(hostile), "redelivered": 0}, outcomes
    by_code = {dict(labels)["reason"]: v for labels, v in by_name(samples, "pantau_deadletters_total").items()}
    assert by_code == {code: 2 * n for code, n in Counter(exc.code for *_, exc in hostile).items()}, by_code

    # Every hostile message is on the dead-letter topic (twice: two bursts) with the offline path's code and
    # reason, its key, and a distinct source offset; one too big for the dead-letter topic keeps its first
    # 64 KiB, its size and its digest.
    assert len(dead) == 2 * len(hostile)
    by_value = {value: (name, key, exc) for name, key, value, exc in hostile}
    by_digest = {hashlib.sha256(value).hexdigest(): value for _, _, value, _ in hostile}
    found: Counter[bytes] = Counter()
    positions = set()
    for message in dead:
        letter = DeadLetter.model_validate_json(message.value)
        original = letter.original_bytes()
        if "[original truncated" in letter.reason:
            value = by_digest[letter.reason.rsplit("sha256 ", 1)[1].rstrip("]")]
            assert original == value[:65536] and f"of {len(value)} bytes" in letter.reason
        else:
            value = original
        assert value in by_value, f"a dead letter of no hostile message: {letter.reason[:200]}"
        name, key, exc = by_value[value]
        assert (len(value) * 4 / 3 > settings.max_message_bytes) == (original != value), (name, len(value))
        assert letter.code == exc.code and letter.reason.startswith(exc.reason), (name, letter.code, letter.reason[:200])
        assert message.key == key and letter.topic == settings.topic_submissions
        found[value] += 1
        positions.add((letter.partition, letter.offset))
    assert found == Counter({value: 2 * n for value, n in Counter(v for _, _, v, _ in hostile).items()})
    assert len(positions) == len(dead)

    # The valid documents gave exactly the offline replay's alerts, each once.
    assert_same_alerts(alert_messages(published), expected)

    print(f"\nhostile messages per burst ({len(hostile)}; 2 bursts), by category and offline rejection code:")
    for name, n in sorted(per_category.items()):
        codes = Counter(exc.code for c, _, _, exc in hostile if c == name)
        print(f"  {name:<17} {n:>3}  " + ", ".join(f"{c} {k}" for c, k in sorted(codes.items())))
    print(f"dead-lettered: {len(dead)} of {2 * len(hostile)} ({100 * len(dead) / (2 * len(hostile)):.0f}%); "
          f"valid processed: {outcomes['processed']:.0f}; alerts: {len(published)} (offline {len(expected)}); "
          f"crashes: 0 (pid {pid} alive, /health {status})")  # fmt: skip
    print("worker RSS: " + ", ".join(f"{kb / 1024:.0f} MB after {when}" for when, kb in rss.items()))
    # Memory. A 10 MB message is fetched whole, base64-encoded into its dead letter (13 MB, and the
    # letter's JSON as much again) before being cut to 64 KiB: some 50 MB transient, which the allocator
    # need not return. So: at most twice the warm RSS plus 100 MB after the first burst, and nothing per
    # message -- the second burst, the same messages again, adds under 50 MB.
    assert rss["burst 1"] < 2 * rss["warm-up"] + 100 * 1024, rss
    assert rss["burst 2"] < rss["burst 1"] + 50 * 1024, rss

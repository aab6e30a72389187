"""Hostile input, offline: mutated Sirekap messages through everything a worker does with one.

    python bench/fuzz_ingest.py [--messages 100000] [--seed 9] [--max-seconds 5]

Each message is a mutation of one of the 1,000 real DKI Jakarta envelopes shipped with pantau, in one
of the :data:`CATEGORIES` below (truncated JSON, wrong types and out-of-range numbers in every field,
deep nesting, huge strings, invalid UTF-8, byte order marks, duplicate keys, malformed TPS codes,
unknown ballot types, charts that do not match the ballot, too many chart or caleg entries, unknown
extra keys, 10 MB messages, random byte edits, and the untouched documents). Every message goes
through :class:`OfflineWorker`, which makes the calls ``Pipeline.process`` in ``stream/app.py`` makes
(``parse_envelope`` on the raw bytes, ``normalize``, ``TpsInspector.inspect`` / ``commit`` with a
:class:`~pantau.detectors.monitor.RegionalMonitor`, ``Alert.to_json``, the changed region sums as the
stream sends them to the assessor, and the table states as its changelog carries them), and must end
as what the stream would publish -- alerts -- or as a dead letter: ``InvalidSubmission`` with a code
of the fixed set and a reason. Anything else (the stream would dead-letter it as ``error``, a detector
bug), a category's expected outcome not met, or a message taking longer than ``--max-seconds`` is a
failure (exit status 1).

It prints, per category: messages, dead-lettered with a reason (and by code), accepted, other
exceptions, the slowest message; then peak RSS and messages per second; then (``--shapes``) the memory
each distinct document shape costs in the detectors' identity cache. ``tests/test_hostile.py``
runs the same mutations under hypothesis, and through a real worker on the embedded broker.

Takes ~1-2 minutes for 100,000 messages on one core (a sixteenth of them are 10 MB).
"""

from __future__ import annotations

import argparse
import gzip
import random
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from pantau import demo_data
from pantau.detectors.assessor import RegionalAssessor
from pantau.detectors.form import Capacity
from pantau.detectors.inspector import TpsInspector
from pantau.detectors.monitor import RegionalMonitor
from pantau.detectors.regional import RegionSums
from pantau.schemas import ADMIN_FIELDS, Alert, InvalidSubmission, normalize, parse_envelope
from pantau.schemas.sirekap import MAX_CALEG, MAX_ENTRIES, MAX_MESSAGE_BYTES

TEN_MB = 10_000_000


# --------------------------------------------------------------------------------------------------
# The worker's path, offline


class ChangelogStore(MutableMapping[str, Any]):
    """A table as its changelog carries it: every state written as ``orjson.dumps`` (as ``BatchStates.flush``
    does) and read back decoded (as a recovering worker does). A state that cannot be encoded fails here."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def __getitem__(self, key: str) -> Any:
        return orjson.loads(self.data[key])

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = orjson.dumps(value)

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class OfflineWorker:
    """What ``Pipeline.process`` (stream/app.py) does with one message, without the broker.

    :meth:`process` returns the alerts the worker would publish, or the :class:`InvalidSubmission` it
    would dead-letter. Any other exception propagates: the stream would dead-letter it as ``error``
    (a detector bug), and every caller here counts it as a failure.
    """

    def __init__(self, capacity: Capacity = Capacity()):
        self.states = ChangelogStore()
        self.region_states = ChangelogStore()
        self.monitor = RegionalMonitor(self.region_states)
        self.inspector = TpsInspector(capacity, states=self.states, monitor=self.monitor)
        self.assessor = RegionalAssessor()
        self.regional: dict[str, bytes] = {}  # what pantau.regional holds last, per region

    def process(self, value: bytes) -> list[Alert] | InvalidSubmission:
        try:
            envelope = parse_envelope(value)
            inspection = self.inspector.inspect(normalize(envelope))
        except InvalidSubmission as exc:
            return exc
        self.inspector.commit(inspection)
        for alert in inspection.alerts:
            alert.to_json()  # the message the stream publishes
        for key in sorted(self.monitor.changed):  # Pipeline._changed_regions, then Assessment.receive
            for region, sums in self.monitor.flush_one(key).items():
                message = orjson.dumps(sums.to_state())
                self.regional[region] = message
                self.assessor.update(region, RegionSums.from_state(orjson.loads(message)))
        return inspection.alerts

    def assess(self) -> list[Alert]:
        """The regional alerts of everything processed so far (the stream assesses on a timer)."""
        alerts = self.assessor.assess()
        for alert in alerts:
            alert.to_json()
        return alerts


class Hang(BaseException):
    """A message took longer than allowed (a BaseException, so that no ``except Exception`` swallows it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread if the block runs longer than ``seconds`` (SIGALRM)."""

    def expired(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------------
# Building messages: raw JSON tokens and duplicate keys inside otherwise ordinary objects


@dataclass(frozen=True)
class Raw:
    """JSON text put into a message verbatim (NaN, 10**30, invalid UTF-8, nesting deeper than orjson writes)."""

    text: bytes


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with these (key, value) pairs, duplicates included."""

    items: tuple[tuple[str, Any], ...]


def dumps(value: Any) -> bytes:
    """JSON of ``value``, where :class:`Raw` and :class:`Pairs` may appear at any depth."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return b"{" + b",".join(orjson.dumps(k) + b":" + dumps(v) for k, v in value.items) + b"}"
    if isinstance(value, dict):
        if not _special(value):
            return orjson.dumps(value)
        return b"{" + b",".join(orjson.dumps(k) + b":" + dumps(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        if not _special(value):
            return orjson.dumps(value)
        return b"[" + b",".join(dumps(v) for v in value) + b"]"
    return orjson.dumps(value)


def _special(value: Any) -> bool:
    if isinstance(value, (Raw, Pairs)):
        return True
    if isinstance(value, dict):
        return any(_special(v) for v in value.values())
    if isinstance(value, list):
        return any(_special(v) for v in value)
    return False


#: Where a value can go: the envelope's fields, the document's, every administrasi count, and (added
#: per document) every chart key, caleg entry and image. Missing parents are created.
FIXED_PATHS: tuple[tuple[str, ...], ...] = (
    ("kode_tps",), ("jenis",), ("doc",), ("received_at",),
    ("doc", "chart"), ("doc", "administrasi"), ("doc", "caleg"), ("doc", "images"), ("doc", "ts"),
    ("doc", "psu"), ("doc", "mode"), ("doc", "status_suara"), ("doc", "status_adm"),
    ("doc", "chart", "null"), ("doc", "chart", "100025"),
    *(("doc", "administrasi", name) for name in ADMIN_FIELDS),
)  # fmt: skip


def paths_of(envelope: dict) -> list[tuple[Any, ...]]:
    paths = list(FIXED_PATHS)
    doc = envelope.get("doc") or {}
    for key in doc.get("chart") or {}:
        paths.append(("doc", "chart", key))
    for i in range(len(doc.get("images") or ())):
        paths.append(("doc", "images", i))
    return paths


def put(envelope: dict, path: tuple[Any, ...], value: Any) -> dict:
    """A copy of ``envelope`` with ``value`` at ``path`` (parents that are missing, null or of another
    type become objects; a list index past the end appends)."""
    out = orjson.loads(orjson.dumps(envelope))
    node = out
    for key in path[:-1]:
        child = node[key] if isinstance(node, list) else node.get(key)
        if not isinstance(child, (dict, list)):
            child = {}
            if isinstance(node, list):
                node[key] = child
            else:
                node[key] = child
        node = child
    last = path[-1]
    if isinstance(node, list):
        if isinstance(last, int) and last < len(node):
            node[last] = value
        else:
            node.append(value)
    else:
        node[last] = value
    return out


# --------------------------------------------------------------------------------------------------
# The mutations

#: Tokens for any field: other JSON types, numbers out of every range, tokens JSON does not have,
#: strings that look like numbers or codes in other scripts.
TOKENS: tuple[bytes, ...] = (
    b'"12"', b'"abc"', b'""', b'1.5', b'12.0', b'-0.0', b'-0', b'1e3', b'1E2', b'true', b'false', b'[]', b'[1,2]',
    b'{}', b'{"a":1}', b'null', b'-1', b'0', b'9999999', b'10000000', b'-9223372036854775808',
    b'9223372036854775807', b'18446744073709551615', b'18446744073709551616', b'1' + b'0' * 30, b'-1' + b'0' * 30,
    b'1' + b'0' * 400, b'NaN', b'-NaN', b'Infinity', b'-Infinity', b'inf', b'1e400', b'-1e400', b'1e-400', b'0x10',
    b'01', b'+1', b'.5', b'"\\u0000"', b'"\\ud800"', b'"\\udfff\\ud800"', b'"\xd9\xa3\xd9\xa1"', b'"\xef\xbc\x91"',
    b'"\xef\xbb\xbf2024-02-15 00:41:44"', b'"3173011005116"', b'"2024-02-14T20:00:00+07:00"', b'"9999-12-31T23:59:59-23:59"',
    b'"0001-01-01T00:00:00+23:59"', b'253402300800', b'-62135596801', b'1707900000', b'"ppwp"', b'"\\n"',
    b'[null]', b'[[[]]]', b'{"null":null}', b'{"jml_suara_total":1}', b'"' + "é".encode() * 50 + b'"',
)  # fmt: skip

#: Malformed TPS codes: wrong length, not digits, other digit systems, unknown province, parts all zeros, other types.
BAD_KODES: tuple[Any, ...] = (
    "", "317301100511", "31730110051160", "3173011005116" * 3, "31730110051a6", " 3173011005116", "3173011005116\n",
    "3173011005116\x00", "3173-01100511", "+173011005116", "-173011005116", "3173011005116 ",
    "３１７３０１１００５１１６", "٣١٧٣٠١١٠٠٥١١٦", "३१७३०११००५११६", "³173011005116", "0073011005116", "2073011005116",
    "9873011005116", "3000011005116", "3100011005116", "3173001005116", "3173010000116", "3173011005000",
    3173011005116, 3.173011005116e12, None, True, ["3173011005116"], {"kode": "3173011005116"},
)  # fmt: skip
BAD_JENIS: tuple[Any, ...] = ("dprd", "PPWP", "ppwp ", " ppwp", "", "pdpr\x00", "pp", "dpd", "pilkada", None, 1, True,
                              ["ppwp"], {"jenis": "ppwp"}, "ｐｐｗｐ")  # fmt: skip
INVALID_UTF8: tuple[bytes, ...] = (b"\xff", b"\xfe", b"\xc0\x80", b"\xc1\xbf", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80",
                                   b"\xf4\x90\x80\x80", b"\x80", b"\xbf", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80")  # fmt: skip
DEPTHS = (2, 28, 29, 30, 31, 64, 253, 254, 255, 256, 500, 999, 1000, 1022, 1023, 1024, 1025, 2000, 100_000)


def nested(depth: int, rng: random.Random) -> bytes:
    """``depth`` levels of lists, objects (``{"a": ...}``) or both, around a 1."""
    kind = rng.choice(("list", "object", "mixed"))
    opens, closes = [], []
    for i in range(depth):
        obj = kind == "object" or (kind == "mixed" and i % 2 == 1)
        opens.append(b'{"a":' if obj else b"[")
        closes.append(b"}" if obj else b"]")
    return b"".join(opens) + b"1" + b"".join(reversed(closes))


def m_valid(rng: random.Random, env: dict, raw: bytes) -> bytes:
    return raw


def m_truncated(rng: random.Random, env: dict, raw: bytes) -> bytes:
    return raw[: rng.randrange(len(raw))]


def m_wrong_type(rng: random.Random, env: dict, raw: bytes) -> bytes:
    return dumps(put(env, rng.choice(paths_of(env)), Raw(rng.choice(TOKENS))))


def m_deep_nesting(rng: random.Random, env: dict, raw: bytes) -> bytes:
    depth = rng.choice(DEPTHS)
    where = rng.choice(paths_of(env) + [("doc", "x_extra"), ("doc", "administrasi", "x_extra")])
    if rng.random() < 0.15:
        return nested(depth, rng)  # the whole message
    return dumps(put(env, where, Raw(nested(depth, rng))))


def m_huge_string(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """A 10 MB string in any field (``too_large``), or a string that brings the message to just under or
    just over the size limit."""
    where = rng.choice(paths_of(env) + [("doc", "x_extra")])
    unit = rng.choice((b"x", "é".encode(), b"\\n", b"9"))
    shape = rng.choice(("10MB", "under", "over"))
    if shape == "10MB":
        return dumps(put(env, where, Raw(b'"' + unit * (TEN_MB // len(unit)) + b'"')))
    frame = dumps(put(env, where, Raw(b'""')))
    target = MAX_MESSAGE_BYTES - rng.randrange(0, 64) if shape == "under" else MAX_MESSAGE_BYTES + 1 + rng.randrange(0, 64)
    room = target - len(frame)
    body = unit * (room // len(unit)) + b"x" * (room % len(unit))
    return dumps(put(env, where, Raw(b'"' + body + b'"')))


def m_oversized(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """A whole 10 MB message: a real document padded with an unknown key (or sheer bytes)."""
    if rng.random() < 0.2:
        return rng.choice((b"x", b"{", b" ")) * TEN_MB
    pad = TEN_MB - len(raw)
    return dumps(put(env, ("doc", "x_padding"), Raw(b'"' + b"x" * pad + b'"')))


def m_invalid_utf8(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """Invalid UTF-8 inserted, or written over bytes, anywhere (most often inside a string)."""
    junk = rng.choice(INVALID_UTF8)
    quotes = [i for i, b in enumerate(raw) if b == 0x22]
    at = rng.choice(quotes) + 1 if quotes and rng.random() < 0.7 else rng.randrange(len(raw) + 1)
    if rng.random() < 0.5:
        return raw[:at] + junk + raw[at:]
    return raw[:at] + junk + raw[at + len(junk) :]


def m_bom(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """Byte order marks before the JSON (UTF-8, or the whole message in UTF-16/32), or between tokens."""
    text = raw.decode()
    return rng.choice((
        b"\xef\xbb\xbf" + raw,
        b"\xef\xbb\xbf\xef\xbb\xbf" + raw,
        text.encode("utf-16"), text.encode("utf-16-le"), text.encode("utf-32"),
        b"\xfe\xff" + raw, b"\xff\xfe" + raw,
        raw[:1] + b"\xef\xbb\xbf" + raw[1:],
        raw + b"\xef\xbb\xbf",
    ))  # fmt: skip


def m_duplicate_keys(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """A key given twice in one object (the envelope, the document, administrasi, or the chart), the
    other value before or after the real one."""
    candidates: list[tuple[Any, ...]] = [()]
    doc = env.get("doc") or {}
    candidates.append(("doc",))
    if isinstance(doc.get("administrasi"), dict):
        candidates.append(("doc", "administrasi"))
    if isinstance(doc.get("chart"), dict) and doc["chart"]:
        candidates.append(("doc", "chart"))
    at = rng.choice(candidates)
    target = env
    for key in at:
        target = target[key]
    items = list(target.items())
    key = rng.choice([k for k, _ in items] + ["kode_tps", "jenis", "suara_sah", "100025"])
    other = Raw(rng.choice(TOKENS))
    index = rng.randrange(len(items) + 1)
    items.insert(index, (key, other))
    if rng.random() < 0.3:
        items.insert(rng.randrange(len(items) + 1), (key, other))  # three times
    replaced = Pairs(tuple(items))
    if not at:
        return dumps(replaced)
    return dumps(put(env, at, replaced))


def m_bad_kode(rng: random.Random, env: dict, raw: bytes) -> bytes:
    if rng.random() < 0.1:
        return dumps({k: v for k, v in env.items() if k != "kode_tps"})  # missing
    return dumps({**env, "kode_tps": rng.choice(BAD_KODES)})


def m_bad_jenis(rng: random.Random, env: dict, raw: bytes) -> bytes:
    if rng.random() < 0.1:
        return dumps({k: v for k, v in env.items() if k != "jenis"})  # missing
    return dumps({**env, "jenis": rng.choice(BAD_JENIS)})


def m_chart_mismatch(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """Charts (and caleg) that do not match the ballot type, or keys no chart has."""
    doc = dict(env["doc"])
    chart = dict(doc.get("chart") or {"null": None})
    jenis = env["jenis"]
    kind = rng.randrange(7)
    if kind == 0:  # a party ballot whose chart holds plain counts
        jenis = rng.choice(("pdpr", "pdprdp", "pdprdk"))
        chart[rng.choice(("100025", "1", "5"))] = rng.randrange(300)
    elif kind == 1:  # a flat ballot whose chart holds a party line
        jenis = rng.choice(("ppwp", "pdpd"))
        chart[rng.choice(("100025", "1"))] = {"jml_suara_total": rng.randrange(300), "jml_suara_partai": 1}
    elif kind == 2:  # caleg on a ballot that has none
        jenis = rng.choice(("ppwp", "pdpd"))
        doc["caleg"] = {"1": {"1001": rng.randrange(300)}}
    elif kind == 3:  # chart keys that are no candidate or party id
        chart[rng.choice(("abc", "1.5", "-1", "１", "", " 1", "1" * 13, "null ", "NULL", "100025\x00", "0x1f"))] = 1
    elif kind == 4:  # the "null" key holding a value
        chart["null"] = rng.choice((0, 5, {"jml_suara_total": 1}, "x", [None]))
    elif kind == 5:  # caleg keys that are no ids
        jenis = rng.choice(("pdpr", "pdprdp", "pdprdk"))
        chart = {"1": {"jml_suara_total": 5, "jml_suara_partai": 5}}
        doc["caleg"] = rng.choice(({"x": {"1": 1}}, {"1": {"y": 1}}, {"1": {"1": -1}}, {"1": [1]}, {"1": {"1": 1.0}}))
    else:  # a party line with a count no form has
        jenis = rng.choice(("pdpr", "pdprdp", "pdprdk"))
        chart = {"1": {"jml_suara_total": rng.choice((-1, 10**7, 1.5, "5", True)), "jml_suara_partai": 0}}
    doc["chart"] = chart
    return dumps({**env, "jenis": jenis, "doc": doc})


def m_too_many_entries(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """Charts and caleg with more entries than any form (still under the size limit)."""
    doc = dict(env["doc"])
    kind = rng.randrange(4)
    n = rng.choice((MAX_ENTRIES + 1, 1000, 3000, 20_000, 60_000))
    if kind == 0:
        doc["chart"] = {"null": None, **{str(100000 + i): rng.randrange(3) for i in range(n)}}
        return dumps({**env, "jenis": rng.choice(("ppwp", "pdpd")), "doc": doc})
    if kind == 1:
        n = min(n, 20_000)
        doc["chart"] = {str(i): {"jml_suara_total": 1, "jml_suara_partai": 1} for i in range(n)}
        return dumps({**env, "jenis": rng.choice(("pdpr", "pdprdp", "pdprdk")), "doc": doc})
    if kind == 2:  # one party with too many candidates
        doc["chart"] = {"1": {"jml_suara_total": 1, "jml_suara_partai": 1}}
        doc["caleg"] = {"1": {str(1000 + i): 0 for i in range(n)}}
    else:  # parties within bounds, too many candidates in all
        parties = MAX_CALEG // MAX_ENTRIES + 1
        doc["chart"] = {str(p): {"jml_suara_total": 0, "jml_suara_partai": 0} for p in range(parties)}
        doc["caleg"] = {str(p): {str(1000 + i): 0 for i in range(MAX_ENTRIES)} for p in range(parties)}
    return dumps({**env, "jenis": rng.choice(("pdpr", "pdprdp", "pdprdk")), "doc": doc})


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 2**63 - 1, -(2**63), rng.randrange(10**6)))
    if kind == 3:
        return rng.choice((0.5, -1e308, 1e-300))
    if kind == 4:
        return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000))))
                       for _ in range(rng.randrange(12)))  # fmt: skip
    if kind in (5, 6):
        return {f"k{rng.randrange(100)}": random_json(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def extra_key(rng: random.Random) -> str:
    return rng.choice(("x_", "X-", "zz", "_", "Chart", "ADMINISTRASI", "suara sah", "kode_tps", "jenis", "null", "\u00e9t\u00e9", "\U0001f5f3")) \
        + str(rng.randrange(1000))  # fmt: skip


def add_extras(rng: random.Random, env: dict) -> tuple[dict, list[tuple[tuple[str, ...], Any]]]:
    """The envelope with unknown keys added to its document (and administrasi, when it has one):
    accepted and kept verbatim; returns the (path, value) of each."""
    out = orjson.loads(orjson.dumps(env))
    added: dict[tuple[str, ...], Any] = {}  # a key drawn twice keeps its last value
    targets = [("doc",)] + ([("doc", "administrasi")] if isinstance(out["doc"].get("administrasi"), dict) else [])
    for _ in range(rng.randrange(1, 6)):
        where = rng.choice(targets)
        key = extra_key(rng)
        value = random_json(rng)
        node = out
        for k in where:
            node = node[k]
        node[key] = value
        added[where + (key,)] = value
    return out, list(added.items())


def m_extra_keys(rng: random.Random, env: dict, raw: bytes) -> bytes:
    return dumps(add_extras(rng, env)[0])


def m_envelope_extra(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """Unknown keys on the envelope itself, which has a fixed shape."""
    return dumps({**env, extra_key(rng): random_json(rng)})


def m_byte_edits(rng: random.Random, env: dict, raw: bytes) -> bytes:
    """Classic mutation fuzzing: a few random byte flips, deletions, insertions and repeated slices."""
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 9)):
        op = rng.randrange(5)
        at = rng.randrange(len(data) + 1) if data else 0
        if op == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1 and data:
            del data[at : at + rng.randrange(1, 8)]
        elif op == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif op == 3 and data:
            data[at:at] = data[at : at + rng.randrange(1, 64)]
        elif data:  # swap a digit for another (the values and codes that still parse)
            digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
            if digits:
                data[rng.choice(digits)] = rng.randrange(0x30, 0x3A)
    return bytes(data)


@dataclass(frozen=True)
class Category:
    mutate: Callable[[random.Random, dict, bytes], bytes]
    #: Outcomes the category must end in: ``accepted``, or a rejection code. None: anything but a crash.
    expect: frozenset[str] | None
    doc: str


CATEGORIES: dict[str, Category] = {
    "valid": Category(m_valid, frozenset({"accepted"}), "the shipped document, untouched"),
    "truncated": Category(m_truncated, frozenset({"not_json"}), "cut at a random byte"),
    "wrong_type": Category(m_wrong_type, None, "another JSON type, an out-of-range or non-JSON number in any field"),
    "deep_nesting": Category(m_deep_nesting, None, "lists/objects nested 2-100,000 deep, in a field or as the message"),
    "huge_string": Category(m_huge_string, None, "10 MB string in a field, or the message just under/over 1 MiB"),
    "oversized": Category(m_oversized, frozenset({"too_large"}), "a 10 MB message"),
    "invalid_utf8": Category(m_invalid_utf8, frozenset({"not_json"}), "invalid UTF-8 bytes"),
    "bom": Category(m_bom, frozenset({"not_json"}), "byte order marks, UTF-16/32"),
    "duplicate_keys": Category(m_duplicate_keys, None, "a key twice (or thrice) in one object"),
    "bad_kode": Category(m_bad_kode, frozenset({"kode_tps"}), "malformed TPS codes"),
    "bad_jenis": Category(m_bad_jenis, frozenset({"schema"}), "unknown ballot types"),
    "chart_mismatch": Category(m_chart_mismatch, frozenset({"schema"}), "chart/caleg that do not fit the ballot"),
    "too_many_entries": Category(m_too_many_entries, frozenset({"schema"}), "more chart/caleg entries than a form"),
    "extra_keys": Category(m_extra_keys, frozenset({"accepted"}), "unknown keys in the document (kept)"),
    "envelope_extra": Category(m_envelope_extra, frozenset({"schema"}), "unknown keys on the envelope"),
    "byte_edits": Category(m_byte_edits, None, "random byte flips, deletions, insertions"),
}


def load_envelopes() -> list[dict]:
    with gzip.open(demo_data(), "rb") as lines:
        return [orjson.loads(line) for line in lines if line.strip()]


def outcome_of(result: list[Alert] | InvalidSubmission) -> str:
    return result.code if isinstance(result, InvalidSubmission) else "accepted"


def check_reencodable(value: bytes) -> None:
    """An accepted message can be written again by every consumer: the desk (``desk/cases.py``: the
    document's ``model_dump``, then ``orjson.dumps``) and ``pantau replay --broker`` (``stream/ingest.py``:
    ``orjson.loads`` then ``orjson.dumps``) -- so the worker accepts nothing they would choke on."""
    envelope = parse_envelope(value)
    orjson.dumps(envelope.doc.model_dump(mode="json", by_alias=True, exclude_unset=True), option=orjson.OPT_SORT_KEYS)
    orjson.dumps(orjson.loads(value))


def check_rejection(exc: InvalidSubmission) -> None:
    """A dead letter as the stream writes it: a code of the fixed set and a reason that says something."""
    assert exc.code in InvalidSubmission.CODES, exc.code
    assert isinstance(exc.reason, str) and exc.reason.strip(), repr(exc.reason)
    assert len(exc.reason) < 4096, len(exc.reason)  # a reason, not the message


# --------------------------------------------------------------------------------------------------
# The long run


@dataclass
class Counts:
    total: int = 0
    deadlettered: int = 0
    accepted: int = 0
    other: int = 0
    unexpected: int = 0
    codes: Counter = field(default_factory=Counter)
    slowest: float = 0.0
    examples: list[str] = field(default_factory=list)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(messages: int, seed: int, max_seconds: float, say: Callable[[str], None] = print) -> dict[str, Counts]:
    rng = random.Random(seed)
    envelopes = load_envelopes()
    raws = [orjson.dumps(e) for e in envelopes]
    worker = OfflineWorker()
    names = list(CATEGORIES)
    tallies = {name: Counts() for name in names}
    started = time.perf_counter()
    processing = 0.0
    rss_start = rss_mb()
    for n in range(messages):
        name = names[n % len(names)]
        category = CATEGORIES[name]
        i = rng.randrange(len(envelopes))
        value = category.mutate(rng, envelopes[i], raws[i])
        tally = tallies[name]
        tally.total += 1
        t0 = time.perf_counter()
        try:
            with time_limit(max_seconds):
                result = worker.process(value)
            outcome = outcome_of(result)
            if isinstance(result, InvalidSubmission):
                check_rejection(result)
            else:
                check_reencodable(value)
        except Hang as exc:
            outcome = "hang"
            tally.other += 1
            tally.examples.append(f"HANG {exc}: {value[:120]!r}")
        except Exception as exc:  # noqa: BLE001 - the finding this run exists for
            outcome = "error"
            tally.other += 1
            if len(tally.examples) < 5:
                tally.examples.append(f"{type(exc).__name__}: {exc} <- {value[:160]!r}")
        took = time.perf_counter() - t0
        processing += took
        tally.slowest = max(tally.slowest, took)
        tally.codes[outcome] += 1
        if outcome == "accepted":
            tally.accepted += 1
        elif outcome in InvalidSubmission.CODES:
            tally.deadlettered += 1
        if category.expect is not None and outcome not in category.expect and outcome not in ("error", "hang"):
            tally.unexpected += 1
            if len(tally.examples) < 5:
                tally.examples.append(f"expected {sorted(category.expect)}, got {outcome}: {value[:160]!r}")
        del value
        if (n + 1) % 10_000 == 0:
            say(f"  {n + 1:,} messages, {(n + 1) / (time.perf_counter() - started):,.0f} msg/s, RSS {rss_mb():.0f} MB")
    seconds = time.perf_counter() - started
    regional = worker.assess()
    say("")
    say(f"{'category':<17} {'total':>7} {'dead-lettered':>13} {'accepted':>8} {'other exc.':>10} {'unexpected':>10} {'slowest':>8}  codes")
    for name in names:
        t = tallies[name]
        codes = ", ".join(f"{c} {k}" for c, k in sorted(t.codes.items(), key=lambda kv: -kv[1]))
        say(f"{name:<17} {t.total:>7,} {t.deadlettered:>13,} {t.accepted:>8,} {t.other:>10} {t.unexpected:>10} {t.slowest * 1000:>6.0f}ms  {codes}")
    total = sum(t.total for t in tallies.values())
    say(f"{'all':<17} {total:>7,} {sum(t.deadlettered for t in tallies.values()):>13,} "
        f"{sum(t.accepted for t in tallies.values()):>8,} {sum(t.other for t in tallies.values()):>10} "
        f"{sum(t.unexpected for t in tallies.values()):>10}")  # fmt: skip
    say("")
    say(f"{total:,} messages in {seconds:.1f} s: {total / seconds:,.0f} msg/s with their mutation, "
        f"{total / processing:,.0f} msg/s in the worker's path alone (seed {seed}); "
        f"RSS {rss_start:.0f} MB at start, {rss_mb():.0f} MB at the end, peak {peak_rss_mb():.0f} MB; "
        f"{len(worker.states)} revision states, {len(worker.region_states)} region states, "
        f"{len(regional)} regional alerts at the end")  # fmt: skip
    for name in names:
        for example in tallies[name].examples:
            say(f"  {name}: {example}")
    return tallies


def shapes(count: int, say: Callable[[str], None] = print) -> float:
    """Memory per distinct document shape: ``count`` valid party ballots of the largest size the schema
    accepts, each with other caleg ids (a shape each). ``detectors.form.identity_set`` compiles and caches
    the identities of every shape, bounded by the paths it holds (``ShapeCache.max_paths``). Returns the
    MB per shape."""
    import gc
    import tracemalloc

    from pantau.detectors import form

    parties, candidates = MAX_CALEG // MAX_ENTRIES, MAX_ENTRIES
    worker = OfflineWorker()
    form.identity_set.clear()
    tracemalloc.start()
    before, started = rss_mb(), time.perf_counter()
    for n in range(count):
        chart = {str(p): {"jml_suara_total": 0, "jml_suara_partai": 0} for p in range(1, parties + 1)}
        caleg = {str(p): {str(10**6 * (n + 1) + 1000 * p + c): 0 for c in range(candidates)} for p in range(1, parties + 1)}
        envelope = {"kode_tps": f"3171011{n % 9000 + 1000:04d}01", "jenis": "pdpr", "doc": {"chart": chart, "caleg": caleg}}
        result = worker.process(orjson.dumps(envelope))
        assert not isinstance(result, InvalidSubmission), result
    seconds = time.perf_counter() - started
    grown = rss_mb() - before
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    kept, max_paths = len(form.identity_set), form.identity_set.max_paths
    form.identity_set.clear()
    gc.collect()
    per_shape = (held - tracemalloc.get_traced_memory()[0]) / kept / 2**20  # what the identity cache held
    tracemalloc.stop()
    say(f"{count} distinct largest shapes ({parties} parties x {candidates} caleg): RSS +{grown:.0f} MB "
        f"({seconds / count * 1000:.1f} ms each, traced); the identity cache kept {kept} of them, "
        f"{per_shape * 1024:.0f} KB per shape, bounded at {max_paths:,} paths: ~{per_shape * max_paths / (MAX_CALEG + 2 * MAX_ENTRIES) / 1024:.2f} GB")  # fmt: skip
    return per_shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--max-seconds", type=float, default=5.0, help="longest a message may take (a hang)")
    parser.add_argument("--shapes", type=int, default=300, help="distinct largest document shapes to measure (0: none)")
    args = parser.parse_args(argv)
    tallies = run(args.messages, args.seed, args.max_seconds)
    if args.shapes:
        print("")
        shapes(args.shapes)
    bad = sum(t.other + t.unexpected for t in tallies.values())
    print("OK: every message ended as alerts or a dead letter with its reason" if not bad else f"FAILED: {bad} messages")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

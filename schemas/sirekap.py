"""The Sirekap TPS document exactly as KPU serves it, and the envelope pantau carries it in.

Sirekap publishes one JSON document per TPS (polling station) per ballot type at
``.../hhcw/{jenis}/{PP}/{PPKK}/{PPKKCC}/{PPKKCCDDDD}/{kode_tps}.json``. The TPS code and the ballot
type are in the URL, not in the document, so pantau wraps each document in an :class:`Envelope`.

The models accept every real quirk of the published data: ``chart`` always carries a ``"null": null``
key; every number may be null; the chart half and the administrasi half fill in independently (a
document may have either, both or neither); ``mode`` appears from 16 Feb 2024; ``psu`` marks re-votes.
Unknown extra keys are kept (the document is verbatim). What they refuse, with a reason, is what no
real form can say: negative or fractional counts, text where a count belongs, counts beyond any
form's boxes, malformed TPS codes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidSubmission

JENIS: tuple[str, ...] = ("ppwp", "pdpr", "pdpd", "pdprdp", "pdprdk")
Jenis = Literal["ppwp", "pdpr", "pdpd", "pdprdp", "pdprdk"]
#: Ballot types whose chart is per party ({jml_suara_total, jml_suara_partai}) with a ``caleg`` breakdown.
PARTY_BALLOTS = frozenset({"pdpr", "pdprdp", "pdprdk"})

#: A C.Hasil box holds 3–4 digits; OCR can inflate a count by a digit or two (880 for 80), and such a
#: count must reach the detectors to be flagged. Seven digits and more cannot come from a form at all.
MAX_COUNT = 9_999_999
#: Largest accepted message; a real document is ~1 KB (a pdpr one with caleg a few KB).
MAX_MESSAGE_BYTES = 1 << 20
#: Most entries in one chart, caleg, or caleg party. 2024's largest forms: 24 parties (18 national, 6 Aceh),
#: at most 12 candidates per party and dapil, ~54 DPD candidates in one province. Bounds the detectors'
#: work: each document shape's identities are compiled (a sum of thousands of terms exceeds Python's
#: recursion limit in the compiler) and cached, and the misread search is quadratic in the form's size.
MAX_ENTRIES = 100
#: Most caleg counts in one document (24 parties × 12 candidates = 288 in 2024).
MAX_CALEG = 1000
#: Deepest nesting of a message (the envelope object is level 1; a real one has 4: envelope, doc, caleg,
#: party). Only unknown keys, kept verbatim, can nest deeper; consumers re-encode the document (the desk,
#: ``pantau replay --broker``), and orjson writes at most 254 levels, pydantic's serializer about as many.
MAX_DEPTH = 32

Count = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNT)]

#: Province codes of the 2024 TPS registry (38 provinces and 99 = overseas).
PROVINCES = frozenset(
    "11 12 13 14 15 16 17 18 19 21 31 32 33 34 35 36 51 52 53 61 62 63 64 65 "
    "71 72 73 74 75 76 81 82 91 92 93 94 95 96 99".split()
)

ADMIN_FIELDS: tuple[str, ...] = (
    "pemilih_dpt_j", "pemilih_dpt_l", "pemilih_dpt_p",
    "pengguna_dpt_j", "pengguna_dpt_l", "pengguna_dpt_p",
    "pengguna_dptb_j", "pengguna_dptb_l", "pengguna_dptb_p",
    "pengguna_non_dpt_j", "pengguna_non_dpt_l", "pengguna_non_dpt_p",
    "pengguna_total_j", "pengguna_total_l", "pengguna_total_p",
    "suara_sah", "suara_tidak_sah", "suara_total",
)  # fmt: skip


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether decoded JSON nests more than ``limit`` levels (iteratively: no recursion limit to hit)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: a reason quotes what it refuses, not a megabyte of it."""
    try:
        text = repr(value)
    except RecursionError:  # nested deeper than repr can walk (orjson parses up to 1024 levels)
        return f"<{type(value).__name__} nested too deep to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_kode_tps(kode: str) -> str:
    """Check a 13-digit TPS code ``PP KK CC DDDD TTT`` and return it.

    >>> validate_kode_tps("3173011005116")
    '3173011005116'
    >>> validate_kode_tps("0073011005116")
    Traceback (most recent call last):
    ...
    ValueError: kode_tps '0073011005116': unknown province code '00'
    """
    if not isinstance(kode, str) or len(kode) != 13 or not kode.isascii() or not kode.isdigit():
        raise ValueError(f"kode_tps {_shown(kode)}: must be exactly 13 digits")
    if kode[:2] not in PROVINCES:
        raise ValueError(f"kode_tps {kode!r}: unknown province code {kode[:2]!r}")
    for name, part in (("kabupaten/kota", kode[2:4]), ("kecamatan", kode[4:6]),
                       ("kelurahan/desa", kode[6:10]), ("TPS number", kode[10:])):  # fmt: skip
        if part.strip("0") == "":
            raise ValueError(f"kode_tps {kode!r}: {name} part is all zeros")
    return kode


#: Checked by :func:`validate_kode_tps` (for its readable reasons); the pattern is for JSON Schema users.
KodeTPS = Annotated[str, StringConstraints(strict=True), Field(json_schema_extra={"pattern": "^[0-9]{13}$"})]


class PartyVotes(BaseModel):
    """One party's line on a party-list ballot (pdpr, pdprdp, pdprdk)."""

    model_config = ConfigDict(extra="allow")

    jml_suara_total: Count | None = None
    jml_suara_partai: Count | None = None


class Administrasi(BaseModel):
    """The administrative half of the C.Hasil form; every field may be null while it is being digitised.

    Suffixes: ``_j`` total, ``_l`` male, ``_p`` female. ``pemilih_dpt`` are registered voters;
    ``pengguna_{dpt,dptb,non_dpt,total}`` voters who voted from each list; ``suara_*`` ballots.
    """

    model_config = ConfigDict(extra="allow")

    pemilih_dpt_j: Count | None = None
    pemilih_dpt_l: Count | None = None
    pemilih_dpt_p: Count | None = None
    pengguna_dpt_j: Count | None = None
    pengguna_dpt_l: Count | None = None
    pengguna_dpt_p: Count | None = None
    pengguna_dptb_j: Count | None = None
    pengguna_dptb_l: Count | None = None
    pengguna_dptb_p: Count | None = None
    pengguna_non_dpt_j: Count | None = None
    pengguna_non_dpt_l: Count | None = None
    pengguna_non_dpt_p: Count | None = None
    pengguna_total_j: Count | None = None
    pengguna_total_l: Count | None = None
    pengguna_total_p: Count | None = None
    suara_sah: Count | None = None
    suara_tidak_sah: Count | None = None
    suara_total: Count | None = None


def _chart_value_kind(value: Any) -> str:
    return "party" if isinstance(value, (dict, PartyVotes)) else "count"


#: A chart entry: a count (ppwp, pdpd) or a party's line (party ballots); which one the envelope checks.
ChartValue = Annotated[
    Annotated[Count, Tag("count")] | Annotated[PartyVotes, Tag("party")], Discriminator(_chart_value_kind)
]
_UNION_TAGS = frozenset({"count", "party"})


def _check_ids(ids: Any, what: str) -> None:
    if len(ids) > MAX_ENTRIES:
        raise ValueError(f"{what} has {len(ids)} entries, more than any form's {MAX_ENTRIES}")
    for key in ids:
        if key != "null" and not (key.isascii() and key.isdigit() and len(key) <= 12):
            raise ValueError(f"{what} key {_shown(key)} is not a numeric id")


class SirekapDocument(BaseModel):
    """One Sirekap TPS document, verbatim (unknown keys are kept)."""

    model_config = ConfigDict(extra="allow")

    chart: dict[str, ChartValue | None] | None = None
    caleg: dict[str, dict[str, Count | None] | None] | None = None
    administrasi: Administrasi | None = None
    images: list[str | None] | None = None
    ts: str | None = None
    psu: str | None = None
    mode: str | None = None
    status_suara: bool | None = None
    status_adm: bool | None = None

    @field_validator("chart")
    @classmethod
    def _chart_keys(cls, chart: dict[str, Any] | None) -> dict[str, Any] | None:
        if chart is not None:
            _check_ids(chart, "chart")
            if chart.get("null") is not None:
                raise ValueError("chart key 'null' must hold null")
        return chart

    @field_validator("caleg")
    @classmethod
    def _caleg_keys(cls, caleg: dict[str, Any] | None) -> dict[str, Any] | None:
        if caleg is not None:
            _check_ids(caleg, "caleg party")
            for votes in caleg.values():
                if votes is not None:
                    _check_ids(votes, "caleg")
            total = sum(len(votes) for votes in caleg.values() if votes is not None)
            if total > MAX_CALEG:
                raise ValueError(f"caleg has {total} counts, more than any form's {MAX_CALEG}")
        return caleg


class Envelope(BaseModel):
    """A submission on ``sirekap.submissions``: the document with the identity its URL carried.

    ``received_at`` is when pantau's ingest received it (absent in archives).
    """

    model_config = ConfigDict(extra="forbid")

    kode_tps: KodeTPS
    jenis: Jenis
    doc: SirekapDocument
    received_at: datetime | None = None

    @field_validator("kode_tps")
    @classmethod
    def _kode(cls, kode: str) -> str:
        return validate_kode_tps(kode)

    @model_validator(mode="after")
    def _chart_matches_ballot(self) -> Envelope:
        chart = self.doc.chart
        if chart:
            party = self.jenis in PARTY_BALLOTS
            for key, value in chart.items():
                if value is None:
                    continue
                if party and not isinstance(value, PartyVotes):
                    raise ValueError(f"{self.jenis} chart.{key} must be an object of party votes")
                if not party and not isinstance(value, int):
                    raise ValueError(f"{self.jenis} chart.{key} must be a count")
        if self.doc.caleg and self.jenis not in PARTY_BALLOTS:
            raise ValueError(f"{self.jenis} documents carry no caleg")
        holders: list[tuple[str, BaseModel, int]] = [("doc", self.doc, 2)]  # (where, model, its level)
        if self.doc.administrasi is not None:
            holders.append(("doc.administrasi", self.doc.administrasi, 3))
        holders += [(f"doc.chart.{key}", value, 4) for key, value in (chart or {}).items() if isinstance(value, PartyVotes)]
        for where, model, level in holders:
            for name, value in (model.model_extra or {}).items():
                if isinstance(value, (dict, list)) and _nested_deeper(value, MAX_DEPTH - level):
                    raise ValueError(f"{where}.{name} is nested more than {MAX_DEPTH} levels deep")
        return self

    @property
    def kabkota(self) -> str:
        """The 4-digit kabupaten/kota code: the submissions topic key."""
        return self.kode_tps[:4]


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        loc = item["loc"]
        where = ".".join(str(p) for i, p in enumerate(loc) if not (i == 3 and loc[1] == "chart" and p in _UNION_TAGS))
        where = where or "message"
        parts.append(f"{where}: {item['msg']} (got {_shown(item.get('input'))})")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_envelope(data: bytes | str | dict[str, Any]) -> Envelope:
    """Validate one submission (raw JSON or an already decoded object).

    Raises :class:`InvalidSubmission` with a readable reason; never anything else for bad input.

    >>> parse_envelope(b'{"kode_tps": "3173011005116", "jenis": "ppwp", "doc": {"chart": null}}').kabkota
    '3173'
    >>> parse_envelope(b'{"kode_tps": "3173011005116", "jenis": "ppwp", "doc": {"chart": {"100025": -1}}}')
    Traceback (most recent call last):
    ...
    pantau.schemas.errors.InvalidSubmission: schema: doc.chart.100025: Input should be greater than or equal to 0 (got -1)
    """
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)  # orjson refuses lone surrogates
        if size > MAX_MESSAGE_BYTES:
            raise InvalidSubmission("too_large", f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidSubmission("not_json", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidSubmission("schema", f"expected a JSON object, got {type(data).__name__}")
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        code = "kode_tps" if any(e["loc"][:1] == ("kode_tps",) for e in exc.errors()) else "schema"
        raise InvalidSubmission(code, _describe(exc)) from None

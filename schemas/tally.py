"""The normalized tally: one TPS, one ballot type, numbers by document path.

Detectors read counts by the *document path* a person would point at on the form (``chart.100027``,
``administrasi.suara_sah``, ``chart.5.jml_suara_partai``, ``caleg.5.1234``); the same paths name the
fields of OCR suggestions and revision diffs. A count that is null in the document is absent here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from .sirekap import ADMIN_FIELDS, PARTY_BALLOTS, Envelope, Jenis, PartyVotes


@dataclass(frozen=True, slots=True)
class Region:
    """The administrative codes a TPS code carries, from province down to kelurahan/desa."""

    provinsi: str
    kabkota: str
    kecamatan: str
    kelurahan: str

    @classmethod
    def of(cls, kode_tps: str) -> Region:
        return _region_of_kelurahan(kode_tps[:10])

    @property
    def overseas(self) -> bool:
        """Province 99: overseas TPS/POS/KSK units, legitimately larger than domestic TPS."""
        return self.provinsi == "99"


@dataclass(slots=True)
class Tally:
    """What one submission says, flattened for the detectors.

    ``counts`` maps document paths to non-null counts. ``declared`` lists, in document order, every
    chart and caleg path the document declares, null or not (an identity over them is judged only when
    all are counted). ``chart_present``/``admin_present`` say which half of the form has been digitised
    (a half may be present with some of its numbers still null).

    A plain dataclass, not a pydantic model: it is built from an already validated envelope, once
    per submission on the hot path (not frozen, for the same reason: frozen ``__init__`` is several
    times slower; treat it as read-only and derive variants with ``dataclasses.replace``). Its JSON
    Schema comes from ``pydantic.TypeAdapter(Tally)``.
    """

    kode_tps: str
    jenis: Jenis
    region: Region
    counts: dict[str, int]
    declared: tuple[str, ...]
    chart_present: bool
    admin_present: bool
    images: tuple[str, ...]
    ts: str | None
    psu: str | None
    received_at: datetime | None

    @property
    def party_ballot(self) -> bool:
        return self.jenis in PARTY_BALLOTS


ADMIN_PATHS = {name: f"administrasi.{name}" for name in ADMIN_FIELDS}


@lru_cache(maxsize=1 << 12)
def _path(half: str, key: str) -> str:
    return f"{half}.{key}"


@lru_cache(maxsize=1 << 16)
def _region_of_kelurahan(kelurahan: str) -> Region:
    return Region(kelurahan[:2], kelurahan[:4], kelurahan[:6], kelurahan)


def normalize(envelope: Envelope) -> Tally:
    """Flatten a validated envelope into a :class:`Tally` (no further validation needed)."""
    doc = envelope.doc
    counts: dict[str, int] = {}
    declared: list[str] = []
    if doc.chart is not None:
        if envelope.jenis in PARTY_BALLOTS:
            for key, value in doc.chart.items():
                if key != "null":
                    votes = value if isinstance(value, PartyVotes) else PartyVotes()
                    for part in ("jml_suara_total", "jml_suara_partai"):
                        path = f"chart.{key}.{part}"
                        declared.append(path)
                        if getattr(votes, part) is not None:
                            counts[path] = getattr(votes, part)
        else:
            for key, value in doc.chart.items():
                if key != "null":
                    path = _path("chart", key)
                    declared.append(path)
                    if value is not None:
                        counts[path] = value
    if doc.caleg is not None:
        for key, votes in doc.caleg.items():
            for caleg_id, value in (votes or {}).items():
                path = f"caleg.{key}.{caleg_id}"
                declared.append(path)
                if value is not None:
                    counts[path] = value
    admin = doc.administrasi
    if admin is not None:
        for name, value in admin.__dict__.items():  # declared fields only; extras live elsewhere
            if value is not None:
                counts[ADMIN_PATHS[name]] = value
    return Tally(
        kode_tps=envelope.kode_tps,
        jenis=envelope.jenis,
        region=Region.of(envelope.kode_tps),
        counts=counts,
        declared=tuple(declared),
        chart_present=doc.chart is not None,
        admin_present=admin is not None,
        images=tuple(url for url in doc.images or () if url),
        ts=doc.ts,
        psu=doc.psu,
        received_at=envelope.received_at,
    )

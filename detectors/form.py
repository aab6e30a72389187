"""Form identities: the arithmetic every correct C.Hasil form satisfies.

Each identity compares two sums of document fields, as equality or as "at most". It is judged only
when every field it names is present: partial documents (one half digitised, numbers still null) are
normal on election night and are not errors.

Detector names (fixed; downstream tools depend on them):

==============================  ==================================================================
``form.sum_valid``              Σ chart = suara_sah (party ballots: Σ jml_suara_total)
``form.sum_total``              suara_sah + suara_tidak_sah = suara_total
``form.voters_total``           pengguna_dpt + pengguna_dptb + pengguna_non_dpt = pengguna_total (j, l, p)
``form.gender_split``           j = l + p in each voter group
``form.ballots_exceed_voters``  suara_total ≤ pengguna_total_j
``form.turnout_exceeds_register``  pengguna_dpt ≤ pemilih_dpt (j, l, p)
``form.party_total``            party ballots: jml_suara_total = jml_suara_partai + Σ caleg of the party
``form.capacity``               no count beyond what a TPS can hold (see :class:`Capacity`)
==============================  ==================================================================
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Callable

from pantau.schemas import Alert, Tally

from .alerts import tps_alert

A = "administrasi."
GROUPS = ("pemilih_dpt", "pengguna_dpt", "pengguna_dptb", "pengguna_non_dpt", "pengguna_total")
SUFFIXES = ("j", "l", "p")


@dataclass(frozen=True, slots=True)
class Identity:
    """``Σ lhs == Σ rhs`` (``equal``) or ``Σ lhs <= Σ rhs``, over document paths."""

    detector: str
    label: str
    lhs: tuple[str, ...]
    rhs: tuple[str, ...]
    equal: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        return self.lhs + self.rhs

    def holds_for(self, lhs_total: int, rhs_total: int) -> bool:
        return lhs_total == rhs_total if self.equal else lhs_total <= rhs_total


@dataclass(frozen=True, slots=True)
class Failure:
    """An identity that does not hold, with the numbers that break it."""

    identity: Identity
    values: dict[str, int]
    lhs_total: int
    rhs_total: int

    @property
    def difference(self) -> int:
        return self.lhs_total - self.rhs_total

    def evidence(self) -> dict[str, object]:
        return {
            "identity": self.identity.label,
            "values": self.values,
            "lhs_total": self.lhs_total,
            "rhs_total": self.rhs_total,
            "difference": self.difference,
        }


@dataclass(frozen=True, slots=True)
class Capacity:
    """The largest count a polling unit can report.

    A domestic TPS serves at most 300 registered voters (PKPU 7/2022); with DPTb/DPK voters and the
    2% ballot reserve no honest count reaches 500. Overseas units (province 99: POS and KSK, i.e.
    mail and mobile ballot boxes) legitimately serve thousands.
    """

    domestic: int = 500
    overseas: int = 10_000

    def limit(self, tally: Tally) -> int:
        return self.overseas if tally.region.overseas else self.domestic


ADMIN_IDENTITIES: tuple[Identity, ...] = (
    Identity("form.sum_total", "suara_sah + suara_tidak_sah = suara_total",
             (A + "suara_sah", A + "suara_tidak_sah"), (A + "suara_total",)),
    *(Identity("form.voters_total",
               f"pengguna_dpt_{s} + pengguna_dptb_{s} + pengguna_non_dpt_{s} = pengguna_total_{s}",
               (A + f"pengguna_dpt_{s}", A + f"pengguna_dptb_{s}", A + f"pengguna_non_dpt_{s}"),
               (A + f"pengguna_total_{s}",)) for s in SUFFIXES),
    *(Identity("form.gender_split", f"{g}_j = {g}_l + {g}_p",
               (A + f"{g}_j",), (A + f"{g}_l", A + f"{g}_p")) for g in GROUPS),
    Identity("form.ballots_exceed_voters", "suara_total ≤ pengguna_total_j",
             (A + "suara_total",), (A + "pengguna_total_j",), equal=False),
    *(Identity("form.turnout_exceeds_register", f"pengguna_dpt_{s} ≤ pemilih_dpt_{s}",
               (A + f"pengguna_dpt_{s}",), (A + f"pemilih_dpt_{s}",), equal=False) for s in SUFFIXES),
)  # fmt: skip


Evaluator = Callable[[Callable[[str], "int | None"]], list[tuple[int, int, int]]]


def compile_identities(identities: tuple[Identity, ...]) -> Evaluator:
    """Compile the identities into one function: ``evaluate(counts.get)`` returns
    ``(index, lhs_total, rhs_total)`` for every identity whose fields are all present.

    Checking every submission is pantau's hottest loop; straight-line code with each field read once
    is about four times faster than interpreting the identities one by one.
    """
    fields = sorted({f for identity in identities for f in identity.fields})
    name = {f: f"v{i}" for i, f in enumerate(fields)}
    lines = ["def evaluate(get):", "    judged = []"]
    lines += [f"    {name[f]} = get({f!r})" for f in fields]
    for index, identity in enumerate(identities):
        if not identity.lhs:
            continue
        present = " and ".join(f"{name[f]} is not None" for f in identity.fields)
        lhs = " + ".join(name[f] for f in identity.lhs)
        rhs = " + ".join(name[f] for f in identity.rhs)
        lines.append(f"    if {present}:\n        judged.append(({index}, {lhs}, {rhs}))")
    lines.append("    return judged")
    namespace: dict[str, Evaluator] = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from field paths, repr-quoted
    return namespace["evaluate"]


@dataclass(frozen=True, slots=True)
class IdentitySet:
    """The identities of one document shape, and their compiled evaluator."""

    identities: tuple[Identity, ...]
    evaluate: Evaluator


class ShapeCache:
    """The compiled identities of the document shapes seen most recently, bounded by their size.

    A shape costs ~250 bytes per declared path once compiled; real ones have 4 (PPWP) to ~300 paths
    (a DPRD kab/kota ballot), and an electoral district's TPS share one. Entries alone would not bound
    the memory: hostile documents can each declare a new 1,000-path shape. So the least recently used
    shapes go once the cached paths exceed ``max_paths`` (the default holds every district's full
    and half-filled forms, ~250 MB at most).

    >>> cache = ShapeCache(max_paths=10)
    >>> shape = cache(False, ("chart.100025", "chart.100026"))
    >>> [identity.detector for identity in shape.identities][:1]
    ['form.sum_valid']
    >>> cache(False, ("chart.100025", "chart.100026")) is shape, cache.paths
    (True, 3)
    >>> _ = cache(False, tuple(f"chart.{n}" for n in range(9)))  # 9 paths + 1 per entry: the first goes
    >>> len(cache), cache.paths
    (1, 10)
    """

    def __init__(self, max_paths: int = 1_000_000):
        if max_paths < 1:
            raise ValueError(f"max_paths must be at least 1, got {max_paths!r}")
        self.max_paths = max_paths
        self.paths = 0
        self.shapes: OrderedDict[tuple[bool, tuple[str, ...]], IdentitySet] = OrderedDict()

    def __call__(self, party_ballot: bool, declared: tuple[str, ...]) -> IdentitySet:
        key = (party_ballot, declared)
        shape = self.shapes.get(key)
        if shape is not None:
            self.shapes.move_to_end(key)
            return shape
        identities = identities_for(party_ballot, declared)
        shape = self.shapes[key] = IdentitySet(identities, compile_identities(identities))
        self.paths += len(declared) + 1
        while self.paths > self.max_paths and len(self.shapes) > 1:
            (_, evicted), _ = self.shapes.popitem(last=False)
            self.paths -= len(evicted) + 1
        return shape

    def __len__(self) -> int:
        return len(self.shapes)

    def clear(self) -> None:
        self.shapes.clear()
        self.paths = 0


#: The identities of a document that declares these chart/caleg paths, compiled once per shape.
identity_set = ShapeCache()


def identities_for(party_ballot: bool, declared: tuple[str, ...]) -> tuple[Identity, ...]:
    """Every identity of a document that declares these chart/caleg paths."""
    if not party_ballot:
        chart = tuple(p for p in declared if p.startswith("chart."))
        return (Identity("form.sum_valid", "Σ chart = suara_sah", chart, (A + "suara_sah",)), *ADMIN_IDENTITIES)
    totals = tuple(p for p in declared if p.endswith(".jml_suara_total"))
    party_lines = []
    for total in totals:
        party = total.split(".")[1]
        caleg = tuple(p for p in declared if p.startswith(f"caleg.{party}."))
        if caleg:
            party_lines.append(
                Identity("form.party_total", f"partai {party}: jml_suara_total = jml_suara_partai + Σ caleg",
                         (total,), (f"chart.{party}.jml_suara_partai", *caleg))  # fmt: skip
            )
    return (
        Identity("form.sum_valid", "Σ chart.jml_suara_total = suara_sah", totals, (A + "suara_sah",)),
        *party_lines,
        *ADMIN_IDENTITIES,
    )


@dataclass(frozen=True, slots=True)
class FormResult:
    """The judged identities of one tally, those that fail, and the counts over capacity."""

    judged: tuple[Identity, ...]
    failures: tuple[Failure, ...]
    over_capacity: dict[str, int]
    capacity: int

    @property
    def consistent(self) -> bool:
        return not self.failures and not self.over_capacity


def check_form(tally: Tally, capacity: Capacity = Capacity()) -> FormResult:
    """Judge every identity whose fields are all present.

    >>> from pantau.schemas import parse_envelope, normalize
    >>> doc = {"chart": {"null": None, "100025": 105, "100026": 48, "100027": 551},
    ...        "administrasi": {"suara_sah": 163, "suara_tidak_sah": 4, "suara_total": 167}}
    >>> result = check_form(normalize(parse_envelope({"kode_tps": "3173011002090", "jenis": "ppwp", "doc": doc})))
    >>> [(f.identity.detector, f.lhs_total, f.rhs_total) for f in result.failures]
    [('form.sum_valid', 704, 163)]
    """
    counts = tally.counts
    judged: list[Identity] = []
    failures: list[Failure] = []
    shape = identity_set(tally.party_ballot, tally.declared)
    for index, lhs_total, rhs_total in shape.evaluate(counts.get):
        identity = shape.identities[index]
        judged.append(identity)
        if lhs_total != rhs_total and (identity.equal or lhs_total > rhs_total):
            failures.append(Failure(identity, {f: counts[f] for f in identity.fields}, lhs_total, rhs_total))
    limit = capacity.limit(tally)
    over = {f: v for f, v in counts.items() if v > limit} if counts and max(counts.values()) > limit else {}
    return FormResult(tuple(judged), tuple(failures), over, limit)


#: (severity, lead in Bahasa Indonesia, lead in English) per detector.
DESCRIPTIONS: dict[str, tuple[str, str, str]] = {
    "form.sum_valid": ("critical", "Jumlah suara seluruh peserta tidak sama dengan suara sah",
                       "The candidates' votes do not add up to the valid votes (suara_sah)"),
    "form.sum_total": ("warning", "Suara sah ditambah suara tidak sah tidak sama dengan jumlah suara",
                       "Valid plus invalid votes do not equal the total ballots (suara_total)"),
    "form.voters_total": ("warning", "Pengguna hak pilih DPT + DPTb + DPK tidak sama dengan jumlah pengguna hak pilih",
                          "Voters from the DPT, DPTb and non-DPT lists do not add up to the total voters"),
    "form.gender_split": ("info", "Jumlah laki-laki dan perempuan tidak sama dengan totalnya",
                          "Men plus women do not equal the total"),
    "form.ballots_exceed_voters": ("critical", "Jumlah surat suara yang digunakan melebihi jumlah pengguna hak pilih",
                                   "More ballots were cast than voters who voted"),
    "form.turnout_exceeds_register": ("warning", "Pengguna hak pilih dari DPT melebihi jumlah pemilih terdaftar di DPT",
                                      "More DPT voters voted than are registered on the DPT"),
    "form.party_total": ("warning", "Suara partai ditambah suara caleg tidak sama dengan total suara partai",
                         "Party votes plus candidate votes do not equal the party's total"),
    "form.capacity": ("critical", "Ada angka yang melebihi kapasitas satu TPS",
                      "A count exceeds what one polling station can hold"),
}  # fmt: skip


def form_alerts(tally: Tally, result: FormResult) -> list[Alert]:
    """One alert per failing detector, with every failing identity of it as evidence."""
    by_detector: dict[str, list[Failure]] = {}
    for failure in result.failures:
        by_detector.setdefault(failure.identity.detector, []).append(failure)
    alerts = []
    for detector, failures in by_detector.items():
        severity, lead_id, lead_en = DESCRIPTIONS[detector]
        details = "; ".join(f"{f.identity.label}: {f.lhs_total} vs {f.rhs_total}" for f in failures)
        score = max(abs(f.difference) / max(f.rhs_total, 1) for f in failures)
        alerts.append(tps_alert(
            tally, detector, severity, score,
            f"{lead_id} ({details}).", f"{lead_en} ({details}).",
            {"failures": [f.evidence() for f in failures]},
        ))  # fmt: skip
    if result.over_capacity:
        severity, lead_id, lead_en = DESCRIPTIONS["form.capacity"]
        details = ", ".join(f"{field} = {value}" for field, value in result.over_capacity.items())
        alerts.append(tps_alert(
            tally, "form.capacity", severity, max(result.over_capacity.values()) / result.capacity,
            f"{lead_id} ({details}; batas {result.capacity}).", f"{lead_en} ({details}; limit {result.capacity}).",
            {"limit": result.capacity, "over": result.over_capacity},
        ))  # fmt: skip
    return alerts

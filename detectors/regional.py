"""Per-region sufficient statistics for the election-forensics tests, updated online in O(1).

Each complete, consistent TPS form (:func:`profile`) contributes a fixed-length vector
(:func:`contribution`) of observed digit events *and their expectations for this very station*, plus
per-candidate sums for the fingerprint statistics. A region's state (:class:`RegionSums`) is the sum
of its stations' vectors: adding a TPS, withdrawing a revised one, and merging kabupaten into a
province are additions, never a rescan of the region. :func:`region_tests` turns the sums into
results (``statistic``, ``expected``, ``pvalue``, ``n``), the same definitions as
:mod:`pantau.detectors.forensics` and :mod:`pantau.detectors.nulls` compute in batch.

The station null
    A candidate's count ``x`` at a station with ``n`` valid votes is compared with a *replicate* count
    drawn like it: ``X ~ BetaBinomial(n, α + x, β + n − x)``, the posterior predictive of the count
    given the station's own ``x`` and a ``Beta(α, β)`` prior for the candidate's share fitted, by the
    method of moments, to the shares at the kecamatan's stations so far (the station's own
    ``Binomial(n, x/n)`` while the kecamatan has fewer than :data:`PRIOR_MIN`).
    Averaged over stations, a replicate has the distribution of the counts themselves, so the expected
    digit statistics are unbiased where the counts are. Its digit probabilities give the station's
    expectation of every digit statistic. A null from the station's count alone (a flat prior) is
    biased where counts crowd just above 10 on a falling distribution (the DPD ballot's dozens of
    candidates at a few votes each: on a clean simulated Jakarta its kecamatan failed the LastC test at
    p < 0.01 four times in ten); a common regional share alone ignores that counts differ between
    stations far more than binomially. On the real 2024 DIY/Bali kecamatan this null is calibrated
    (``tests/test_regional.py``). Textbook constants are reported beside it.

    The prior is the kecamatan's at the moment the station enters, and a revised station is withdrawn
    with the prior of the moment it leaves: the observed sums stay exact, the expected ones carry the
    (small) difference between the two priors.

Kelurahan neighbours
    Moving votes to one candidate at a part of a kecamatan's TPS leaves the kecamatan's level, digits and
    modes plausible, but lifts those TPS above the other TPS of their own kelurahan (neighbours vote
    alike: the kelurahan is the finest region on the form). Each TPS's logit share of each candidate is
    compared with the median of the others in its kelurahan (:func:`neighbour_residuals`; a kelurahan of
    more than 32 TPS in blocks of 32 numbers, :func:`neighbourhood`); a kecamatan counts its TPS above a
    grid of edges (:func:`neighbour_tails`), summed like everything else, so a form changes its
    kelurahan's share of the sums (O(block of at most 32 TPS), not O(region)).
    :func:`neighbour_test` compares the kecamatan's count above the province's 90th percentile with the
    rest of the province, beta-binomial with an overdispersion estimated from the province's kecamatan
    (:func:`neighbour_null`). On a simulated Central Java with half the others' votes moved at 30% of
    the TPS of 5% of its kecamatan it flags 25 of 29 of them, none of 547 clean; on the real 2024
    DIY/Bali kecamatan its p-values are calibrated (``tests/test_regional.py``). Stuffed ballots lift
    the turnout of the DPT instead (:func:`turnout_logit`), which the same residuals, tails and nulls
    follow as one more key (:data:`TURNOUT`, the test ``neighbour_turnout``).

Turnout percentages (P05s and Kobak's integer-percent test) use a local-uniform null: the number of
voters is equally likely anywhere within ±``PERCENT_WINDOW`` of the register around the observed
value (the Kobak et al. smoothness assumption, made local so the piles at 100% do not count).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import special, stats

from pantau.schemas import Tally

from . import kernels
from .forensics import BENFORD_2BL, UNIFORM_05
from .form import FormResult
from .nulls import NullResult, second_digits, tail_pvalue

#: The digit statistics of the counts ≥ 10 (:func:`_ratio_test`): last digit, second digit, repeated and
#: adjacent last two digits.
DIGIT_STATISTICS = ("last", "d2", "rep", "adj")
#: Those that are 0 or 1 per count: their sums are skewed like a count of rare events.
BERNOULLI_DIGIT_TESTS = ("rep", "adj")
#: The fixed layout of a contribution vector: name → index.
FIELDS = (
    "tps",
    # C05s over every count: observed hits, Σq, Σq(1-q), Σq(1-q)(1-2q) (the three cumulants of the null)
    "c05_m", "c05_hits", "c05_q", "c05_v", "c05_k",
    # counts ≥ 10 (see _ratio_test): observed count m10; b = ΣP(X≥10), f = ΣP(X≥10)², f3 = ΣP(X≥10)³; per
    # statistic g (last digit, second digit, repeated and adjacent last two digits) the observed Σg and
    # a = ΣE[g·1], c = ΣE[g²·1], d = ΣE[g·1]², e = ΣE[g·1]·P(X≥10); for the 0/1 statistics (repeated,
    # adjacent) the third cumulant's a3 = ΣE[g·1]³, a2b = ΣE[g·1]²·P(X≥10), ab2 = ΣE[g·1]·P(X≥10)²
    "m10", "b", "f", "f3",
    *(f"{g}_{part}" for g in DIGIT_STATISTICS for part in ("obs", "a", "c", "d", "e")),
    *(f"{g}_{part}" for g in BERNOULLI_DIGIT_TESTS for part in ("a3", "a2b", "ab2")),
    # turnout percentage ending in 0/5 (P05s), and integer turnout percentages (Kobak)
    "pct_m", "p05_hits", "p05_q", "p05_v", "p05_k", "int_hits", "int_q", "int_v", "int_k",
    # turnout moments, invalid-vote rate
    "t1", "t2", "t3", "t4", "inv1",
    # last-digit counts (10) and their expectations (10), counts ≥ 10
    *(f"ld{d}" for d in range(10)), *(f"le{d}" for d in range(10)),
)  # fmt: skip
IX = {name: i for i, name in enumerate(FIELDS)}
#: Per candidate: votes, valid votes, Σshare, Σshare², Σturnout·share, Σvotes/register, Σturnout·votes/register,
#: stations with turnout and share both ≥ 95%, stations, Σ1/valid votes.
CANDIDATE_FIELDS = ("votes", "sah", "s1", "s2", "ts", "v1", "tv", "hi", "n", "inv")
CX = {name: i for i, name in enumerate(CANDIDATE_FIELDS)}
#: The candidate sums a share prior is fitted from (:func:`share_prior`).
_SHARE_MOMENTS = [CX["n"], CX["s1"], CX["s2"], CX["inv"]]
#: Stations kept (by hash of the TPS code, order-independent) for the dip test of turnout.
SAMPLE_SIZE = 128
PERCENT_WINDOW = 0.05
#: Stations a region needs before its shares serve as the prior of the station null.
PRIOR_MIN = 20
#: Bounds of the between-station share correlation ρ = 1/(α+β+1) of a prior. Below ~0.003 the spread
#: of a small candidate's share cannot be told from binomial noise at a few hundred stations, and a
#: prior trusted further ignores the station's own count (on clean simulated DPD kecamatan a floor of
#: 1e-4 failed LastC where 0.003 did not).
RHO_MIN, RHO_MAX = 0.003, 0.5
HIGH = 0.95
HIGH_TURNOUT_TIES = 0.995
A = "administrasi."
ADMIN_NEEDED = ("pemilih_dpt_j", "pengguna_total_j", "suara_sah", "suara_tidak_sah")


@dataclass(frozen=True, slots=True)
class Profile:
    """What the regional statistics need from one complete, consistent form."""

    kode_tps: str
    jenis: str
    counts: tuple[tuple[str, int], ...]  # candidate (chart key) → votes, in document order
    register: int
    voters: int
    valid: int
    invalid: int
    dpt_voters: int | None = None  # voters of the DPT (pengguna_dpt_j), when the form gives them

    @property
    def turnout(self) -> float:
        return min(self.voters / self.register, 1.0)

    @property
    def top_share(self) -> float:
        """The share of the valid votes of whoever won this TPS (Klimek's fingerprint axis)."""
        return max(x for _, x in self.counts) / self.valid


def profile(tally: Tally, form: FormResult) -> Profile | None:
    """The station's profile if its form is complete and every identity holds, else None.

    Forms with errors are the form detectors' business; feeding them to the statistics would let one
    misread 880 move a region's digit tests.
    """
    if not (tally.chart_present and tally.admin_present and form.consistent):
        return None
    counts = tally.counts
    if any(A + name not in counts for name in ADMIN_NEEDED):
        return None
    votes = []
    for path in tally.declared:
        if not path.startswith("chart."):
            continue
        if tally.party_ballot and not path.endswith(".jml_suara_total"):
            continue
        value = counts.get(path)
        if value is None:
            return None
        votes.append((path.split(".")[1], value))
    register, valid = counts[A + "pemilih_dpt_j"], counts[A + "suara_sah"]
    if not votes or register <= 0 or valid <= 0 or sum(v for _, v in votes) != valid:
        return None
    return Profile(tally.kode_tps, tally.jenis, tuple(votes), register, counts[A + "pengguna_total_j"], valid,
                   counts[A + "suara_tidak_sah"], counts.get(A + "pengguna_dpt_j"))  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# one station's expectations


class _DigitTable:
    """Per possible count ``k``, the digit events whose expectations a station contributes (a row of
    :data:`EXPECTATIONS`); grown on demand, shared by every null."""

    def __init__(self) -> None:
        self.rows = np.zeros((0, len(EXPECTATIONS)))

    def __call__(self, n: int) -> np.ndarray:
        if n >= len(self.rows):
            k = np.arange(max(n + 1, 2 * len(self.rows), 1024))
            big = (k >= 10).astype(float)
            last, tens = k % 10, k // 10 % 10
            columns = [(k % 5 == 0).astype(float), big]
            for g in (last, second_digits(k), (tens == last).astype(float), (np.abs(tens - last) == 1).astype(float)):
                columns += [big * g, big * g * g]
            columns += [big * (last == d) for d in range(10)]
            self.rows = np.column_stack(columns)
        return self.rows[: n + 1]


#: What a station's null gives per count: ``P(X mod 5 = 0)``, ``P(X ≥ 10)``, then for g = last digit,
#: second digit, repeated and adjacent last two digits ``E[g·1{X≥10}], E[g²·1{X≥10}]``, then
#: ``P(X ≥ 10, last digit = d)`` for d = 0..9. Unconditional on purpose: conditioning each station on
#: its own count being ≥ 10 biases stations near 10 (see :func:`_ratio_test`).
EXPECTATIONS = ("q05", "tail", *(f"{g}_{m}" for g in DIGIT_STATISTICS for m in ("a", "c")), *(f"p{d}" for d in range(10)))
_digit_table = _DigitTable()


@lru_cache(maxsize=1 << 17)
def count_expectations(n: int, x: int) -> tuple[float, ...]:
    """:data:`EXPECTATIONS` of a count under ``Binomial(n, x/n)``: the null of a station with no prior.

    >>> q05, tail, *_ = count_expectations(200, 0)      # a share of 0 has no spread: the 0 is expected
    >>> q05, tail
    (1.0, 0.0)
    >>> e = count_expectations(300, 150)
    >>> round(e[2] / e[1], 2)                            # a wide count: last digit nearly uniform
    4.5
    """
    row = kernels.station_nulls(n, np.array([x]), _NO_PRIOR, _NO_PRIOR, _WITHOUT_PRIOR, _digit_table(n), _PROBABILITIES)
    return tuple(row[0].tolist())


def posterior_expectations(n: int, x: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """:data:`EXPECTATIONS` (one row per count) of replicates ``BetaBinomial(n, α + x, β + n − x)``:
    the station null of the module docstring, for counts ``x`` at one station of ``n`` valid votes.

    >>> e = posterior_expectations(250, np.array([3, 12]), np.array([0.4, 0.4]), np.array([19.6, 19.6]))
    >>> [round(float(t), 3) for t in e[:, 1]]      # P(X ≥ 10): the prior (mean share 2%) pulls 12 down
    [0.02, 0.638]
    """
    x = np.asarray(x, dtype=np.int64)
    return kernels.station_nulls(n, x, np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float),
                                 np.ones(len(x), dtype=np.bool_), _digit_table(n), _PROBABILITIES)  # fmt: skip


#: The columns of :data:`EXPECTATIONS` that are probabilities (capped at 1: a sum of them can pass it by an ulp).
_PROBABILITIES = np.array([EXPECTATIONS.index(name) for name in ("q05", "tail", *(f"p{d}" for d in range(10)))])
_NO_PRIOR, _WITHOUT_PRIOR = np.zeros(1), np.zeros(1, dtype=np.bool_)


def share_prior(stations: float, share_sum: float, share_squares: float, inverse_valid: float) -> tuple[float, float] | None:
    """``(α, β)`` of a candidate's share between a region's stations, by the method of moments, or
    None when the region has fewer than :data:`PRIOR_MIN` stations or the share is always 0 or 1.

    A station's share ``x/n`` varies by ``μ(1−μ)·(ρ + (1−ρ)/n)``: binomial noise around a share that
    itself varies with correlation ``ρ``; ``ρ`` is solved from the observed spread and bounded by
    :data:`RHO_MIN`, :data:`RHO_MAX`.

    >>> [round(v, 1) for v in share_prior(100, 30.0, 9.5, 0.5)]   # mean share 0.3, ρ ≈ 0.02
    [15.4, 35.9]
    """
    if stations < PRIOR_MIN:
        return None
    mu = share_sum / stations
    if not 0 < mu < 1:
        return None
    spread = max(share_squares - stations * mu * mu, 0.0) * stations / (stations - 1)
    rho = (spread / (mu * (1 - mu)) - inverse_valid) / (stations - inverse_valid)
    concentration = 1 / min(max(rho, RHO_MIN), RHO_MAX) - 1
    return mu * concentration, (1 - mu) * concentration


@lru_cache(maxsize=1 << 16)
def percent_expectations(k: int, d: int) -> tuple[float, float]:
    """P(turnout % ends in 0/5) and P(turnout % is an integer) for voters uniform near ``k`` of ``d``.

    The percentage is ``round(100·k/d)`` half to even, capped at 100 (the Toolkit's P05s); "integer"
    means ``100·k/d`` is exactly whole (Kobak). Voters range over ``k ± max(2, ⌈PERCENT_WINDOW·d⌉)``
    within ``1..d-1``.

    >>> [round(q, 3) for q in percent_expectations(150, 200)]   # 140..160: every even k/200 is whole
    [0.238, 0.524]
    """
    half = max(2, math.ceil(PERCENT_WINDOW * d))
    lo, hi = max(1, k - half), min(d - 1, k + half)
    if hi < lo:
        return (math.nan, math.nan)
    ends = sum(min(round(100 * voters / d), 100) % 5 == 0 for voters in range(lo, hi + 1))
    step = d // math.gcd(100, d)  # 100·voters/d is whole exactly when voters is a multiple of this
    whole = hi // step - (lo - 1) // step
    return ends / (hi - lo + 1), whole / (hi - lo + 1)


#: Vector fields whose per-station excess (observed − expected) ranks a test's top contributors.
SURPRISE = {
    "c05s": ("c05_hits", "c05_q"), "lastc": ("last_obs", "last_a"), "2bl": ("d2_obs", "d2_a"),
    "last_digit": ("last_obs", "last_a"), "repeated_digits": ("rep_obs", "rep_a"),
    "adjacent_digits": ("adj_obs", "adj_a"), "p05s": ("p05_hits", "p05_q"), "integer_percent": ("int_hits", "int_q"),
}  # fmt: skip
_SURPRISE_IX = {test: (IX[a], IX[b]) for test, (a, b) in SURPRISE.items()}
TOP = 3
#: The fingerprint test names up to this many of its 100%/100% stations: each is a form to look at, and
#: a TPS of a kabupaten too small for the TPS-level peer test is named only this way.
TOP_FINGERPRINT = 20


def top_size(test: str) -> int:
    """How many top contributors a region keeps for ``test``."""
    return TOP_FINGERPRINT if test == "fingerprint" else TOP


@dataclass(frozen=True, slots=True)
class Contribution:
    """One station's share of its regions' sums, computed once for all of them: its vector (layout
    :data:`FIELDS`), its per-candidate sums (:data:`CANDIDATE_FIELDS`) and its excess per digit test
    (observed − expected, which ranks a region's top contributors)."""

    vector: np.ndarray
    candidates: dict[str, np.ndarray]
    excess: dict[str, float]
    sample: tuple[int, tuple[float, float]]  # the station's dip-test sample key and (turnout, winner's share)


def contribution(p: Profile, prior: dict[str, tuple[float, float]] | None = None) -> Contribution:
    """One station's :class:`Contribution`; ``prior`` maps candidates to the ``(α, β)`` of their share
    (:func:`share_prior`), candidates without one get the no-prior null (:func:`count_expectations`)."""
    v = np.zeros(len(FIELDS))
    v[IX["tps"]] = 1.0
    x = np.array([count for _, count in p.counts], dtype=np.int64)
    v[_COUNT_SUMS] = kernels.count_sums(x, _station_nulls(p.valid, p.counts, prior or {}), _SKEWED)
    t = p.turnout
    if 0 < p.voters < p.register:
        q_p05, q_int = percent_expectations(p.voters, p.register)
        if not math.isnan(q_p05):
            pct = min(round(100 * p.voters / p.register), 100)
            v[IX["pct_m"]] += 1
            v[IX["p05_hits"]] += pct % 5 == 0
            v[IX["p05_q"]] += q_p05
            v[IX["p05_v"]] += q_p05 * (1 - q_p05)
            v[IX["p05_k"]] += q_p05 * (1 - q_p05) * (1 - 2 * q_p05)
            v[IX["int_hits"]] += (100 * p.voters) % p.register == 0
            v[IX["int_q"]] += q_int
            v[IX["int_v"]] += q_int * (1 - q_int)
            v[IX["int_k"]] += q_int * (1 - q_int) * (1 - 2 * q_int)
    v[IX["t1"]], v[IX["t2"]], v[IX["t3"]], v[IX["t4"]] = t, t * t, t**3, t**4
    ballots = p.valid + p.invalid
    v[IX["inv1"]] = p.invalid / ballots if ballots else 0.0
    candidates = {}
    for key, x in p.counts:
        s, vr = x / p.valid, x / p.register
        candidates[key] = np.array([x, p.valid, s, s * s, t * s, vr, t * vr, float(t >= HIGH and s >= HIGH), 1.0, 1 / p.valid])
    totals = v.tolist()
    excess = {test: totals[a] - totals[b] for test, (a, b) in _SURPRISE_IX.items()}
    # 4 decimals: the dip test needs no more, and the sample is most of a region's state on the wire
    sample = sample_key(p.kode_tps), (round(t, 4), round(p.top_share, 4))
    return Contribution(v, candidates, excess, sample)


def station_expectations(valid: int, counts: Sequence[tuple[str, int]], prior: dict[str, tuple[float, float]]) -> list[tuple[float, ...]]:
    """:data:`EXPECTATIONS` of each count of a station with ``valid`` votes, in order; ``prior`` as
    :func:`contribution` takes it."""
    return [tuple(row) for row in _station_nulls(valid, counts, prior).tolist()]


def _station_nulls(valid: int, counts: Sequence[tuple[str, int]], prior: dict[str, tuple[float, float]]) -> np.ndarray:
    """:func:`station_expectations` as one array (a row per count), in one compiled call."""
    x = np.array([count for _, count in counts], dtype=np.int64)
    fitted = [prior.get(key) for key, _ in counts]
    alpha = np.array([f[0] if f is not None else 0.0 for f in fitted])
    beta = np.array([f[1] if f is not None else 0.0 for f in fitted])
    with_prior = np.array([f is not None for f in fitted], dtype=np.bool_)
    return kernels.station_nulls(valid, x, alpha, beta, with_prior, _digit_table(valid), _PROBABILITIES)


def region_prior(stations: Iterable[Sequence[tuple[str, int]]]) -> dict[str, tuple[float, float]]:
    """:meth:`RegionSums.prior` of stations given by their counts (candidate → votes), in one pass."""
    sums: dict[str, np.ndarray] = {}
    for counts in stations:
        valid = sum(x for _, x in counts)
        if valid <= 0:
            continue
        for key, x in counts:
            sums[key] = sums.get(key, 0) + np.array([1.0, x / valid, (x / valid) ** 2, 1 / valid])
    return _fitted(sums.items())


def _fitted(moments: Iterable[tuple[str, Sequence[float]]]) -> dict[str, tuple[float, float]]:
    """:func:`share_prior` of each candidate's ``(stations, Σshare, Σshare², Σ1/valid)``, where it has one."""
    out = {}
    for key, values in moments:
        fitted = share_prior(*values)
        if fitted is not None:
            out[key] = fitted
    return out


#: Where :func:`~.kernels.count_sums` puts each of its sums in :data:`FIELDS`, and which digit statistics it
#: keeps the third cumulant of.
_COUNT_SUMS = np.array([IX[name] for name in kernels.count_sum_fields(DIGIT_STATISTICS, BERNOULLI_DIGIT_TESTS)])
_SKEWED = np.array([DIGIT_STATISTICS.index(g) for g in BERNOULLI_DIGIT_TESTS])


def sample_key(kode_tps: str) -> int:
    """A stable pseudo-random rank of a TPS: the dip-test sample keeps the smallest."""
    return int.from_bytes(hashlib.blake2b(kode_tps.encode(), digest_size=6).digest(), "big")


# ---------------------------------------------------------------------------------------------------
# a region


@dataclass
class RegionSums:
    """The summed contributions of a region's stations; JSON-able through :meth:`to_state`.

    >>> from pantau.detectors.regional import Profile, RegionSums
    >>> sums = RegionSums()
    >>> sums.add(Profile("3404010001001", "ppwp", (("100025", 60), ("100026", 140)), 250, 205, 200, 5))
    >>> sums.count, round(sums.turnout_mean, 2)
    (1, 0.82)
    """

    vector: np.ndarray = field(default_factory=lambda: np.zeros(len(FIELDS)))
    candidates: dict[str, np.ndarray] = field(default_factory=dict)
    sample: dict[int, tuple[float, float]] = field(default_factory=dict)  # sample_key → (turnout, winner's share), the SAMPLE_SIZE smallest keys
    sample_cutoff: int | None = None  # keys above it were never kept (None: nothing dropped yet)
    top: dict[str, list[list]] = field(default_factory=dict)  # test → [[|excess|, kode_tps, excess]] largest first
    tails: dict[str, np.ndarray] = field(default_factory=dict)  # candidate → :func:`neighbour_tails` summed

    @property
    def count(self) -> int:
        return round(float(self.vector[IX["tps"]]))

    @property
    def turnout_mean(self) -> float:
        return float(self.vector[IX["t1"]]) / self.count if self.count else math.nan

    def add(self, p: Profile, sign: int = 1, contributed: Contribution | None = None) -> None:
        """Add a station (``sign=-1``: withdraw one added before); ``contributed`` is its
        :func:`contribution` when the caller already has it (one station, several regions)."""
        share = contributed or contribution(p)
        if sign > 0:
            self.vector += share.vector
        else:
            self.vector -= share.vector
        for key, values in share.candidates.items():
            current = self.candidates.get(key)
            if current is None:
                current = self.candidates[key] = np.zeros(len(CANDIDATE_FIELDS))
            if sign > 0:
                current += values
            else:
                current -= values
        self._sample(*share.sample, sign)
        kode = p.kode_tps
        if sign < 0:  # only a withdrawn station can be among the top contributors
            for test, entries in self.top.items():
                if any(entry[1] == kode for entry in entries):
                    self.top[test] = [entry for entry in entries if entry[1] != kode]
        else:
            excess = share.excess
            leader = self.leader()
            if leader is not None and leader in share.candidates:
                excess = {**excess, "fingerprint": float(share.candidates[leader][CX["hi"]])}
            for test, x in excess.items():
                if abs(x) > 1e-9:
                    self._enter(test, x, kode)

    def add_tails(self, change: dict[str, np.ndarray], kode_tps: str | None = None, residuals: dict[str, float] | None = None) -> None:
        """Add the change of a kelurahan's :func:`neighbour_tails` (new minus old); ``residuals`` (per
        neighbour test, the largest residual of the TPS ``kode_tps`` that changed them) enter the top
        contributors of those tests. A revised TPS left the top contributors when :meth:`add` withdrew
        its previous form."""
        for key, counts in change.items():
            current = self.tails.get(key)
            if current is None:
                self.tails[key] = counts.astype(float)
            else:
                current += counts
        for test, residual in (residuals or {}).items():
            if kode_tps is not None and residual > 0:
                self._enter(test, residual, kode_tps)

    def _enter(self, test: str, x: float, kode_tps: str) -> None:
        """A station's ``x`` (excess, residual) into ``test``'s top contributors, ranked by ``|x|`` (ties: by
        TPS code), if it makes the top."""
        size = abs(x)
        current = self.top.get(test)
        if current is not None and len(current) >= top_size(test):
            last = current[-1]
            if size < last[0] or (size == last[0] and kode_tps >= last[1]):
                return
        self._top({test: [[size, kode_tps, round(x, 4)]]})

    def _top(self, entries: dict[str, list[list]]) -> None:
        for test, new in entries.items():
            merged = sorted(self.top.get(test, []) + new, key=lambda e: (-e[0], e[1]))
            self.top[test] = merged[:top_size(test)]

    def _sample(self, key: int, values: tuple[float, float], sign: int) -> None:
        if sign < 0:
            self.sample.pop(key, None)
            return
        if self.sample_cutoff is not None and key > self.sample_cutoff:
            return
        self.sample[key] = values
        if len(self.sample) > SAMPLE_SIZE:
            largest = max(self.sample)
            del self.sample[largest]
            self.sample_cutoff = largest if self.sample_cutoff is None else min(self.sample_cutoff, largest)

    def merge(self, other: RegionSums) -> None:
        """Add another region's sums (kabupaten/kota into their province)."""
        self.vector += other.vector
        for key, values in other.candidates.items():
            self.candidates[key] = self.candidates.get(key, 0) + values
        for key, values in other.tails.items():
            self.tails[key] = self.tails.get(key, 0) + values
        self._top(other.top)
        for key, value in other.sample.items():
            self._sample(key, value, 1)
        if other.sample_cutoff is not None:
            self.sample_cutoff = other.sample_cutoff if self.sample_cutoff is None else min(self.sample_cutoff, other.sample_cutoff)
            for key in [k for k in self.sample if k > self.sample_cutoff]:
                del self.sample[key]

    def to_state(self) -> dict[str, Any]:
        return {"v": self.vector.tolist(), "c": {k: v.tolist() for k, v in self.candidates.items()},
                "s": [[k, t, w] for k, (t, w) in sorted(self.sample.items())], "x": self.sample_cutoff,
                "t": dict(self.top), "k": {k: v.tolist() for k, v in self.tails.items()}}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RegionSums:
        if len(state["v"]) != len(FIELDS) or any(len(c) != len(CANDIDATE_FIELDS) for c in state["c"].values()):
            raise ValueError(f"region state has {len(state['v'])} fields (per candidate {sorted({len(c) for c in state['c'].values()})}), "
                             f"this version expects {len(FIELDS)} ({len(CANDIDATE_FIELDS)})")
        if any(len(entry) != 3 for entry in state["s"]):
            raise ValueError("region state's dip sample holds [hash, turnout]; this version expects [hash, turnout, winner's share]")
        if "k" not in state:
            raise ValueError("region state has no kelurahan-neighbour tails; this version expects them (key 'k')")
        return cls(np.asarray(state["v"], dtype=float), {k: np.asarray(v, dtype=float) for k, v in state["c"].items()},
                   {int(k): (float(t), float(w)) for k, t, w in state["s"]}, state["x"],
                   {k: [list(e) for e in v] for k, v in state["t"].items()},
                   {k: np.asarray(v, dtype=float) for k, v in state["k"].items()})  # fmt: skip

    def prior(self) -> dict[str, tuple[float, float]]:
        """The ``(α, β)`` of each candidate's share between the region's stations (:func:`share_prior`),
        for the candidates that have one."""
        return _fitted((key, [c[i] for i in _SHARE_MOMENTS]) for key, c in ((key, c.tolist()) for key, c in self.candidates.items()))

    def leader(self) -> str | None:
        """The candidate with the most votes in the region (ties: the first in key order)."""
        if not self.candidates:
            return None
        return min(self.candidates, key=lambda k: (-self.candidates[k][CX["votes"]], k))


# ---------------------------------------------------------------------------------------------------
# tests from the sums


@dataclass(frozen=True)
class RegionTest(NullResult):
    """One test of a region: a :class:`NullResult` with the test's name and its textbook value."""

    name: str = ""
    textbook: float | None = None
    candidate: str | None = None  # the candidate a per-candidate test found most surprising


def bernoulli_sum_tails(hits: float, mean: float, var: float, k3: float) -> tuple[float, float]:
    """``P(S ≤ hits)`` and ``P(S ≥ hits)`` for a sum ``S`` of independent Bernoulli variables with
    cumulants ``mean`` (Σq), ``var`` (Σq(1−q)) and ``k3`` (Σq(1−q)(1−2q)): a translated gamma (Pearson
    type III) matching all three, with a continuity correction. (Any sum that moves in steps of 1 and
    has these cumulants: :func:`_ratio_test` passes its 0/1 digit counts less their expectation.)

    A region keeps only these sums, not every station's ``q``, so the exact Poisson-binomial is out of
    reach; the normal approximation ignores the skew of a sum of rare events, and in the far tail
    where Benjamini–Hochberg decides over thousands of regions that matters: with ``q`` of 0.01 at
    150 stations it puts 15× too many clean regions below p = 1e-5 (simulated), the translated gamma
    0.2–1× (and 0.5–1× for ``q`` of 0.1 to 0.5 mixed, once ``var`` ≥ 10).

    >>> from pantau.detectors.regional import bernoulli_sum_tails
    >>> q = 0.01; m = 150; lower, upper = bernoulli_sum_tails(7, m * q, m * q * (1 - q), m * q * (1 - q) * (1 - 2 * q))
    >>> round(upper, 4)  # exact binomial P(S ≥ 7): 0.0008; normal: 1e-5
    0.0013
    """
    if var <= 0:
        return float(hits >= mean - 1e-9), float(hits <= mean + 1e-9)
    sd = math.sqrt(var)
    skew = k3 / (var * sd)
    if abs(skew) < 1e-6:
        return float(special.ndtr((hits + 0.5 - mean) / sd)), float(special.ndtr((mean - hits + 0.5) / sd))
    if skew < 0:  # −S is skewed the other way
        upper, lower = bernoulli_sum_tails(-hits, -mean, var, -k3)
        return lower, upper
    shape, scale = 4 / skew**2, skew * sd / 2  # mean shape·scale, variance shape·scale², skewness 2/√shape
    origin = mean - shape * scale
    cdf = lambda x: float(special.gammainc(shape, (x - origin) / scale)) if x > origin else 0.0  # noqa: E731
    return cdf(hits + 0.5), 1.0 - cdf(hits - 0.5)


def _bernoulli(name, hits, q, var, k3, m, alternative, textbook=None) -> RegionTest:
    if m <= 0:
        return RegionTest(math.nan, 0, math.nan, None, None, None, name, textbook)
    statistic, expected, std = hits / m, q / m, math.sqrt(max(var, 0.0)) / m
    z = (statistic - expected) / std if std > 0 else (0.0 if hits == q else math.copysign(math.inf, hits - q))
    lower, upper = bernoulli_sum_tails(hits, q, var, k3)
    return RegionTest(statistic, int(round(m)), expected, tail_pvalue(lower, upper, alternative), std, float(z), name, textbook)


def _ratio_test(name: str, v: np.ndarray, g: str, textbook: float) -> RegionTest:
    """Mean of ``g`` over the counts ≥ 10, against the ratio of the stations' expectations.

    ``expected = c = ΣE[g·1{X≥10}] / ΣP(X≥10)``; the test is on ``T = Σ_{x≥10} (g(x) − c)``, a sum of
    independent ``Y = (g(X) − c)·1{X≥10}`` of mean 0 in all, whose null variance ``Σ Var[Y]`` expands into
    the kept sums. Testing each station's digit *given its own count is ≥ 10* would bias stations near 10
    (a count of 11 says its null lies above 10), which matters for the many small counts of legislative
    ballots. For a 0/1 ``g`` (repeated, adjacent last digits: 10–20% of counts) the sum is skewed like a
    count of rare events, and its tails are :func:`bernoulli_sum_tails` with ``T``'s third cumulant (on
    69 counts the normal tail put a clean kecamatan at p = 1e-6 where the binomial says 3e-5); the mean
    last and second digit are nearly symmetric, and keep the normal tail.
    """
    m = float(v[IX["m10"]])
    b = float(v[IX["b"]])
    if m <= 0 or b <= 0:
        return RegionTest(math.nan, int(m), math.nan, None, None, None, name, textbook)
    a, c2, d, e = (float(v[IX[f"{g}_{part}"]]) for part in ("a", "c", "d", "e"))
    f = float(v[IX["f"]])
    expected = a / b
    variance = (c2 - 2 * expected * a + expected**2 * b) - (d - 2 * expected * e + expected**2 * f)
    statistic = float(v[IX[f"{g}_obs"]]) / m
    std = math.sqrt(max(variance, 0.0)) / m
    z = (statistic - expected) / std if std > 0 else 0.0
    if g not in BERNOULLI_DIGIT_TESTS:
        return RegionTest(statistic, int(round(m)), expected, float(2 * special.ndtr(-abs(z))), std, float(z), name, textbook)
    k3 = _bernoulli_ratio_k3(v, g, expected)
    lower, upper = bernoulli_sum_tails(float(v[IX[f"{g}_obs"]]) - expected * m, 0.0, max(variance, 0.0), k3)
    return RegionTest(statistic, int(round(m)), expected, tail_pvalue(lower, upper, "two-sided"), std, float(z), name, textbook)


def _bernoulli_ratio_k3(v: np.ndarray, g: str, c: float) -> float:
    """Third cumulant of :func:`_ratio_test`'s ``T`` for a 0/1 ``g``: per count ``Y`` is ``1 − c`` with
    chance ``a = E[g·1]``, ``−c`` with ``t − a`` (``t = P(X ≥ 10)``), else 0, so with ``μ = a − c t``
    ``κ₃ = E[Y³] − 3 μ E[Y²] + 2 μ³``, ``E[Y²] = a(1 − 2c) + c² t``, ``E[Y³] = a((1 − c)³ + c³) − c³ t``,
    summed over the counts from the kept sums."""
    a, d, e, a3, a2b, ab2 = (float(v[IX[f"{g}_{part}"]]) for part in ("a", "d", "e", "a3", "a2b", "ab2"))
    b, f, f3 = (float(v[IX[name]]) for name in ("b", "f", "f3"))
    third = a * ((1 - c) ** 3 + c**3) - c**3 * b
    mu_second = (1 - 2 * c) * d + (3 * c * c - c) * e - c**3 * f
    mu_cubed = a3 - 3 * c * a2b + 3 * c * c * ab2 - c**3 * f3
    return third - 3 * mu_second + 2 * mu_cubed


def region_tests(sums: RegionSums, parent: RegionSums | None = None) -> list[RegionTest]:
    """Every test of a region from its sums; ``parent`` (the enclosing region, itself included) gives
    the peer rate for the 100%/100% fingerprint test."""
    v = sums.vector
    g = lambda name: float(v[IX[name]])  # noqa: E731
    tests = [
        _bernoulli("c05s", g("c05_hits"), g("c05_q"), g("c05_v"), g("c05_k"), g("c05_m"), "greater", UNIFORM_05),
        _ratio_test("lastc", v, "last", 4.5),
        _ratio_test("2bl", v, "d2", BENFORD_2BL),
        _last_digit_uniformity(v),
        _ratio_test("repeated_digits", v, "rep", 0.1),
        _ratio_test("adjacent_digits", v, "adj", 0.18),
        _bernoulli("p05s", g("p05_hits"), g("p05_q"), g("p05_v"), g("p05_k"), g("pct_m"), "greater", UNIFORM_05),
        _bernoulli("integer_percent", g("int_hits"), g("int_q"), g("int_v"), g("int_k"), g("pct_m"), "greater"),
        fingerprint_test(sums, parent),
        _dip(sums, 0, "dip"),
        _dip(sums, 1, "dip_share"),
    ]
    return tests


def _last_digit_uniformity(v: np.ndarray) -> RegionTest:
    """Beber–Scacco: last digits of the counts ≥ 10 against their expected frequencies (Pearson χ², 9 df).

    ``statistic`` is χ²; ``expected`` its null mean (9). The expected frequencies are the summed
    per-station probabilities (textbook: uniform), so the χ² is conservative for unequal stations.
    """
    observed = v[IX["ld0"] : IX["ld0"] + 10]
    m = float(observed.sum())
    weights = v[IX["le0"] : IX["le0"] + 10]
    expected = m * weights / weights.sum() if weights.sum() > 0 else weights
    if m <= 0 or np.any(expected <= 0):
        return RegionTest(math.nan, int(m), 9.0, None, None, None, "last_digit", 9.0)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    uniform = float(((observed - m / 10) ** 2 / (m / 10)).sum())
    return RegionTest(chi2, int(m), 9.0, float(special.chdtrc(9, chi2)), math.sqrt(18.0), (chi2 - 9) / math.sqrt(18.0),
                      "last_digit", round(uniform, 4))  # fmt: skip


def fingerprint_test(sums: RegionSums, parent: RegionSums | None) -> RegionTest:
    """Klimek's 100%/100% mass: stations with turnout and leader share both ≥ 95%, against the rate in
    the rest of the parent region (binomial, one-sided; a Jeffreys-smoothed rate so that a parent with
    none does not make one station impossible)."""
    leader = sums.leader()
    n = sums.count
    if leader is None or n == 0:
        return RegionTest(math.nan, 0, math.nan, None, None, None, "fingerprint")
    hits = int(round(sums.candidates[leader][CX["hi"]]))
    rest_n, rest_hits = 0, 0
    if parent is not None and leader in parent.candidates:
        # In the stream a region's and its parent's sums arrive as separate messages: the parent's may
        # lag and hold fewer stations for a moment. Then it says nothing about the rest.
        rest_n = max(parent.count - n, 0)
        rest_hits = min(max(int(round(parent.candidates[leader][CX["hi"]])) - hits, 0), rest_n)
    rate = (rest_hits + 0.5) / (rest_n + 1)
    pvalue = kernels.binomial_at_least(hits, n, rate)
    std = math.sqrt(rate * (1 - rate) / n)
    return RegionTest(hits / n, n, rate, pvalue, std, (hits / n - rate) / std, "fingerprint")


def _dip(sums: RegionSums, column: int, name: str) -> RegionTest:
    """Hartigan's dip test of unimodality on the turnout (``column`` 0) or the TPS winner's share (1) of
    up to :data:`SAMPLE_SIZE` stations.

    Stations at (nearly) 100% are left out: a point mass there is the fingerprint test's business, and
    ties at one value alone make the dip reject. A second mode in the winner's share is what moving most
    of the other candidates' votes at a part of a region's TPS leaves.
    """
    import diptest

    values = np.fromiter((v[column] for v in sums.sample.values()), dtype=float, count=len(sums.sample))
    values = values[values < HIGH_TURNOUT_TIES]
    if values.size < 10:
        return RegionTest(math.nan, int(values.size), None, None, None, None, name)
    dip, pvalue = diptest.diptest(values)
    return RegionTest(float(dip), int(values.size), None, float(pvalue), None, None, name)


# -- kelurahan neighbours ---------------------------------------------------------------------------

#: The test of TPS standing above the other TPS of their own kelurahan (:func:`neighbour_test`): in one
#: candidate's share, and in turnout (:data:`TURNOUT`).
NEIGHBOUR = "neighbour_excess"
NEIGHBOUR_TURNOUT = "neighbour_turnout"
NEIGHBOUR_TESTS = (NEIGHBOUR, NEIGHBOUR_TURNOUT)
#: The key of the turnout of the DPT (:func:`turnout_logit`) among the candidates' keys of the tails.
TURNOUT = "@turnout"
#: Edges (logit units) at which a kecamatan counts its TPS's standardised residuals (:func:`neighbour_tails`).
NEIGHBOUR_EDGES = np.round(np.arange(0.0, 3.05, 0.1), 1)
#: A TPS has a residual once its kelurahan has this many complete forms (the TPS and 3 others).
NEIGHBOUR_MIN_KELURAHAN = 4
#: A large kelurahan's TPS are compared in blocks of this many TPS numbers (000–031, 032–063, …), so a
#: form costs O(block), not O(kelurahan): 95% of kelurahan (73% of the TPS) have fewer, some have hundreds.
NEIGHBOURHOOD_TPS = 32
#: The threshold is the first edge above which at most this share of the province's TPS lie.
NEIGHBOUR_TAIL = 0.10
#: Kecamatan (with :data:`NEIGHBOUR_MIN_TPS` residuals) a province needs to estimate its overdispersion.
NEIGHBOUR_MIN_KECAMATAN = 5
NEIGHBOUR_MIN_TPS = 10
CHI2_1_MEDIAN = float(stats.chi2.median(1))


def neighbourhood(kode_tps: str) -> str:
    """The TPS that :func:`neighbour_residuals` compares a TPS with: its kelurahan's TPS in the same block
    of :data:`NEIGHBOURHOOD_TPS` numbers (neighbouring numbers serve neighbouring streets).

    >>> from pantau.detectors.regional import neighbourhood
    >>> neighbourhood("3404010001007"), neighbourhood("3171010001040")
    ('3404010001.0', '3171010001.1')
    """
    return f"{kode_tps[:10]}.{int(kode_tps[10:]) // NEIGHBOURHOOD_TPS}"


#: A kelurahan member: its form's candidate keys (one tuple object per distinct ballot; :data:`TURNOUT`
#: last when known) and their shares of the valid votes on the logit scale (half a vote added to both
#: sides; then :func:`turnout_logit`), an array (a DPD form lists dozens of candidates, and a night holds 4 M forms).
Member = tuple[tuple[str, ...], np.ndarray]
_BALLOTS: dict[tuple[str, ...], tuple[str, ...]] = {}


def neighbour_test_of(key: str) -> str:
    """The neighbour test that a key of the tails (a candidate, or :data:`TURNOUT`) feeds."""
    return NEIGHBOUR_TURNOUT if key == TURNOUT else NEIGHBOUR


def turnout_logit(register: int, dpt_voters: int) -> float:
    """The DPT's voters' share of the DPT on the logit scale (half a voter added to both sides).

    The DPT's own turnout, not all voters': voters from the supplementary lists (DPTb, DPK) push the
    whole count past the DPT at many TPS, and a turnout capped at 100% hides stuffing.

    >>> from pantau.detectors.regional import turnout_logit
    >>> round(turnout_logit(200, 150), 3), round(turnout_logit(200, 210), 3)  # more than the DPT: all of it
    (1.092, 5.994)
    """
    used = min(dpt_voters, register)
    return math.log((used + 0.5) / (register - used + 0.5))


def member(valid: int, counts: Sequence[tuple[str, int]], turnout: float | None = None) -> tuple[Member, np.ndarray]:
    """A form as a kelurahan member, and its votes (an array in the order of the candidates' keys).

    With its :func:`turnout_logit`, the member lists :data:`TURNOUT` last, after the candidates: the
    kelurahan's residuals of both come from one matrix.
    """
    keys, votes = zip(*counts) if counts else ((), ())
    logits = np.empty(len(votes) + (turnout is not None))
    # the odds in Python floats (the same IEEE arithmetic as numpy's), their logs in one call
    logits[: len(votes)] = np.log([(x + 0.5) / (valid - x + 0.5) for x in votes])
    if turnout is not None:
        keys = (*keys, TURNOUT)
        logits[-1] = turnout
    return (_BALLOTS.setdefault(keys, keys), logits), np.array(votes, dtype=np.int32)


#: One kelurahan's residuals as a matrix: candidate keys, TPS codes, the residual of each TPS (row) and
#: candidate (column), and each candidate's :func:`neighbour_tails` (rows).
Block = tuple[tuple[str, ...], list[str], np.ndarray, np.ndarray]


def neighbour_blocks(members: dict[str, Member]) -> list[Block]:
    """:func:`neighbour_residuals` as matrices, with their tails: one block when every form lists the same
    candidates (all at once), else one per candidate on the forms that list it; none for candidates on
    fewer than :data:`NEIGHBOUR_MIN_KELURAHAN` forms."""
    if len(members) < NEIGHBOUR_MIN_KELURAHAN:
        return []
    ballots = {keys for keys, _ in members.values()}
    if len(ballots) == 1:
        (keys,) = ballots
        blocks = [(keys, list(members), np.vstack([logits for _, logits in members.values()]))]
    else:
        blocks = []
        for key in dict.fromkeys(key for keys, _ in members.values() for key in keys):
            listed = {kode: logits[keys.index(key)] for kode, (keys, logits) in members.items() if key in keys}
            blocks.append(((key,), list(listed), np.array(list(listed.values()))[:, None]))
    return [(keys, codes, *kernels.neighbour_residuals(values, NEIGHBOUR_EDGES)) for keys, codes, values in blocks
            if len(codes) >= NEIGHBOUR_MIN_KELURAHAN]  # fmt: skip


def neighbour_residuals(members: dict[str, Member]) -> dict[str, dict[str, float]]:
    """Per candidate, each TPS's standardised residual against the other TPS of its kelurahan.

    ``members`` maps a kelurahan's TPS to their :data:`Member` (candidate keys, logit shares). The
    residual is the TPS's logit share minus the median of the others', divided by
    ``sqrt(1 + π / (2 (n − 1)))`` so that kelurahan of any size give residuals of one spread (the
    median of ``n − 1`` normal values has variance ``≈ π σ² / (2 (n − 1))``). Candidates on fewer than
    :data:`NEIGHBOUR_MIN_KELURAHAN` forms have none.

    >>> import numpy as np
    >>> from pantau.detectors.regional import neighbour_residuals
    >>> kel = {f"t{i}": (("A",), np.array([0.0])) for i in range(4)} | {"t4": (("A",), np.array([1.0]))}
    >>> round(neighbour_residuals(kel)["A"]["t4"], 3)  # 1 / sqrt(1 + π/8)
    0.847
    """
    return {key: dict(zip(codes, column)) for keys, codes, r, _ in neighbour_blocks(members) for key, column in zip(keys, r.T.tolist())}


def neighbour_tails(residuals: dict[str, dict[str, float]]) -> dict[str, np.ndarray]:
    """Per candidate, ``[TPS with a residual, TPS with residual ≥ edge for each NEIGHBOUR_EDGES]``: a
    kelurahan's share of its kecamatan's (and kabupaten's, province's) sums."""
    return {key: np.concatenate(([len(r)], (np.fromiter(r.values(), dtype=float)[:, None] >= NEIGHBOUR_EDGES).sum(axis=0)))
            for key, r in residuals.items()}  # fmt: skip


def block_tails(blocks: list[Block]) -> tuple[tuple[str, ...], np.ndarray]:
    """The tails of residual blocks: the candidates' keys, and their :func:`neighbour_tails` as the rows of
    one small array (a kelurahan block's counts are at most :data:`NEIGHBOURHOOD_TPS`)."""
    if not blocks:
        return (), np.zeros((0, len(NEIGHBOUR_EDGES) + 1), dtype=np.int16)
    return tuple(key for block_keys, *_ in blocks for key in block_keys), np.vstack([tails for *_, tails in blocks])


@dataclass(frozen=True, slots=True)
class NeighbourNull:
    """A province's null for one candidate: the threshold edge, and the overdispersion ``rho`` of its
    kecamatan's counts above it (a beta-binomial's intra-class correlation)."""

    edge: int
    rho: float
    kecamatan: int  # how many kecamatan the overdispersion was estimated from


def neighbour_null(province: np.ndarray, kecamatan: Iterable[np.ndarray]) -> NeighbourNull | None:
    """The province's :class:`NeighbourNull` for one candidate from its summed tails and its kecamatan's.

    The threshold is the first edge above which at most :data:`NEIGHBOUR_TAIL` of the province's TPS lie.
    Kecamatan differ more than binomially (kelurahan of one kecamatan are alike: on the real DIY/Bali
    data ``rho`` is 0.004–0.06); ``rho`` is estimated robustly from the median of the kecamatan's
    standardised squared deviations, ``(x − n p)² / (n p (1 − p)) ≈ (1 + (n − 1) ρ) χ²₁``, so that the
    few manipulated kecamatan do not inflate it. None while fewer than :data:`NEIGHBOUR_MIN_KECAMATAN`
    kecamatan have :data:`NEIGHBOUR_MIN_TPS` residuals.

    >>> import numpy as np
    >>> from pantau.detectors.regional import NEIGHBOUR_EDGES, neighbour_null
    >>> kec = [np.concatenate(([100], np.linspace(100, 0, len(NEIGHBOUR_EDGES)).round())) for _ in range(6)]
    >>> null = neighbour_null(sum(kec), kec)
    >>> float(NEIGHBOUR_EDGES[null.edge]), null.rho
    (2.7, 0.0)
    """
    if province[0] <= 0:
        return None
    fractions = province[1:] / province[0]
    edge = int(np.argmax(fractions <= NEIGHBOUR_TAIL)) if fractions[-1] <= NEIGHBOUR_TAIL else len(fractions) - 1
    p = fractions[edge]
    counts = np.array([(k[0], k[1 + edge]) for k in kecamatan if k[0] >= NEIGHBOUR_MIN_TPS], dtype=float).reshape(-1, 2)
    if len(counts) < NEIGHBOUR_MIN_KECAMATAN or not 0 < p < 1:
        return None
    n, x = counts[:, 0], counts[:, 1]
    z2 = (x - n * p) ** 2 / (n * p * (1 - p))
    rho = float(np.clip(np.median((z2 / CHI2_1_MEDIAN - 1) / (n - 1)), 0.0, 0.5))
    return NeighbourNull(edge, rho, len(counts))


def neighbour_test(sums: RegionSums, province: RegionSums | None, nulls: dict[str, NeighbourNull]) -> list[RegionTest]:
    """Too many TPS standing above the other TPS of their own kelurahan: in one candidate's share
    (``neighbour_excess``), or in the DPT's turnout (``neighbour_turnout``).

    Moving votes to one candidate at a part of a kecamatan's TPS lifts those TPS's share of that
    candidate above their neighbours; stuffing ballots lifts their turnout. The kecamatan's level and
    digits may stay plausible either way. Per candidate (and for turnout) with a province null
    (:func:`neighbour_null`), the kecamatan's TPS above the province's threshold are compared with the
    rate in the rest of the province, beta-binomial with the province's ``rho`` (one-sided); the
    candidates' smallest p-value, times the candidates tested (Bonferroni), is ``neighbour_excess``'s.
    ``statistic`` is the share of TPS above the threshold, ``expected`` the rest's.
    """
    by_test: dict[str, dict[str, NeighbourNull]] = {name: {} for name in NEIGHBOUR_TESTS}
    for key, null in nulls.items():
        by_test[neighbour_test_of(key)][key] = null
    return [_excess(sums, province, by_test[name], name) for name in NEIGHBOUR_TESTS]


def _excess(sums: RegionSums, province: RegionSums | None, nulls: dict[str, NeighbourNull], name: str) -> RegionTest:
    best: tuple[float, str, float, float, int, float] | None = None
    tested = 0
    for key, null in sorted(nulls.items()):
        mine = sums.tails.get(key)
        whole = province.tails.get(key) if province is not None else None
        if mine is None or whole is None or mine[0] < 1:
            continue
        n, x = int(round(mine[0])), int(round(mine[1 + null.edge]))
        rest_n = whole[0] - mine[0]
        if rest_n <= 0:
            continue
        rate = min(max(float(whole[1 + null.edge] - mine[1 + null.edge] + 0.5) / float(rest_n + 1), 1e-6), 1 - 1e-6)
        if null.rho > 0:
            scale = (1 - null.rho) / null.rho
            pvalue = kernels.beta_binomial_at_least(x, n, rate * scale, (1 - rate) * scale)
        else:
            pvalue = kernels.binomial_at_least(x, n, rate)
        tested += 1
        if best is None or pvalue < best[0]:
            best = (pvalue, key, x / n, rate, n, null.rho)
    if best is None:
        return RegionTest(math.nan, 0, math.nan, None, None, None, name)
    pvalue, key, share, rate, n, rho = best
    std = math.sqrt(rate * (1 - rate) / n * (1 + (n - 1) * rho))
    return RegionTest(share, n, rate, min(1.0, pvalue * tested), std, (share - rate) / std, name, None,
                      None if key == TURNOUT else key)  # fmt: skip


def describe(sums: RegionSums) -> dict[str, Any]:
    """The fingerprint statistics a person reads beside the tests (rounded, JSON-able).

    Turnout skew and kurtosis (population moments, non-excess, as the Toolkit), the leader, its share,
    the turnout–share correlation, Sobyanin's slope (leader votes per registered voter against turnout:
    near the share when extra turnout is spread like the rest, towards 1 or beyond when it all goes to
    the leader), and the invalid-vote rate.
    """
    n = sums.count
    v = sums.vector
    out: dict[str, Any] = {"tps": n}
    if n == 0:
        return out
    m1, m2, m3, m4 = (v[IX[f"t{k}"]] / n for k in (1, 2, 3, 4))
    var = max(m2 - m1 * m1, 0.0)
    out["turnout_mean"] = round(m1, 4)
    out["turnout_sd"] = round(math.sqrt(var), 4)
    if var > 1e-12:
        central3 = m3 - 3 * m1 * m2 + 2 * m1**3
        central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
        out["turnout_skew"] = round(central3 / var**1.5, 4)
        out["turnout_kurtosis"] = round(central4 / var**2, 4)
    inv = v[IX["inv1"]] / n
    out["invalid_rate"] = round(inv, 4)
    leader = sums.leader()
    if leader is not None:
        c = sums.candidates[leader]
        g = lambda name: c[CX[name]] / n  # noqa: E731
        out["leader"] = leader
        out["leader_share"] = round(c[CX["votes"]] / c[CX["sah"]], 4) if c[CX["sah"]] else None
        s_var = g("s2") - g("s1") ** 2
        cov_ts = g("ts") - m1 * g("s1")
        if var > 1e-12 and s_var > 1e-12:
            out["turnout_share_correlation"] = round(cov_ts / math.sqrt(var * s_var), 4)
        if var > 1e-12:
            out["sobyanin_slope"] = round((g("tv") - m1 * g("v1")) / var, 4)
        out["stations_100_100"] = int(round(c[CX["hi"]]))
    return out

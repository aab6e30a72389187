"""Data-derived nulls for the digit statistics: their expectation *for exactly these stations*.

The textbook constants (C05s 0.2, 2BL 4.187, mean last digit 4.5) hold for counts spread over many
orders of magnitude. Indonesian TPS counts are bounded by ~300 voters, a candidate's count at a TPS is
concentrated around ``n·p``, and small candidates produce many 0s: the textbook constants are then the
wrong null and reject clean data. Here each station gets its own null distribution and the statistic
is compared with the sum of the per-station expectations.

Count model (``count_pmf``)
    Station ``i`` with ``n_i`` valid votes and candidate share ``p_i`` (typically the pooled share of
    the candidate in the station's region, see :func:`region_shares`) has
    ``X_i ~ Binomial(n_i, p_i)``, or, with ``dispersion = ρ > 0``, ``X_i ~ BetaBinomial(n_i, a, b)``
    with mean ``n_i p_i`` and intra-station correlation ``ρ`` (``a = p(1-ρ)/ρ``, ``b = (1-p)(1-ρ)/ρ``),
    i.e. ``Var X_i = n_i p_i (1-p_i) (1 + (n_i-1) ρ)``. A common share per region is a narrow null:
    real shares vary between stations, which matters for the 2BL (second digits of counts bounded in a
    narrow range) much more than for last digits; :func:`estimate_dispersion` gives a moment estimate.

Choosing the shares
    Region shares (:func:`region_shares`, e.g. per kelurahan) suit the last-digit statistics, which
    hardly depend on where a count lies. The 2BL depends on it strongly: with heterogeneous stations a
    region share rejects clean data, and the per-station share ``counts / n_voters`` (each count
    smoothed by its own binomial) is the better null; it is slightly conservative (see the tests).

Statistics (definitions match :mod:`pantau.detectors.forensics`)
    * C05s: share of counts whose last digit is 0 or 5, over all stations (0 counts included).
      Under the null, station ``i`` contributes a Bernoulli with ``q_i = P(X_i mod 10 ∈ {0, 5})``;
      expectation ``Σq_i / m`` and variance ``Σq_i(1-q_i) / m²``. The p-value is the exact
      Poisson-binomial tail for up to :data:`EXACT_MAX_UNITS` stations, the normal approximation with a
      continuity correction beyond.
    * 2BL: mean second digit of the counts ≥ ``min_count`` (10). The test is **conditional on which
      stations have a count ≥ min_count**: included station ``i`` contributes
      ``E[d₂(X_i) | X_i ≥ min_count]`` and the matching conditional variance; normal approximation.
    * LastC: mean last digit (``X mod 10``) of the counts ≥ ``min_count`` (10 by default: below 10 the
      last digit is also the first digit), with the same conditional construction.
    * Integer percentages (Kobak, Shpilkin & Pshenichnikov 2016): see :func:`expected_integer_percent`.

Every function returns a :class:`NullResult`, a :class:`~pantau.detectors.forensics.StatResult` with
the standard deviation of the statistic under the null and the z-score added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from .forensics import StatResult

#: Up to this many stations the C05s / integer-percentage p-value is the exact Poisson-binomial tail.
EXACT_MAX_UNITS = 4000
#: Rows × support of one block of the per-station probability matrix (memory bound).
_BLOCK_CELLS = 2_000_000
_ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class NullResult(StatResult):
    """A :class:`StatResult` whose ``expected`` is computed for these units, with its spread.

    ``std`` is the standard deviation of the statistic under the null and ``zscore`` is
    ``(statistic - expected) / std``; both are ``None`` where undefined (no observed data).
    """

    std: float | None = None
    zscore: float | None = None


# ---------------------------------------------------------------------------------------------------
# validation


def _int_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a one-dimensional sequence")
    integral_floats = np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array) & (array == np.round(array)))
    if array.size and not (np.issubdtype(array.dtype, np.integer) or integral_floats):
        raise ValueError(f"{name} must be non-negative integers")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative integers")
    return array


def _unit_floats(values, size: int, name: str, low: float, high: float, high_open: bool = False) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a one-dimensional sequence")
    if array.ndim == 1 and array.size != size:
        raise ValueError(f"{name} has {array.size} values for {size} stations")
    array = np.broadcast_to(array, (size,)).astype(float)
    bad = ~np.isfinite(array) | (array < low) | ((array >= high) if high_open else (array > high))
    if bad.any():
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in [{low}, {high}{bracket}; got {array[bad][0]!r}")
    return array


def _model(n_voters, shares, dispersion, counts=None):
    n = _int_array(n_voters, "n_voters")
    p = _unit_floats(shares, n.size, "shares", 0.0, 1.0)
    rho = _unit_floats(dispersion, n.size, "dispersion", 0.0, 1.0, high_open=True)
    x = None
    if counts is not None:
        x = _int_array(counts, "counts")
        if x.size != n.size:
            raise ValueError(f"counts has {x.size} values for {n.size} stations (n_voters)")
        if np.any(x > n):
            i = int(np.argmax(x > n))
            raise ValueError(f"a count exceeds its station's n_voters (station {i}: {x[i]} > {n[i]})")
    return n, p, rho, x


def _alternative(alternative: str) -> str:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    return alternative


# ---------------------------------------------------------------------------------------------------
# the count model


def count_pmf(n_voters, shares, dispersion=0.0) -> np.ndarray:
    """P(X_i = k) for k = 0..max(n): one row per station (zero beyond the station's ``n_i``).

    >>> count_pmf([2], 0.5).round(3).tolist()
    [[0.25, 0.5, 0.25]]
    """
    n, p, rho, _ = _model(n_voters, shares, dispersion)
    return np.exp(_log_pmf(n, p, rho, np.arange(int(n.max(initial=0)) + 1)))


def _log_pmf(n: np.ndarray, p: np.ndarray, rho: np.ndarray, k: np.ndarray) -> np.ndarray:
    n_, p_, rho_, k_ = n[:, None], p[:, None], rho[:, None], k[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = stats.binom.logpmf(k_, n_, p_)
        beta = (rho_ > 0) & (p_ > 0) & (p_ < 1)
        if beta.any():
            a, b = p_ * (1 - rho_) / rho_, (1 - p_) * (1 - rho_) / rho_
            out = np.where(beta, stats.betabinom.logpmf(k_, n_, np.where(beta, a, 1.0), np.where(beta, b, 1.0)), out)
    return np.where(k_ <= n_, out, -np.inf)


def _conditional_moments(n, p, rho, f, min_count: int = 0):
    """Per station: P(X ≥ min_count), E[f(X) | X ≥ min_count], Var[f(X) | X ≥ min_count].

    ``f`` maps an integer array of counts to values. Stations sharing (n, p, ρ) are computed once; the
    probability matrix is built in blocks so memory stays bounded.
    """
    m = n.size
    tail, mean, var = np.zeros(m), np.full(m, np.nan), np.full(m, np.nan)
    if m == 0:
        return tail, mean, var
    keys, inverse = np.unique(np.column_stack([n, p, rho]), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    kn, kp, krho = keys[:, 0].astype(np.int64), keys[:, 1], keys[:, 2]
    k = np.arange(int(kn.max()) + 1)
    fk = np.asarray(f(k), dtype=float)
    t, mu, v = np.zeros(len(keys)), np.full(len(keys), np.nan), np.full(len(keys), np.nan)
    rows = max(1, _BLOCK_CELLS // k.size)
    for start in range(0, len(keys), rows):
        block = slice(start, start + rows)
        log = _log_pmf(kn[block], kp[block], krho[block], k)
        log = np.where(k[None, :] >= min_count, log, -np.inf)
        log_tail = special.logsumexp(log, axis=1, keepdims=True)
        t[block] = np.minimum(np.exp(log_tail[:, 0]), 1.0)
        with np.errstate(invalid="ignore"):
            w = np.exp(log - log_tail)  # conditional pmf; NaN rows where the tail is empty
        mu[block] = (w * fk).sum(axis=1)
        v[block] = np.maximum((w * fk**2).sum(axis=1) - mu[block] ** 2, 0.0)
    return t[inverse], mu[inverse], v[inverse]


def region_shares(counts, n_voters, groups=None) -> np.ndarray:
    """Each station's region share: Σcounts / Σn_voters over the stations of its group (one group if None).

    >>> region_shares([10, 30, 5], [100, 100, 50], groups=["a", "a", "b"]).tolist()
    [0.2, 0.2, 0.1]
    """
    x, n = _int_array(counts, "counts"), _int_array(n_voters, "n_voters")
    if x.size != n.size:
        raise ValueError(f"counts has {x.size} values for {n.size} stations (n_voters)")
    if groups is None:
        g = np.zeros(x.size, dtype=np.int64)
    else:
        groups = np.asarray(groups)
        if groups.shape != x.shape:
            raise ValueError(f"groups has {groups.size} values for {x.size} stations")
        _, g = np.unique(groups, return_inverse=True)
        g = g.ravel()
    num, den = np.bincount(g, weights=x), np.bincount(g, weights=n)
    if np.any(den == 0):
        raise ValueError("a group has no voters (Σ n_voters = 0): its share is undefined")
    return (num / den)[g]


def estimate_dispersion(counts, n_voters, shares) -> float:
    """Moment estimate of the beta-binomial intra-station correlation ρ, clipped to [0, 0.999].

    Solves Σ(x - np)² = Σ np(1-p)(1 + (n-1)ρ); ρ = 0 is the binomial (no excess variance).

    >>> estimate_dispersion([50, 50, 50], [100, 100, 100], 0.5)
    0.0
    """
    n, p, _, x = _model(n_voters, shares, 0.0, counts)
    base = n * p * (1 - p)
    denominator = (base * (n - 1)).sum()
    if denominator <= 0:
        return 0.0
    return float(np.clip((((x - n * p) ** 2).sum() - base.sum()) / denominator, 0.0, 0.999))


# ---------------------------------------------------------------------------------------------------
# tests


def poisson_binomial_pmf(probs) -> np.ndarray:
    """The exact distribution of a sum of independent Bernoulli(q_i): P(S = s) for s = 0..m.

    >>> poisson_binomial_pmf([0.5, 0.5]).tolist()
    [0.25, 0.5, 0.25]
    """
    q = _unit_floats(probs, np.size(probs), "probs", 0.0, 1.0)
    pmf = np.zeros(q.size + 1)
    pmf[0] = 1.0
    for j, qj in enumerate(q, start=1):
        pmf[1 : j + 1] = pmf[1 : j + 1] * (1 - qj) + pmf[:j] * qj
        pmf[0] *= 1 - qj
    return pmf


def tail_pvalue(lower: float, upper: float, alternative: str) -> float:
    """P-value from P(S ≤ s) and P(S ≥ s)."""
    if alternative == "greater":
        return float(min(1.0, upper))
    if alternative == "less":
        return float(min(1.0, lower))
    return float(min(1.0, 2 * min(lower, upper)))


def _bernoulli_sum_test(indicators: np.ndarray | None, q: np.ndarray, alternative: str, method: str) -> NullResult:
    m = q.size
    expected_count, variance = float(q.sum()), float((q * (1 - q)).sum())
    expected, std = (expected_count / m, np.sqrt(variance) / m) if m else (float("nan"), float("nan"))
    if indicators is None or m == 0:
        return NullResult(float("nan"), m, expected, None, float(std), None)
    s = int(indicators.sum())
    statistic = s / m
    if std > 0:
        z = (statistic - expected) / std
    else:
        z = 0.0 if statistic == expected else float(np.copysign(np.inf, statistic - expected))
    if method not in ("auto", "exact", "normal"):
        raise ValueError(f"method must be 'auto', 'exact' or 'normal', got {method!r}")
    if method == "exact" or (method == "auto" and m <= EXACT_MAX_UNITS):
        pmf = poisson_binomial_pmf(q)
        lower, upper = pmf[: s + 1].sum(), pmf[s:].sum()
    elif variance > 0:  # normal with a continuity correction
        sd = np.sqrt(variance)
        lower = stats.norm.cdf((s + 0.5 - expected_count) / sd)
        upper = stats.norm.sf((s - 0.5 - expected_count) / sd)
    else:
        lower, upper = float(s >= expected_count), float(s <= expected_count)
    return NullResult(statistic, m, expected, tail_pvalue(lower, upper, alternative), float(std), float(z))


def expected_last_digit_05(n_voters, shares, counts=None, *, min_count: int = 0, dispersion=0.0,
                           alternative: str = "two-sided", method: str = "auto") -> NullResult:  # fmt: skip
    """C05s against its exact expectation for these stations: share of counts ending in 0 or 5.

    ``expected`` is ``Σ_i P(X_i mod 10 ∈ {0,5}) / m`` under the count model of the module docstring;
    with ``counts`` the observed share is the ``statistic`` and ``pvalue`` is the Poisson-binomial tail
    (``alternative="greater"``: an excess of 0s and 5s, the rounding signature). ``method`` is
    ``"exact"``, ``"normal"`` or ``"auto"`` (exact up to :data:`EXACT_MAX_UNITS` stations).
    ``min_count > 0`` restricts to the counts ≥ min_count, conditionally as in
    :func:`expected_second_digit_mean` (the Toolkit's C05s uses every count, ``min_count = 0``; small
    counts carry the zeros of weak candidates, whose excess over the model is common in clean data).

    >>> r = expected_last_digit_05([4, 4], 0.5, counts=[0, 2])
    >>> round(r.expected, 4), r.statistic      # P(X ∈ {0}) = 1/16 per station
    (0.0625, 0.5)
    >>> round(r.pvalue, 4)            # 2·P(S ≥ 1) = 2·(1 - (15/16)²)
    0.2422
    """
    n, p, rho, x = _model(n_voters, shares, dispersion, counts)
    _check_min_count(min_count)
    tail, q, _ = _conditional_moments(n, p, rho, lambda k: np.isin(k % 10, (0, 5)), min_count)
    alternative = _alternative(alternative)
    if x is None:
        if min_count == 0:
            return _bernoulli_sum_test(None, np.clip(q, 0.0, 1.0), alternative, method)
        keep = tail > 0
        expected = float((tail[keep] * q[keep]).sum() / tail[keep].sum()) if keep.any() else float("nan")
        return NullResult(float("nan"), int(keep.sum()), expected)
    keep = x >= min_count
    _check_possible(keep, q, x, p)
    return _bernoulli_sum_test(np.isin(x[keep] % 10, (0, 5)), np.clip(q[keep], 0.0, 1.0), alternative, method)


def _check_min_count(min_count) -> None:
    if not (isinstance(min_count, (int, np.integer)) and not isinstance(min_count, bool) and min_count >= 0):
        raise ValueError(f"min_count must be a non-negative integer, got {min_count!r}")


def _check_possible(keep, mu, x, p) -> None:
    bad = keep & ~np.isfinite(mu)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"station {i}'s count {x[i]} is impossible under its share {p[i]!r}")


def second_digits(k: np.ndarray) -> np.ndarray:
    """The second digit of each count (0 below 10)."""
    k = np.asarray(k, dtype=np.int64)
    out = np.zeros(k.shape, dtype=np.int64)
    big = k >= 10
    out[big] = k[big] // 10 ** (np.floor(np.log10(k[big])).astype(np.int64) - 1) % 10
    return out


def _digit_mean_test(n_voters, shares, counts, digit, min_count, dispersion, alternative) -> NullResult:
    n, p, rho, x = _model(n_voters, shares, dispersion, counts)
    _check_min_count(min_count)
    if digit == "second" and min_count < 10:
        raise ValueError("the second digit needs min_count ≥ 10 (counts below 10 have one digit)")
    alternative = _alternative(alternative)
    f = second_digits if digit == "second" else (lambda k: k % 10)
    tail, mu, var = _conditional_moments(n, p, rho, f, min_count)
    if x is None:  # no observed counts: the expectation over the stations that can reach min_count
        keep = tail > 0
        w = tail[keep]
        expected = float((w * mu[keep]).sum() / w.sum()) if w.size else float("nan")
        return NullResult(float("nan"), int(keep.sum()), expected)
    keep = x >= min_count
    m = int(keep.sum())
    if m == 0:
        return NullResult(float("nan"), 0, float("nan"))
    _check_possible(keep, mu, x, p)
    statistic = float(f(x[keep]).mean())
    expected, std = float(mu[keep].mean()), float(np.sqrt(var[keep].sum()) / m)
    z = (statistic - expected) / std if std > 0 else 0.0
    lower, upper = stats.norm.cdf(z), stats.norm.sf(z)
    return NullResult(statistic, m, expected, tail_pvalue(lower, upper, alternative), std, float(z))


def expected_second_digit_mean(n_voters, shares, counts=None, *, min_count: int = 10, dispersion=0.0,
                               alternative: str = "two-sided") -> NullResult:  # fmt: skip
    """2BL against its exact expectation: mean second digit of the counts ≥ ``min_count``.

    Conditional on which stations have a count ≥ min_count, ``expected`` is the mean over them of
    ``E[d₂(X_i) | X_i ≥ min_count]``; the p-value is the normal approximation of the mean with the
    summed conditional variances. Without ``counts``, ``expected`` is the unconditional expectation of
    the statistic's numerator over its denominator, ``Σ P_i E_i / Σ P_i`` with ``P_i = P(X_i ≥ 10)``.

    >>> r = expected_second_digit_mean([20], 0.5, counts=[10])   # X ~ Bin(20, 1/2) given X ≥ 10
    >>> r.statistic, round(r.expected, 3)
    (0.0, 1.498)
    """
    return _digit_mean_test(n_voters, shares, counts, "second", min_count, dispersion, alternative)


def expected_last_digit_mean(n_voters, shares, counts=None, *, min_count: int = 10, dispersion=0.0,
                             alternative: str = "two-sided") -> NullResult:  # fmt: skip
    """LastC against its exact expectation: mean last digit (``X mod 10``) of the counts ≥ ``min_count``.

    Same conditional construction as :func:`expected_second_digit_mean`; the textbook value is 4.5.

    >>> r = expected_last_digit_mean([1000], 0.5)                 # wide counts: nearly uniform digits
    >>> round(r.expected, 3)
    4.5
    """
    return _digit_mean_test(n_voters, shares, counts, "last", min_count, dispersion, alternative)


def integer_percent_probability(denominators, tolerance: float = 0.0, exclude_ends: bool = False) -> np.ndarray:
    """P(|100·k/d − nearest integer| ≤ tolerance) for k uniform on 0..d (1..d−1 with ``exclude_ends``).

    With ``tolerance = 0`` this is ``(gcd(d, 100) + 1) / (d + 1)``: 100k/d is an integer exactly when k
    is a multiple of d / gcd(d, 100). NaN where undefined (d = 0, or d ≤ 1 with ``exclude_ends``).

    >>> integer_percent_probability([100, 200, 7, 0]).round(4).tolist()
    [1.0, 0.5025, 0.25, nan]
    """
    d = _int_array(denominators, "denominators")
    if not (np.isfinite(tolerance) and 0 <= tolerance <= 50):
        raise ValueError(f"tolerance must lie in [0, 50] percentage points, got {tolerance!r}")
    out = np.full(d.size, np.nan)
    for value in np.unique(d):
        k = np.arange(1, value) if exclude_ends else np.arange(value + 1)
        if value == 0 or k.size == 0:
            continue
        r = (100 * k) % value  # distance to the nearest integer percent is min(r, d - r) / d
        out[d == value] = np.mean(np.minimum(r, value - r) <= tolerance * value + 1e-9 * value)
    return out


def expected_integer_percent(numerators, denominators, *, tolerance: float = 0.0, exclude_ends: bool = False,
                             alternative: str = "greater", method: str = "auto") -> NullResult:  # fmt: skip
    """Kobak et al.'s integer-percentage test: are percentages 100·k/d integers more often than chance?

    **Null**: the numerator is uniform over the fractions available at its denominator, k ~ U{0..d}
    (k ~ U{1..d−1} with ``exclude_ends``, which also drops units reporting 0% or 100%), so unit ``i``
    has an integer percentage with probability ``q_i`` = :func:`integer_percent_probability`
    (within ``tolerance`` percentage points). The count of integer percentages is Poisson-binomial
    with mean Σq_i; ``statistic`` and ``expected`` are shares of units, the p-value is one-sided
    (``"greater"``: an excess of integers) by default. Units with d = 0 are dropped.

    **Caveat**: small or round denominators make integers common by arithmetic, not by fraud: every k
    gives an integer percent when d divides 100 (d = 100 → q = 1, d = 50 → q = 1), d = 200 gives
    q ≈ 1/2, and q ≈ 1/100 only for denominators coprime to 100 in the thousands. Uniformity of k over
    0..d is a local-smoothness assumption; it fails where k piles at 0 or d (use ``exclude_ends``).

    >>> r = expected_integer_percent([1, 1, 50], [3, 7, 100])
    >>> round(r.expected, 4), r.statistic   # q = (2/4 + 2/8 + 1) / 3; only 50/100 is an integer
    (0.5833, 0.3333333333333333)
    """
    k, d = _int_array(numerators, "numerators"), _int_array(denominators, "denominators")
    if k.size != d.size:
        raise ValueError(f"numerators has {k.size} values for {d.size} denominators")
    if np.any(k > d):
        raise ValueError("a numerator exceeds its denominator (percentages above 100 are out of scope)")
    keep = d > 0
    if exclude_ends:
        keep &= (k > 0) & (k < d)
    k, d = k[keep], d[keep]
    q = integer_percent_probability(d, tolerance, exclude_ends)
    r = (100 * k) % np.maximum(d, 1)
    hits = np.minimum(r, d - r) <= tolerance * d + 1e-9 * d
    return _bernoulli_sum_test(hits, np.clip(q, 0.0, 1.0), _alternative(alternative), method)

"""Compiled inner loops of the regional statistics (numba): what a complete form costs per region.

Each regional update is a handful of small array computations -- a station's digit null over its
0..n possible counts, a kelurahan's leave-one-out medians, a 21×21 corner count -- and in numpy each
of their dozens of calls costs microseconds of overhead on arrays of a few hundred numbers. Compiled,
a complete form's regional work drops several-fold, the same for the stream and the offline replay
(both call these through :mod:`.regional` and :mod:`.monitor`; nothing else imports this module).

Compiled at first use and cached on disk (numba's cache: beside this file, or under ``NUMBA_CACHE_DIR``,
or the user's cache directory, whichever can be written): a fresh install's first use takes ~5 s, later
processes load the cache. Where nothing can be written (a read-only file system without
``NUMBA_CACHE_DIR``; the container image sets it to /tmp/numba), every process compiles them anew.
"""

from __future__ import annotations

import math

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numba import njit

F = TypeVar("F", bound=Callable)


def compiled(function: F) -> F:
    """``numba.njit`` with an on-disk cache where numba finds a writable place for one, else without."""
    try:
        return njit(cache=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available": compile in memory at first use
        return njit(function)


#: A pmf value this far below the largest (in natural log) is left out of the expectations: each is
#: below 2e-22 of the mode, all of them together below 1e-17 of the total at any count.
NEGLIGIBLE_LOG = -50.0


@compiled
def station_nulls(n: int, x: np.ndarray, alpha: np.ndarray, beta: np.ndarray, with_prior: np.ndarray,
                  table: np.ndarray, probabilities: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per count ``x[r]`` of a station of ``n`` votes, the expectations of the columns of ``table`` (its
    rows: the digit events of the counts 0..n) under ``BetaBinomial(n, alpha[r] + x[r], beta[r] + n − x[r])``
    where ``with_prior[r]``, else under ``Binomial(n, x[r] / n)``; the columns listed in ``probabilities``
    are capped at 1 (a sum of probabilities can pass it by an ulp)."""
    m, columns = x.shape[0], table.shape[1]
    out = np.zeros((m, columns))
    log_pmf = np.empty(n + 1)
    for r in range(m):
        count = x[r]
        if with_prior[r]:
            top = _beta_binomial_log_pmf(n, alpha[r] + count, beta[r] + n - count, log_pmf)
        elif count == 0 or count == n:  # a share of 0 or 1 has no spread: the count itself is expected
            for c in range(columns):
                out[r, c] = table[count, c]
            continue
        else:
            top = _binomial_log_pmf(n, count / n, log_pmf)
        total = 0.0
        for k in range(n + 1):
            gap = log_pmf[k] - top
            if gap < NEGLIGIBLE_LOG:
                continue
            weight = math.exp(gap)
            total += weight
            for c in range(columns):
                out[r, c] += weight * table[k, c]
        for c in range(columns):
            out[r, c] /= total
        for c in probabilities:
            out[r, c] = min(out[r, c], 1.0)
    return out


@compiled
def binomial_at_least(x: int, n: int, p: float) -> float:
    """P(X ≥ x) for X ~ Binomial(n, p): the upper tail summed, not 1 − cdf (whose rounding floors a small
    p-value at ~1e-16), and without scipy's per-call overhead (~100 µs), once per region and test at every
    regional assessment."""
    if x <= 0 or p >= 1.0:
        return 1.0
    if x > n or p <= 0.0:
        return 0.0
    log_pmf = np.empty(n + 1)
    return _share_at_least(log_pmf, x, _binomial_log_pmf(n, p, log_pmf))


@compiled
def beta_binomial_at_least(x: int, n: int, a: float, b: float) -> float:
    """P(X ≥ x) for X ~ BetaBinomial(n, a, b), as :func:`binomial_at_least`."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    log_pmf = np.empty(n + 1)
    return _share_at_least(log_pmf, x, _beta_binomial_log_pmf(n, a, b, log_pmf))


@compiled
def _binomial_log_pmf(n: int, p: float, out: np.ndarray) -> float:
    """Binomial(n, p)'s log pmf over 0..n into ``out``, less log pmf(0), from pmf(k+1)/pmf(k) (no overflow
    at any n); returns the largest."""
    odds = math.log(p) - math.log1p(-p)
    out[0] = top = 0.0
    for k in range(n):
        out[k + 1] = out[k] + math.log((n - k) / (k + 1)) + odds
        top = max(top, out[k + 1])
    return top


@compiled
def _beta_binomial_log_pmf(n: int, a: float, b: float, out: np.ndarray) -> float:
    """BetaBinomial(n, a, b)'s log pmf over 0..n into ``out``, as :func:`_binomial_log_pmf`."""
    out[0] = top = 0.0
    for k in range(n):
        out[k + 1] = out[k] + math.log((n - k) * (k + a) / ((k + 1) * (n - k - 1 + b)))
        top = max(top, out[k + 1])
    return top


@compiled
def _share_at_least(log_pmf: np.ndarray, x: int, top: float) -> float:
    """The share of the mass at ``x`` and above of a pmf given by its logs up to a constant, the largest ``top``."""
    total = above = 0.0
    for k in range(log_pmf.shape[0]):
        weight = math.exp(log_pmf[k] - top)
        total += weight
        if k >= x:
            above += weight
    return min(above / total, 1.0)


@compiled
def second_digit(count: int) -> int:
    """The second digit from the left of a count of at least 10."""
    while count >= 100:
        count //= 10
    return count % 10


def count_sum_fields(digit_statistics: tuple[str, ...], skewed: tuple[str, ...]) -> list[str]:
    """The order of :func:`count_sums`' output (names of :data:`~.regional.FIELDS`): the sums over counts,
    then per digit statistic (last digit, second digit, repeated, adjacent) observed, a, c, d, e, then
    the skewed statistics' a3, a2b, ab2, then expected and observed last digits."""
    return ["c05_m", "c05_hits", "c05_q", "c05_v", "c05_k", "b", "f", "f3", "m10",
            *(f"{g}_{part}" for g in digit_statistics for part in ("obs", "a", "c", "d", "e")),
            *(f"{g}_{part}" for g in skewed for part in ("a3", "a2b", "ab2")),
            *(f"le{d}" for d in range(10)), *(f"ld{d}" for d in range(10))]  # fmt: skip


@compiled
def count_sums(x: np.ndarray, nulls: np.ndarray, skewed: np.ndarray) -> np.ndarray:
    """A station's sums over its counts ``x`` with their :func:`station_nulls` rows (columns: q05, tail,
    then a and c of each of the 4 digit statistics, then P(X ≥ 10, last digit = d)), in the order of
    :func:`count_sum_fields`; ``skewed`` lists the digit statistics whose third cumulant is kept."""
    statistics = 4
    out = np.zeros(9 + 5 * statistics + 3 * skewed.shape[0] + 20)
    s_base = 9 + 5 * statistics
    le_base = s_base + 3 * skewed.shape[0]
    observed = np.zeros(statistics)
    for r in range(x.shape[0]):
        count = x[r]
        q05, tail = nulls[r, 0], nulls[r, 1]
        out[0] += 1.0
        out[1] += 1.0 if count % 5 == 0 else 0.0
        out[2] += q05
        out[3] += q05 * (1 - q05)
        out[4] += q05 * (1 - q05) * (1 - 2 * q05)
        out[5] += tail
        out[6] += tail * tail
        out[7] += tail * tail * tail
        big = count >= 10
        last, tens = count % 10, count // 10 % 10
        if big:
            out[8] += 1.0
            observed[0] = last
            observed[1] = second_digit(count)
            observed[2] = 1.0 if tens == last else 0.0
            observed[3] = 1.0 if abs(tens - last) == 1 else 0.0
        for g in range(statistics):
            a, c = nulls[r, 2 + 2 * g], nulls[r, 3 + 2 * g]
            base = 9 + 5 * g
            if big:
                out[base] += observed[g]
            out[base + 1] += a
            out[base + 2] += c
            out[base + 3] += a * a
            out[base + 4] += a * tail
        for i in range(skewed.shape[0]):
            a = nulls[r, 2 + 2 * skewed[i]]
            out[s_base + 3 * i] += a * a * a
            out[s_base + 3 * i + 1] += a * a * tail
            out[s_base + 3 * i + 2] += a * tail * tail
        for d in range(10):
            out[le_base + d] += nulls[r, 10 + d]
        if big:
            out[le_base + 10 + last] += 1.0
    return out


@compiled
def neighbour_residuals(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a kelurahan's logits (rows: TPS), each TPS's value less the median of the column's
    others, scaled by ``sqrt(1 + π / (2 (n − 1)))``; and per column ``[n, TPS with residual ≥ edge for
    each edge]``."""
    n, columns = values.shape
    scale = math.sqrt(1 + math.pi / (2 * (n - 1)))
    lo, hi = (n - 2) // 2, (n - 1) // 2
    residuals = np.empty((n, columns))
    tails = np.zeros((columns, edges.shape[0] + 1), dtype=np.int16)
    for c in range(columns):
        column = values[:, c].copy()
        ranked = np.sort(column)
        # leaving out a value of rank k leaves the others' middle one or two at ranks lo and hi, each
        # moved up by one where it is at or past k: three medians per column; ties leave the same others
        below = (ranked[lo + 1] + ranked[hi + 1]) / 2
        between = (ranked[lo] + ranked[hi + 1]) / 2
        above = (ranked[lo] + ranked[hi]) / 2
        tails[c, 0] = n
        for i in range(n):
            rank = np.searchsorted(ranked, column[i])  # the first of its ties: the same others
            median = below if rank <= lo else (between if rank <= hi else above)
            residual = (column[i] - median) / scale
            residuals[i, c] = residual
            for e in range(edges.shape[0]):
                if residual >= edges[e]:
                    tails[c, e + 1] += 1
    return residuals, tails


@compiled
def corner_count(cells: np.ndarray, without: np.ndarray, i: int, j: int) -> tuple[int, int]:
    """Klimek's corner rank of a TPS in cell ``(i, j)`` among the TPS of ``cells`` less ``without``, full
    conformal: each peer's score is the number of peers at least as high on both axes, the TPS itself
    counted where it is; returns (peers whose score is at most the TPS's own, peers)."""
    rows, cols = cells.shape
    peers = cells - without
    as_high = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    for r in range(rows - 1, -1, -1):
        for c in range(cols - 1, -1, -1):
            as_high[r, c] = peers[r, c] + as_high[r + 1, c] + as_high[r, c + 1] - as_high[r + 1, c + 1]
    own = as_high[i, j] + 1
    count = total = 0
    for r in range(rows):
        for c in range(cols):
            total += peers[r, c]
            score = as_high[r, c] + (1 if r <= i and c <= j else 0)
            if score <= own:
                count += peers[r, c]
    return count, total

"""Election-forensics statistics as plain functions returning named results (scipy.stats style).

Definitions follow the Election Forensics Toolkit (Mebane/Kalinin) and benford_py, so that their
published reference numbers reproduce (see tests/test_forensics.py):

* ``2BL``: mean second digit of the counts ≥ 10 (Benford's expectation 4.187);
* ``C05s``: share of counts whose last digit is 0 or 5 (uniform expectation 0.2);
* ``P05s``: share of units whose ``round(100 · pct)`` (half to even, pct capped at 1) ends in 0 or 5;
* skew and kurtosis: population moments, kurtosis not excess;
* ``DipT``: Hartigan's dip test p-value (the ``diptest`` package) on the uncapped pct;
* Benford first, second and first-two digit tests: χ² and Nigrini's mean absolute deviation.

Textbook expectations are the wrong null for TPS counts bounded by ~300 voters; these functions take
an ``expected`` value where the caller has a data-derived one, and report it beside the statistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import diptest
import numpy as np
from scipy import stats

BENFORD_2BL = 4.187
UNIFORM_05 = 0.2


@dataclass(frozen=True)
class StatResult:
    """A statistic over ``n`` units, with its expectation under the null and a p-value where defined."""

    statistic: float
    n: int
    expected: float | None = None
    pvalue: float | None = None


@dataclass(frozen=True)
class DigitTestResult:
    """Observed digit counts against expected proportions: χ², its p-value, and Nigrini's MAD."""

    digits: np.ndarray
    counts: np.ndarray
    expected: np.ndarray
    statistic: float
    pvalue: float
    mad: float
    n: int


def _counts(values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError("expected a one-dimensional sequence of counts")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError("counts must be non-negative integers")
    return array.astype(np.int64)


def second_digit_mean(counts, expected: float = BENFORD_2BL) -> StatResult:
    """2BL: the mean second digit of the counts ≥ 10.

    >>> second_digit_mean([12, 15, 7, 230]).statistic
    3.3333333333333335
    """
    c = _counts(counts)
    c = c[c >= 10]
    if c.size == 0:
        return StatResult(float("nan"), 0, expected)
    digits = c // 10 ** (np.floor(np.log10(c)).astype(np.int64) - 1) % 10
    return StatResult(float(digits.mean()), int(c.size), expected)


def last_digit_05_share(counts, expected: float = UNIFORM_05) -> StatResult:
    """C05s: the share of counts whose last digit is 0 or 5."""
    c = _counts(counts)
    if c.size == 0:
        return StatResult(float("nan"), 0, expected)
    return StatResult(float(np.isin(c % 10, (0, 5)).mean()), int(c.size), expected)


def percent_05_share(numerators, denominators, expected: float = UNIFORM_05) -> StatResult:
    """P05s: the share of units whose rounded percentage (capped at 100) ends in 0 or 5.

    A unit with 0 of 0 counts in ``n`` but never ends in 0 or 5 (as in the Toolkit).
    """
    num, den = _counts(numerators), _counts(denominators)
    if num.shape != den.shape:
        raise ValueError("numerators and denominators differ in length")
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.minimum(num / den, 1.0)
    rounded = np.round(100 * pct)  # numpy rounds half to even, like R
    ends = np.isin(rounded % 10, (0, 5)) & np.isfinite(rounded)
    return StatResult(float(ends.mean()) if ends.size else float("nan"), int(ends.size), expected)


def _finite(pct) -> np.ndarray:
    array = np.asarray(pct, dtype=float)
    return array[np.isfinite(array)]


def skewness(pct) -> StatResult:
    p = _finite(pct)
    return StatResult(float(stats.skew(p)), int(p.size))


def kurtosis(pct) -> StatResult:
    """Population kurtosis, not excess (a normal distribution has 3)."""
    p = _finite(pct)
    return StatResult(float(stats.kurtosis(p, fisher=False)), int(p.size), expected=3.0)


def dip_test(pct) -> StatResult:
    """Hartigan's dip statistic and its p-value (unimodality is the null)."""
    p = _finite(pct)
    dip, pvalue = diptest.diptest(p)
    return StatResult(float(dip), int(p.size), pvalue=float(pvalue))


def _digit_test(digits: np.ndarray, support: np.ndarray, proportions: np.ndarray) -> DigitTestResult:
    n = digits.size
    observed = np.array([(digits == d).sum() for d in support])
    expected = proportions * n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    return DigitTestResult(support, observed, expected, chi2, float(stats.chi2.sf(chi2, support.size - 1)),
                           float(np.abs(observed / n - proportions).mean()), int(n))  # fmt: skip


def _leading(values, width: int) -> np.ndarray:
    v = _counts(values)
    v = v[v >= 10 ** (width - 1)]
    return v // 10 ** (np.floor(np.log10(v)).astype(np.int64) - (width - 1))


def benford_first_digit(values) -> DigitTestResult:
    support = np.arange(1, 10)
    return _digit_test(_leading(values, 1), support, np.log10(1 + 1 / support))


def benford_second_digit(values) -> DigitTestResult:
    support = np.arange(10)
    proportions = np.array([np.log10(1 + 1 / (10 * np.arange(1, 10) + d)).sum() for d in support])
    return _digit_test(_leading(values, 2) % 10, support, proportions)


def benford_first_two_digits(values) -> DigitTestResult:
    support = np.arange(10, 100)
    return _digit_test(_leading(values, 2), support, np.log10(1 + 1 / support))

"""The compiled kernels (detectors/kernels.py) against the plain definitions they replace: the station
null and the upper tails against scipy's distributions, the per-count sums against the loop written out in Python, the
kelurahan residuals and the corner rank against their numpy forms (those exactly)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from pantau.detectors import kernels
from pantau.detectors.regional import (
    BERNOULLI_DIGIT_TESTS,
    DIGIT_STATISTICS,
    EXPECTATIONS,
    FIELDS,
    IX,
    NEIGHBOUR_EDGES,
    _digit_table,
    count_expectations,
    posterior_expectations,
)


def _expected(pmf: np.ndarray, n: int) -> np.ndarray:
    """EXPECTATIONS of a pmf over 0..n, by their definitions."""
    k = np.arange(n + 1)
    big, last, tens = k >= 10, k % 10, k // 10 % 10
    second = np.array([int(str(v)[1]) if v >= 10 else 0 for v in k])
    out = [pmf[k % 5 == 0].sum(), pmf[big].sum()]
    for g in (last, second, (tens == last).astype(float), (np.abs(tens - last) == 1).astype(float)):
        out += [(pmf * big * g).sum(), (pmf * big * g * g).sum()]
    out += [pmf[big & (last == d)].sum() for d in range(10)]
    return np.array(out)


@pytest.mark.parametrize("n", [1, 9, 37, 240, 497, 9_000])
def test_the_station_null_is_the_binomial_or_beta_binomial_digit_expectation(n):
    rng = np.random.default_rng(n)
    k = np.arange(n + 1)
    for x in sorted({0, 1, n // 3, n // 2, n - 1, n, int(rng.integers(0, n + 1))}):
        assert count_expectations(n, x) == pytest.approx(_expected(stats.binom.pmf(k, n, x / n), n), rel=1e-10, abs=1e-13)
        for alpha, beta in ((0.3, 40.0), (8.0, 12.0), (150.0, 0.2), (0.05, 0.05)):  # J-, hump-, U-shaped posteriors
            row = posterior_expectations(n, np.array([x]), np.array([alpha]), np.array([beta]))[0]
            exact = _expected(stats.betabinom.pmf(k, n, alpha + x, beta + n - x), n)
            assert row == pytest.approx(exact, rel=1e-9, abs=1e-13), (x, alpha, beta)
            assert row[[0, 1, *range(10, len(EXPECTATIONS))]].max() <= 1.0


def _count_sums_by_hand(x: list[int], nulls: list[list[float]]) -> dict[str, float]:
    """The per-count sums of a station as contribution() added them up field by field."""
    v = dict.fromkeys(kernels.count_sum_fields(DIGIT_STATISTICS, BERNOULLI_DIGIT_TESTS), 0.0)
    for count, (q05, tail, *rest) in zip(x, nulls):
        v["c05_m"] += 1
        v["c05_hits"] += count % 5 == 0
        v["c05_q"] += q05
        v["c05_v"] += q05 * (1 - q05)
        v["c05_k"] += q05 * (1 - q05) * (1 - 2 * q05)
        v["b"] += tail
        v["f"] += tail * tail
        v["f3"] += tail * tail * tail
        last, tens = count % 10, count // 10 % 10
        observed = (last, int(str(count)[1]) if count >= 10 else 0, float(tens == last), float(abs(tens - last) == 1))
        for i, g in enumerate(DIGIT_STATISTICS):
            a = rest[2 * i]
            v[f"{g}_a"] += a
            v[f"{g}_c"] += rest[2 * i + 1]
            v[f"{g}_d"] += a * a
            v[f"{g}_e"] += a * tail
            if count >= 10:
                v[f"{g}_obs"] += observed[i]
        for g in BERNOULLI_DIGIT_TESTS:
            a = rest[2 * DIGIT_STATISTICS.index(g)]
            v[f"{g}_a3"] += a * a * a
            v[f"{g}_a2b"] += a * a * tail
            v[f"{g}_ab2"] += a * tail * tail
        for d in range(10):
            v[f"le{d}"] += rest[8 + d]
        if count >= 10:
            v["m10"] += 1
            v[f"ld{last}"] += 1
    return v


def test_count_sums_are_the_field_by_field_sums_exactly():
    rng = np.random.default_rng(3)
    skewed = np.array([DIGIT_STATISTICS.index(g) for g in BERNOULLI_DIGIT_TESTS])
    names = kernels.count_sum_fields(DIGIT_STATISTICS, BERNOULLI_DIGIT_TESTS)
    assert set(names) <= set(FIELDS) and len(set(names)) == len(names)
    for m in (1, 3, 18, 40):
        x = rng.integers(0, 1200, m)
        x[: m // 3] = rng.integers(0, 12, m // 3)  # small counts: below 10, and 10 and 11
        nulls = rng.random((m, len(EXPECTATIONS)))
        sums = kernels.count_sums(x, nulls, skewed)
        assert dict(zip(names, sums.tolist())) == _count_sums_by_hand(x.tolist(), nulls.tolist())
    assert [IX[name] for name in names][:2] == [IX["c05_m"], IX["c05_hits"]]


def _residuals_by_numpy(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = values.shape[0]
    order = np.argsort(values, axis=0, kind="stable")
    ranked = np.take_along_axis(values, order, axis=0)
    middle = np.array([(n - 2) // 2, (n - 1) // 2])[None, :]
    index = middle + (middle >= np.arange(n)[:, None])  # the others' middle one or two, skipping position k
    medians = np.empty_like(values)
    np.put_along_axis(medians, order, ranked[index].mean(axis=1), axis=0)
    residuals = (values - medians) / math.sqrt(1 + math.pi / (2 * (n - 1)))
    tails = np.column_stack([np.full(values.shape[1], n), (residuals[:, :, None] >= NEIGHBOUR_EDGES).sum(axis=0)])
    return residuals, tails


def test_kelurahan_residuals_and_tails_equal_their_numpy_form_exactly():
    rng = np.random.default_rng(4)
    for n in (4, 5, 12, 31, 32):
        for columns in (1, 4, 40):
            values = rng.normal(0, 1, (n, columns))
            values[: n // 2, 0] = np.round(values[: n // 2, 0])  # ties
            residuals, tails = kernels.neighbour_residuals(values, NEIGHBOUR_EDGES)
            expected_residuals, expected_tails = _residuals_by_numpy(values)
            assert np.array_equal(residuals, expected_residuals) and np.array_equal(tails, expected_tails)


def test_corner_count_is_the_full_conformal_rank_of_the_numpy_form():
    rng = np.random.default_rng(6)
    for _ in range(200):
        cells = rng.poisson(rng.uniform(0.1, 4), (21, 21)).astype(np.int64)
        without = rng.binomial(cells, 0.3).astype(np.int64)
        i, j = (int(v) for v in rng.integers(0, 21, 2))
        peers = cells - without
        as_high = peers[::-1, ::-1].cumsum(axis=0).cumsum(axis=1)[::-1, ::-1]
        own = as_high[i, j] + 1
        as_high[: i + 1, : j + 1] += 1
        assert kernels.corner_count(cells, without, i, j) == (int(peers[as_high <= own].sum()), int(peers.sum()))


@pytest.mark.parametrize("n", [1, 7, 60, 497, 3_000])
def test_upper_tails_are_scipys_survival_functions(n):
    """P(X ≥ x) against scipy: the binomial's sf(x − 1) (exact down to 1e-300); the beta-binomial's pmf
    summed over the tail (its sf is 1 − cdf, 1e-7 off at 2e-5 with n = 3,000)."""
    rng = np.random.default_rng(n)
    for x in sorted({0, 1, n // 4, n // 2, n, n + 1, int(rng.integers(0, n + 1))}):
        for p in (1e-6, 0.03, 0.5, 0.97):
            exact = stats.binom.sf(x - 1, n, p)
            assert kernels.binomial_at_least(x, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300), (x, p)
        for a, b in ((0.4, 30.0), (12.0, 9.0), (80.0, 0.3)):
            exact = float(np.exp(logsumexp(stats.betabinom.logpmf(np.arange(x, n + 1), n, a, b)))) if x <= n else 0.0
            tail = kernels.beta_binomial_at_least(x, n, a, b)
            assert tail == pytest.approx(exact, rel=1e-9, abs=1e-300), (x, a, b)
            assert 0.0 <= tail <= 1.0
    assert kernels.binomial_at_least(1, n, 0.0) == 0.0 and kernels.binomial_at_least(1, n, 1.0) == 1.0


def test_without_a_writable_cache_the_kernels_compile_in_memory(tmp_path):
    """No place numba can write its cache to (a read-only file system without NUMBA_CACHE_DIR): the
    module still imports and computes, compiling in the process instead."""
    script = (
        "import numba.core.caching as caching\n"
        "caching.CacheImpl._locator_classes = []\n"  # numba finds nowhere to cache
        "from pantau.detectors import kernels\n"
        "import numpy as np\n"
        "print(kernels.corner_count(np.ones((3, 3), dtype=np.int64), np.zeros((3, 3), dtype=np.int64), 2, 2))\n"
        "print(type(kernels.corner_count._cache).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(1,", "9)", "NullCache"]

"""Data-derived nulls for the digit statistics: exact expectations, calibration, power, real 2024 data."""

from __future__ import annotations

import csv
import doctest
import gzip
from math import gcd

import numpy as np
import pytest
from pantau.detectors import forensics, nulls

from .conftest import shared_file


def _second_digit(x):
    return nulls.second_digits(np.asarray(x))


def test_docstring_examples():
    assert doctest.testmod(nulls, raise_on_error=False).failed == 0


# --- exact expectations against Monte Carlo ---------------------------------------------------------


@pytest.mark.parametrize("dispersion", [0.0, 0.05])
def test_exact_expectations_match_monte_carlo(dispersion):
    """Per-station expectations (C05, E[d2 | X ≥ 10], E[X mod 10 | X ≥ 10]) agree with simulation."""
    rng = np.random.default_rng(20240214)
    m, reps = 12, 40_000
    n = rng.integers(15, 300, m)
    p = rng.uniform(0.03, 0.7, m)
    if dispersion:
        a, b = p * (1 - dispersion) / dispersion, (1 - p) * (1 - dispersion) / dispersion
        x = rng.binomial(n, rng.beta(a, b, (reps, m)))
    else:
        x = rng.binomial(n, p, (reps, m))
    tail, q05, _ = nulls._conditional_moments(n, p, np.full(m, dispersion), lambda k: np.isin(k % 10, (0, 5)))
    assert np.allclose(tail, 1.0)
    mc05 = np.isin(x % 10, (0, 5)).mean(axis=0)
    assert np.all(np.abs(mc05 - q05) < 4.5 * np.sqrt(q05 * (1 - q05) / reps) + 1e-12), (mc05, q05)
    for f in (_second_digit, lambda k: k % 10):
        tail, mu, var = nulls._conditional_moments(n, p, np.full(m, dispersion), f, 10)
        big = x >= 10
        assert np.all(np.abs(big.mean(axis=0) - tail) < 4.5 * np.sqrt(tail * (1 - tail) / reps) + 1e-12)
        for i in np.flatnonzero(big.sum(axis=0) > 500):
            sample = f(x[big[:, i], i])
            assert abs(sample.mean() - mu[i]) < 4.5 * np.sqrt(var[i] / sample.size), (i, sample.mean(), mu[i])
            assert sample.var() == pytest.approx(var[i], rel=0.1)


def test_statistic_matches_forensics_module():
    """Observed statistics are exactly those of pantau.detectors.forensics."""
    rng = np.random.default_rng(1)
    n = rng.integers(0, 300, 500)
    x = rng.binomial(n, 0.3)
    p = nulls.region_shares(x, n)
    assert nulls.expected_last_digit_05(n, p, x).statistic == forensics.last_digit_05_share(x).statistic
    two_bl = forensics.second_digit_mean(x).statistic
    assert nulls.expected_second_digit_mean(n, p, x).statistic == pytest.approx(two_bl)
    assert nulls.expected_second_digit_mean(n, p, x).n == forensics.second_digit_mean(x).n


def test_wide_counts_recover_textbook_constants():
    """For counts spread over a wide range the exact expectation approaches uniform last digits."""
    n = np.full(50, 10_000)
    assert nulls.expected_last_digit_05(n, 0.5).expected == pytest.approx(0.2, abs=1e-6)
    assert nulls.expected_last_digit_mean(n, 0.5).expected == pytest.approx(4.5, abs=1e-6)


def test_poisson_binomial_exact_against_convolution_and_normal():
    rng = np.random.default_rng(3)
    q = rng.uniform(0, 1, 40)
    pmf = nulls.poisson_binomial_pmf(q)
    reference = np.array([1.0])
    for qi in q:
        reference = np.convolve(reference, [1 - qi, qi])
    assert np.allclose(pmf, reference) and pmf.sum() == pytest.approx(1.0)
    n = rng.integers(100, 300, 3000)
    x = rng.binomial(n, 0.4)
    exact = nulls.expected_last_digit_05(n, 0.4, x, method="exact")
    normal = nulls.expected_last_digit_05(n, 0.4, x, method="normal")
    assert exact.expected == normal.expected
    assert exact.pvalue == pytest.approx(normal.pvalue, abs=0.02)


# --- calibration and power ---------------------------------------------------------------------------


def _regions(rng, count, stations, heterogeneous=False):
    for _ in range(count):
        n = rng.integers(100, 301, stations)
        share = rng.uniform(0.05, 0.6)
        p = rng.beta(share * 10, (1 - share) * 10, stations) if heterogeneous else share
        yield n, share, rng.binomial(n, p)


def test_pvalues_are_calibrated_on_clean_binomial_data():
    """Clean Bin(n_i, p) regions: false-positive rate at α = 0.05 near 5%, with known and estimated p."""
    rng = np.random.default_rng(7)
    pvalues = {key: [] for key in ("c05", "c05_hat", "2bl", "2bl_hat", "last", "last_hat")}
    for n, share, x in _regions(rng, 300, 150):
        share_hat = nulls.region_shares(x, n)
        for suffix, p in (("", share), ("_hat", share_hat)):
            pvalues["c05" + suffix].append(nulls.expected_last_digit_05(n, p, x).pvalue)
            pvalues["2bl" + suffix].append(nulls.expected_second_digit_mean(n, p, x).pvalue)
            pvalues["last" + suffix].append(nulls.expected_last_digit_mean(n, p, x).pvalue)
    for key, values in pvalues.items():
        values = np.array(values)
        rate = (values < 0.05).mean()
        assert 0.015 <= rate <= 0.09, f"{key}: false-positive rate {rate:.3f} at α = 0.05"
        assert 0.4 <= values.mean() <= 0.6, f"{key}: mean p-value {values.mean():.3f}"


def test_textbook_constants_reject_the_same_clean_data():
    """The same kind of clean region fails the textbook 2BL constant: the reason for data-derived nulls."""
    rng = np.random.default_rng(8)
    n = rng.integers(100, 301, 2000)
    x = rng.binomial(n, 0.6)
    result = nulls.expected_second_digit_mean(n, 0.6, x)
    textbook_z = (result.statistic - forensics.BENFORD_2BL) / result.std
    assert abs(textbook_z) > 5, f"2BL {result.statistic:.3f} vs textbook 4.187: z = {textbook_z:.1f}"
    assert result.pvalue > 0.001, f"2BL {result.statistic:.3f} vs exact {result.expected:.3f}"


def test_own_share_null_for_heterogeneous_stations():
    """Stations with their own shares (Beta, concentration 10): the region-share binomial 2BL rejects clean
    data (~32% at α = 0.05), the per-station null Bin(n_i, x_i/n_i) (local smoothing of each count) stays
    near nominal (~7%; it is conservative, ~1%, for milder heterogeneity)."""
    rng = np.random.default_rng(9)
    region, own = [], []
    for n, _, x in _regions(rng, 120, 150, heterogeneous=True):
        region.append(nulls.expected_second_digit_mean(n, nulls.region_shares(x, n), x).pvalue)
        own.append(nulls.expected_second_digit_mean(n, x / n, x).pvalue)
    region_rate, own_rate = (np.array(region) < 0.05).mean(), (np.array(own) < 0.05).mean()
    assert region_rate > 0.2, f"region-share 2BL false-positive rate {region_rate:.2f}"
    assert own_rate <= 0.12, f"own-share 2BL false-positive rate {own_rate:.2f}"


def test_rounding_to_multiples_of_five_is_detected():
    """Rounding 40% of the counts to the nearest multiple of 5 gives tiny C05s p-values."""
    rng = np.random.default_rng(11)
    n = rng.integers(100, 301, 400)
    x = rng.binomial(n, 0.35)
    rounded = x.copy()
    pick = rng.random(x.size) < 0.4
    rounded[pick] = np.minimum(5 * np.round(x[pick] / 5).astype(np.int64), n[pick])
    clean = nulls.expected_last_digit_05(n, nulls.region_shares(x, n), x, alternative="greater")
    dirty = nulls.expected_last_digit_05(n, nulls.region_shares(rounded, n), rounded, alternative="greater")
    assert clean.pvalue > 0.01
    assert dirty.pvalue < 1e-10, f"C05s {dirty.statistic:.3f} vs expected {dirty.expected:.3f}"
    assert nulls.expected_last_digit_mean(n, nulls.region_shares(rounded, n), rounded).pvalue < 1e-3


# --- integer percentages ------------------------------------------------------------------------------


def test_integer_percent_probability_by_enumeration():
    d = np.arange(1, 700)
    brute = [np.mean([(100 * k) % v == 0 for k in range(v + 1)]) for v in d]
    assert np.allclose(nulls.integer_percent_probability(d), brute)
    assert np.allclose(nulls.integer_percent_probability(d), [(gcd(int(v), 100) + 1) / (v + 1) for v in d])
    inner = [np.mean([(100 * k) % v == 0 for k in range(1, v)]) for v in d[1:]]
    assert np.allclose(nulls.integer_percent_probability(d[1:], exclude_ends=True), inner)
    near = [np.mean([abs(100 * k / v - round(100 * k / v)) <= 0.1 + 1e-12 for k in range(v + 1)]) for v in d]
    assert np.allclose(nulls.integer_percent_probability(d, tolerance=0.1), near)
    assert nulls.integer_percent_probability([100, 50, 25, 20])[0] == 1.0  # every k: the small-d caveat


def test_integer_percent_calibrated_and_powerful():
    rng = np.random.default_rng(13)
    pvalues = []
    for _ in range(300):
        d = rng.integers(150, 301, 200)
        pvalues.append(nulls.expected_integer_percent(rng.integers(0, d + 1), d).pvalue)
    rate = (np.array(pvalues) < 0.05).mean()
    assert rate <= 0.08, f"integer-percent false-positive rate {rate:.3f}"
    d = rng.integers(150, 301, 500)
    k = rng.integers(0, d + 1)
    fake = k.copy()  # 10% of units: move k to the nearest value giving an exact integer percentage
    step = d // np.gcd(d, 100)
    pick = rng.random(d.size) < 0.1
    fake[pick] = np.minimum(step[pick] * np.round(k[pick] / step[pick]).astype(np.int64), d[pick])
    clean, dirty = nulls.expected_integer_percent(k, d), nulls.expected_integer_percent(fake, d)
    assert clean.pvalue > 0.01 and dirty.pvalue < 1e-6, (clean, dirty)


# --- validation --------------------------------------------------------------------------------------


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="non-negative integers"):
        nulls.expected_last_digit_05([10, -1], 0.5)
    with pytest.raises(ValueError, match=r"shares must lie in \[0.0, 1.0\]"):
        nulls.expected_last_digit_05([10, 20], 1.5)
    with pytest.raises(ValueError, match="shares has 3 values for 2 stations"):
        nulls.expected_last_digit_05([10, 20], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="exceeds its station's n_voters"):
        nulls.expected_second_digit_mean([10, 20], 0.5, counts=[11, 3])
    with pytest.raises(ValueError, match="counts has 1 values for 2 stations"):
        nulls.expected_last_digit_mean([10, 20], 0.5, counts=[3])
    with pytest.raises(ValueError, match="min_count ≥ 10"):
        nulls.expected_second_digit_mean([10, 20], 0.5, min_count=5)
    with pytest.raises(ValueError, match="alternative must be one of"):
        nulls.expected_last_digit_05([10, 20], 0.5, counts=[1, 2], alternative="bigger")
    with pytest.raises(ValueError, match="impossible under its share"):
        nulls.expected_second_digit_mean([50], 0.0, counts=[20])
    with pytest.raises(ValueError, match=r"dispersion must lie in \[0.0, 1.0\)"):
        nulls.expected_last_digit_05([10], 0.5, dispersion=1.0)
    with pytest.raises(ValueError, match="numerator exceeds its denominator"):
        nulls.expected_integer_percent([5], [4])
    empty = nulls.expected_last_digit_05([], 0.5, counts=[])
    assert empty.n == 0 and np.isnan(empty.statistic)


# --- real 2024 data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_tps():
    """Domestic TPS (DI Yogyakarta, Bali) of the dev snapshot whose chart sums to suara_sah."""
    columns = ("paslon_01", "paslon_02", "paslon_03", "suara_sah", "pengguna_total_j", "pemilih_dpt_j")
    out = {c: [] for c in (*columns, "kelurahan_kode")}
    with gzip.open(shared_file("sirekap", "tps_latest_dev.csv.gz"), "rt", newline="") as f:
        for row in csv.DictReader(f):
            try:
                values = [int(row[c]) for c in columns]
            except ValueError:
                continue
            if row["provinsi_kode"] == "99" or sum(values[:3]) != values[3] or values[3] == 0:
                continue
            for c, v in zip(columns, values):
                out[c].append(v)
            out["kelurahan_kode"].append(row["kelurahan_kode"])
    return {c: np.array(v) for c, v in out.items()}


@pytest.mark.shared_data
def test_real_2bl_textbook_rejects_data_derived_does_not(dev_tps):
    """Real DIY + Bali TPS (12,274 consistent domestic stations), paslon 02 (the regional leader):
    2BL observed 3.309 vs textbook 4.187 (z ≈ −44); exact expectation under Bin(n_i, x_i/n_i)
    3.359, p ≈ 0.013. Paslon 03: 4.090 vs textbook (z ≈ −3.9); exact 4.107, p ≈ 0.50."""
    n = dev_tps["suara_sah"]
    for paslon, min_textbook_z in (("paslon_02", 30), ("paslon_03", 3)):
        x = dev_tps[paslon]
        result = nulls.expected_second_digit_mean(n, x / n, x)
        textbook_z = (result.statistic - forensics.BENFORD_2BL) / result.std
        message = (f"{paslon}: 2BL {result.statistic:.3f} over {result.n} TPS; textbook 4.187 z = {textbook_z:.1f}; "
                   f"exact {result.expected:.3f} p = {result.pvalue:.3g}")  # fmt: skip
        assert abs(textbook_z) > min_textbook_z, message
        assert result.pvalue > 0.005, message


@pytest.mark.shared_data
def test_real_last_digits_agree_with_data_derived_expectation(dev_tps):
    """Last digits with kelurahan shares: C05s 0.2024 (exp 0.2004, p ≈ 0.58) and 0.2044 (exp 0.2000,
    p ≈ 0.23) for paslon 02 and 03; LastC 4.534 and 4.467 (exp 4.500, p ≈ 0.19, 0.21). Paslon 01 (small
    counts, 6.0% zeros vs 4.1% expected) rejects C05s over all counts (0.2176 vs 0.2029, p ≈ 4e-5) but not
    over counts ≥ 10 (0.2109 vs 0.2109)."""
    n, groups = dev_tps["suara_sah"], dev_tps["kelurahan_kode"]
    for paslon in ("paslon_02", "paslon_03"):
        x = dev_tps[paslon]
        p = nulls.region_shares(x, n, groups)
        for result in (nulls.expected_last_digit_05(n, p, x), nulls.expected_last_digit_mean(n, p, x)):
            assert result.pvalue > 0.01, (paslon, result)
    x = dev_tps["paslon_01"]
    p = nulls.region_shares(x, n, groups)
    assert nulls.expected_last_digit_05(n, p, x).pvalue < 1e-3
    assert nulls.expected_last_digit_05(n, p, x, min_count=10).pvalue > 0.05


@pytest.mark.shared_data
def test_real_integer_percentages(dev_tps):
    """Integer percentages, excluding 0% and 100% (k uniform on 1..d−1): turnout (pengguna_total_j /
    pemilih_dpt_j) 1.38% observed vs 1.69% expected (p ≈ 1.0, one-sided); paslon 02's share 2.37% vs
    2.04% (p ≈ 0.003, ×1.16: the uniform-fraction null is crude). The naive 1% would call both inflated.
    With the ends kept, turnout has 3.11% vs 2.51% (p ≈ 6e-6): 100% turnout TPS, not fabricated fractions."""
    for num, den in (("pengguna_total_j", "pemilih_dpt_j"), ("paslon_02", "suara_sah")):
        k, d = dev_tps[num], dev_tps[den]
        ok = k <= d
        result = nulls.expected_integer_percent(k[ok], d[ok], exclude_ends=True)
        naive = result.statistic / 0.01
        assert result.pvalue > 0.001, (num, result)
        assert 0.5 < result.statistic / result.expected < 2, (num, result, f"vs 1%: ×{naive:.1f}")

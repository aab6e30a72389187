"""The forensics statistics reproduce the Election Forensics Toolkit's Albania 2013 table and benford_py."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from pantau.detectors import forensics

from .conftest import shared_file

#: Published BasicElectionForensics table, Level = Prefectures, Turnout row:
#: 2BL, P05s, C05s, Skew, Kurt, DipT p, Obs.
ALBANIA_2013 = {
    "BERAT": (4.244, 0.197, 0.217, 0.261, 3.474, 0.651, 300),
    "DIBER": (4.167, 0.221, 0.225, 1.685, 4.954, 0.000, 258),
    "DURRES": (4.572, 0.173, 0.194, 1.354, 3.211, 0.000, 444),
    "ELBASAN": (4.345, 0.217, 0.196, 1.5, 4.086, 0.000, 516),
    "FIER": (4.373, 0.208, 0.181, 1.582, 4.572, 0.000, 558),
    "GJIROKASTER": (4.549, 0.287, 0.228, 0.72, 2.166, 0.000, 237),
}


@pytest.fixture(scope="module")
def albania():
    with open(shared_file("forensics", "albania2013_EFToolkit.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    by_prefecture = {}
    for row in rows:
        ballots, registered = by_prefecture.setdefault(row["Prefectures"], ([], []))
        ballots.append(int(row["Ballots"]))
        registered.append(int(row["Registered"]))
    return {k: (np.array(b), np.array(r)) for k, (b, r) in by_prefecture.items()}


@pytest.mark.parametrize("prefecture", sorted(ALBANIA_2013))
def test_albania_2013_turnout_row(albania, prefecture):
    ballots, registered = albania[prefecture]
    two_bl, p05s, c05s, skew, kurt, dip_p, obs = ALBANIA_2013[prefecture]
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = ballots / registered
    assert len(ballots) == obs
    assert forensics.second_digit_mean(ballots).statistic == pytest.approx(two_bl, abs=5e-4)
    assert forensics.percent_05_share(ballots, registered).statistic == pytest.approx(p05s, abs=5e-4)
    assert forensics.last_digit_05_share(ballots).statistic == pytest.approx(c05s, abs=5e-4)
    assert forensics.skewness(pct).statistic == pytest.approx(skew, abs=5e-4)
    assert forensics.kurtosis(pct).statistic == pytest.approx(kurt, abs=5e-4)
    assert forensics.dip_test(pct).pvalue == pytest.approx(dip_p, abs=5e-4)


@pytest.fixture(scope="module")
def spy():
    with open(shared_file("forensics", "benford_py_SPY.csv"), newline="") as f:
        close = np.array([float(row["Close"]) for row in csv.DictReader(f)])
    x = (np.abs(np.log(close[1:] / close[:-1])) * 1e8).astype(np.int64)
    return x[x > 0]


def test_benford_py_reference_numbers(spy):
    assert spy.size == 5968
    first = forensics.benford_first_digit(spy)
    assert first.counts.tolist() == [1835, 949, 668, 534, 494, 447, 386, 345, 310]
    assert first.statistic == pytest.approx(43.56342622, abs=1e-7)
    assert first.mad == pytest.approx(0.0083372793, abs=1e-9)
    second = forensics.benford_second_digit(spy)
    assert second.statistic == pytest.approx(13.90882752, abs=1e-7)
    assert second.mad == pytest.approx(0.0041505065, abs=1e-9)
    two = forensics.benford_first_two_digits(spy)
    assert two.statistic == pytest.approx(158.70563592, abs=1e-7)
    assert two.mad == pytest.approx(0.0014320490, abs=1e-9)


def test_statistics_on_small_known_inputs():
    assert forensics.second_digit_mean([12, 15, 7, 230]).statistic == pytest.approx(10 / 3)
    assert forensics.second_digit_mean([12, 15, 7, 230]).n == 3
    assert forensics.last_digit_05_share([10, 15, 12, 3]).statistic == 0.5
    assert forensics.percent_05_share([1, 0, 3], [2, 0, 3]).statistic == pytest.approx(2 / 3)  # 50%, 0/0, 100%
    assert forensics.benford_first_digit([1, 10, 100, 2]).counts.tolist() == [3, 1, 0, 0, 0, 0, 0, 0, 0]


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="non-negative integers"):
        forensics.last_digit_05_share([1, -2])
    with pytest.raises(ValueError, match="non-negative integers"):
        forensics.second_digit_mean([1.5, 2.0])
    with pytest.raises(ValueError, match="differ in length"):
        forensics.percent_05_share([1, 2], [3])

"""How large a manipulation must be before any regional statistic can see it (issue 6's recall goal).

For each manipulation in a simulated night's truth file, prints how much it moved the hit stations
(leader share, turnout), and beside it how much stations of the *same kelurahan* differ naturally:
the within-kelurahan dispersion index of leader votes, of turnout and of the DPT's turnout (DPT voters /
DPT) per kecamatan (Pearson χ² of homogeneity / degrees of freedom; 1 = binomial noise only). A shift
that is small next to that natural spread cannot be told from it by any test at a 1% false-discovery
rate, however the test is built; the same index on the real 2024 DIY/Bali data shows how the
simulator compares with reality. A test of the spread itself (stuffing at part of a kelurahan's TPS
widens it) would measure a kecamatan's index against the other kecamatan of its province: the script
prints how much those differ (the standard deviation of the log index) and how far the hit kecamatan
stand out in those units.

    pantau simulate --province 33 --seed 7 --anomaly stuffing_incremental:rate=0.3,target=random:0.05@kecamatan \\
        --anomaly vote_shifting:rate=0.3,target=random:0.05@kecamatan --complete --no-images --out night.jsonl
    python bench/detection_limits.py night.jsonl night.truth.jsonl [../shared/data/sirekap/tps_latest_dev.csv.gz]
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import numpy as np
import orjson

from pantau.detectors.form import Capacity, check_form
from pantau.detectors.regional import Profile, profile
from pantau.schemas import normalize
from pantau.sources import read_records

MIN_SHARE = 0.2
QUANTILES = (0.05, 0.5, 0.95)
FIGURES = ("leader", "turnout", "DPT turnout")
#: Degrees of freedom below which a kecamatan's index is mostly noise (sd of log χ²/df ≈ √(2/df)).
MIN_DF = 20


def latest_profiles(path: str) -> dict[str, Profile]:
    capacity = Capacity()
    latest: dict[str, Profile] = {}
    for record in read_records(path):
        if record.envelope is None or record.envelope.jenis != "ppwp":
            continue
        tally = normalize(record.envelope)
        if tally.region.provinsi == "99":
            continue
        found = profile(tally, check_form(tally, capacity))
        if found is not None:
            latest[found.kode_tps] = found
    return latest


def dispersion_by_kecamatan(profiles: dict[str, Profile]) -> dict[str, np.ndarray]:
    """Kecamatan → (χ², degrees of freedom) of leader votes, turnout and DPT turnout (one row each),
    pooled over its kelurahan; the index of a row is χ² / df."""
    by_kelurahan: dict[str, list[Profile]] = defaultdict(list)
    for p in profiles.values():
        by_kelurahan[p.kode_tps[:10]].append(p)
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((3, 2)))
    for kelurahan, stations in by_kelurahan.items():
        if len(stations) < 2:
            continue
        votes = np.array([[v for _, v in p.counts] for p in stations], float)
        leader = int(np.argmax(votes.sum(axis=0)))
        register = np.array([p.register for p in stations], float)
        row = sums[kelurahan[:6]]
        row[0] += _homogeneity(votes[:, leader], votes.sum(axis=1))
        row[1] += _homogeneity(np.minimum([p.voters for p in stations], register), register)
        with_dpt = [(p.dpt_voters, p.register) for p in stations if p.dpt_voters is not None and p.dpt_voters <= p.register]
        if len(with_dpt) >= 2:
            row[2] += _homogeneity(*np.array(with_dpt, float).T)
    return {k: r for k, r in sums.items() if r[0, 1] and r[1, 1]}


def index_of(row: np.ndarray, figure: int) -> float:
    chi2, df = row[figure]
    return chi2 / df if df else math.nan


def _homogeneity(hits: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """(Pearson χ² of homogeneity, degrees of freedom) of binomial proportions; (0, 0) if the pooled rate is 0 or 1."""
    rate = hits.sum() / trials.sum()
    if not 0 < rate < 1:
        return np.zeros(2)
    return np.array([(((hits - trials * rate) ** 2) / (trials * rate * (1 - rate))).sum(), len(hits) - 1])


def log_index(row: np.ndarray, figure: int) -> float | None:
    """The log of a kecamatan's index, or None below :data:`MIN_DF` degrees of freedom or at χ² = 0."""
    chi2, df = row[figure]
    return math.log(chi2 / df) if df >= MIN_DF and chi2 > 0 else None


def log_spread(dispersion: dict[str, np.ndarray], clean: set[str], figure: int) -> dict[str, tuple[float, float]]:
    """Province → (median, standard deviation) of the :func:`log_index` between its clean kecamatan (at
    least 15 of them): the yardstick a test of one kecamatan's spread would be measured against."""
    by_province: dict[str, list[float]] = defaultdict(list)
    for kecamatan, row in dispersion.items():
        value = log_index(row, figure)
        if kecamatan in clean and value is not None:
            by_province[kecamatan[:2]].append(value)
    return {p: (float(np.median(v)), float(np.std(v, ddof=1))) for p, v in sorted(by_province.items()) if len(v) >= 15}


def read_truth(path: str) -> tuple[dict[str, list[tuple[float, float]]], dict[str, set[str]], set[str]]:
    """Per anomaly: the hit stations' changes, the kecamatan with ≥ MIN_SHARE hit; every touched kecamatan."""
    effects: dict[str, list[tuple[float, float]]] = defaultdict(list)
    hit: dict[str, set[str]] = defaultdict(set)
    touched: set[str] = set()
    with open(path, "rb") as f:
        for line in f:
            row = orjson.loads(line)
            detail = row.get("detail") or {}
            if row.get("level") == "tps" and "share_before" in detail:
                effects[row["anomaly"]].append((detail["share_after"] - detail["share_before"],
                                                detail["turnout_after"] - detail["turnout_before"]))  # fmt: skip
            elif row.get("level") == "kecamatan":
                touched.add(row["region"])
                if detail.get("share", 0) >= MIN_SHARE:
                    hit[row["anomaly"]].add(row["region"])
    return effects, hit, touched


def line(label: str, values: list[float] | np.ndarray, digits: int = 2) -> str:
    if not len(values):
        return f"  {label:<42} (none)"
    q = np.quantile(values, QUANTILES)
    return f"  {label:<42} " + "  ".join(f"{v:>7.{digits}f}" for v in q) + f"   n={len(values)}"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    night, truth = argv[0], argv[1]
    effects, hit, touched = read_truth(truth)
    print(f"quantiles {' '.join(f'{q:>7}' for q in QUANTILES)}")
    print("what the manipulations did to each hit station (change in leader share / turnout, points of 1):")
    for anomaly, rows in sorted(effects.items()):
        a = np.array(rows)
        print(line(f"{anomaly} Δshare", a[:, 0], 3))
        print(line(f"{anomaly} Δturnout", a[:, 1], 3))
    dispersion = dispersion_by_kecamatan(latest_profiles(night))
    print(f"within-kelurahan dispersion index per kecamatan (1 = binomial; hit = ≥{MIN_SHARE:.0%} of its TPS):")
    clean = {k for k in dispersion if k not in touched}
    groups = {"simulated clean": [dispersion[k] for k in clean]}
    groups |= {f"simulated {a}": [dispersion[k] for k in regions if k in dispersion] for a, regions in sorted(hit.items())}
    real = dispersion_by_kecamatan(latest_profiles(argv[2])) if len(argv) > 2 else {}
    if real:
        groups["real 2024 (no truth: all)"] = list(real.values())
    for label, rows in groups.items():
        for figure, name in enumerate(FIGURES):
            values = [index_of(row, figure) for row in rows]
            print(line(f"{label} {name}", [v for v in values if not math.isnan(v)]))
    dpt = FIGURES.index("DPT turnout")
    print(f"between the clean kecamatan of a province (≥ {MIN_DF} df): standard deviation of the log DPT-turnout index")
    spread = log_spread(dispersion, clean, dpt)
    print(line(f"simulated, {len(spread)} provinces", [sd for _, sd in spread.values()]))
    for province, (_, sd) in log_spread(real, set(real), dpt).items():
        print(f"  real 2024, province {province}: {sd:.2f}")
    print(f"hit kecamatan (≥ {MIN_DF} df): their log DPT-turnout index in those units (a 1% FDR over thousands needs z ≈ 4)")
    for anomaly, regions in sorted(hit.items()):
        logs = {k: log_index(dispersion[k], dpt) for k in regions if k in dispersion and k[:2] in spread}
        z = [(value - spread[k[:2]][0]) / spread[k[:2]][1] for k, value in logs.items() if value is not None]
        print(line(f"{anomaly} z", z))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""How large a manipulation must be before any regional statistic can see it (issue 6's recall goal).

For each manipulation in a simulated night's truth file, prints how much it moved the hit stations
(leader share, turnout), and beside it how much stations of the *same kelurahan* differ naturally:
the within-kelurahan dispersion index of leader votes and of turnout per kecamatan (Pearson χ² of
homogeneity / degrees of freedom; 1 = binomial noise only). A shift that is small next to that
natural spread cannot be told from it by any test at a 1% false-discovery rate, however the test is
built; the same index on the real 2024 DIY/Bali data shows how the simulator compares with reality.

    pantau simulate --province 33 --seed 7 --anomaly stuffing_incremental:rate=0.3,target=random:0.05@kecamatan \\
        --anomaly vote_shifting:rate=0.3,target=random:0.05@kecamatan --complete --no-images --out night.jsonl
    python bench/detection_limits.py night.jsonl night.truth.jsonl [../shared/data/sirekap/tps_latest_dev.csv.gz]
"""

from __future__ import annotations

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


def dispersion_by_kecamatan(profiles: dict[str, Profile]) -> dict[str, tuple[float, float]]:
    """Kecamatan → (leader-votes index, turnout index), pooled over its kelurahan."""
    by_kelurahan: dict[str, list[Profile]] = defaultdict(list)
    for p in profiles.values():
        by_kelurahan[p.kode_tps[:10]].append(p)
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4))
    for kelurahan, stations in by_kelurahan.items():
        if len(stations) < 2:
            continue
        votes = np.array([[v for _, v in p.counts] for p in stations], float)
        valid = votes.sum(axis=1)
        leader = int(np.argmax(votes.sum(axis=0)))
        share = votes[:, leader].sum() / valid.sum()
        register = np.array([p.register for p in stations], float)
        voters = np.minimum([p.voters for p in stations], register)
        rate = voters.sum() / register.sum()
        row = sums[kelurahan[:6]]
        if 0 < share < 1:
            row[0] += (((votes[:, leader] - valid * share) ** 2) / (valid * share * (1 - share))).sum()
            row[1] += len(stations) - 1
        if 0 < rate < 1:
            row[2] += (((voters - register * rate) ** 2) / (register * rate * (1 - rate))).sum()
            row[3] += len(stations) - 1
    return {k: (r[0] / r[1], r[2] / r[3]) for k, r in sums.items() if r[1] and r[3]}


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
    index = dispersion_by_kecamatan(latest_profiles(night))
    print(f"within-kelurahan dispersion index per kecamatan (1 = binomial; hit = ≥{MIN_SHARE:.0%} of its TPS):")
    groups = {"simulated clean": [v for k, v in index.items() if k not in touched]}
    groups |= {f"simulated {a}": [index[k] for k in regions if k in index] for a, regions in sorted(hit.items())}
    if len(argv) > 2:
        groups["real 2024 (no truth: all)"] = list(dispersion_by_kecamatan(latest_profiles(argv[2])).values())
    for label, values in groups.items():
        v = np.array(values).reshape(-1, 2)
        print(line(f"{label} leader", v[:, 0]))
        print(line(f"{label} turnout", v[:, 1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

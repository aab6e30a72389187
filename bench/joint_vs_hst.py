"""pantau's joint peer test against river's HalfSpaceTrees on the same TPS (why the multivariate
detector is not HST).

Simulates the largest kabupaten of a province with extreme stuffing in a share of their kecamatan
(``--rate`` of those kecamatan's TPS), every form complete, and feeds each kabupaten's TPS, in arrival
order (a TPS's first complete form), to three detectors of the same two features, turnout and the TPS
winner's share:

- ``joint, outside kecamatan``: :class:`~pantau.detectors.monitor.JointGrid`'s corner rank among the
  kabupaten's earlier TPS outside the TPS's own kecamatan (pantau's);
- ``joint, all peers``: the same rank among all earlier TPS, own kecamatan included;
- ``river HalfSpaceTrees`` (river's default 10 trees of height 8): one model per kabupaten (``score_one`` before ``learn_one``), its score made a
  conformal rank among the kabupaten's earlier scores, so that both are read at the same false-alarm rate.

A TPS is flagged when its rank is at most ``1 / peers needed`` once it has that many earlier TPS (2,000:
pantau's level with four features; 1,000: its level for the joint feature alone). Prints stuffed TPS
flagged, clean TPS flagged per 10,000, µs per TPS and the state of one kabupaten's model in bytes (what
a changelog would carry per update).

    python bench/joint_vs_hst.py [--province 33] [--kabupaten 4] [--seed 7] [--rate 0.3] [--share 0.03]

Central Java's 4 largest kabupaten take ~5 s; needs the registry in
``../shared/data`` (else the synthetic registry). Last run, with the defaults (the README gives it):

    detector                     level   stuffed flagged  clean FA/10k  µs/TPS  state B
    joint, outside kecamatan    1/2000        133 of 153           0.7      13      678
    joint, outside kecamatan    1/1000        176 of 191           0.5      13      678
    joint, all peers            1/2000          0 of 154           0.0      11      678
    joint, all peers            1/1000          0 of 193           0.5      11      678
    river HalfSpaceTrees        1/2000          2 of 154           2.1      25  169,975
    river HalfSpaceTrees        1/1000          7 of 193           3.2      25  169,975

With ``--share 0.1`` the stuffed kecamatan fill the corner for each other: at 1 in 2,000 the joint test
finds 0 of 496, HalfSpaceTrees 6 of 510.
"""

from __future__ import annotations

import argparse
import bisect
import pickle
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
from pantau.detectors.findings import find
from pantau.detectors.form import Capacity
from pantau.detectors.monitor import JointGrid
from pantau.detectors.regional import profile
from pantau.schemas import normalize
from river import anomaly

from pantau.replay import records_of
from pantau.simulate import simulate
from pantau.simulate.model import load_params
from pantau.simulate.registry import resolve_registry

LEVELS = (2000, 1000)


def largest_kabupaten(province: str, count: int) -> list[str]:
    sizes = Counter(str(kode)[:4] for kode in resolve_registry(load_params()).codes if str(kode).startswith(province))
    return [kab for kab, _ in sizes.most_common(count)]


def first_profiles(night: Path):
    """Each TPS's first complete, consistent form, in arrival order."""
    seen = set()
    capacity = Capacity()
    for record in records_of([night]):
        if record.envelope is None:
            continue
        tally = normalize(record.envelope)
        if tally.kode_tps in seen:
            continue
        p = profile(tally, find(tally, capacity).form)
        if p is not None:
            seen.add(tally.kode_tps)
            yield p


class ConformalScores:
    """Earlier scores of a kabupaten, sorted: the rank of a new score is (as high + 1) / (earlier + 1)."""

    def __init__(self):
        self.scores: list[float] = []

    def rank(self, score: float) -> float:
        above = len(self.scores) - bisect.bisect_left(self.scores, score)
        return (above + 1) / (len(self.scores) + 1)

    def add(self, score: float) -> None:
        bisect.insort(self.scores, score)


def run(profiles, stuffed: set[str]) -> dict[str, dict]:
    kab_grid, kec_grid = defaultdict(JointGrid), defaultdict(JointGrid)
    forests = defaultdict(lambda: anomaly.HalfSpaceTrees(seed=1, limits={"turnout": (0, 1), "share": (0, 1)}))
    scores = defaultdict(ConformalScores)
    results = {name: {"flagged": Counter(), "tested": Counter(), "seconds": 0.0}
               for name in ("joint, outside kecamatan", "joint, all peers", "river HalfSpaceTrees")}  # fmt: skip
    for p in profiles:
        kab, kec = p.kode_tps[:4], p.kode_tps[:6]
        truth = "stuffed" if p.kode_tps in stuffed else "clean"
        started = time.perf_counter()
        outside = kab_grid[kab].corner_rank(p, without=kec_grid[kec])
        middle = time.perf_counter()
        everyone = kab_grid[kab].corner_rank(p)
        ended = time.perf_counter()
        kab_grid[kab].add(p)
        kec_grid[kec].add(p)
        results["joint, outside kecamatan"]["seconds"] += middle - started
        results["joint, all peers"]["seconds"] += ended - middle
        started = time.perf_counter()
        x = {"turnout": p.turnout, "share": p.top_share}
        score = forests[kab].score_one(x)
        forest_rank = scores[kab].rank(score)
        scores[kab].add(score)
        forests[kab].learn_one(x)
        results["river HalfSpaceTrees"]["seconds"] += time.perf_counter() - started
        for name, (rank, peers) in (("joint, outside kecamatan", outside), ("joint, all peers", everyone),
                                    ("river HalfSpaceTrees", (forest_rank, len(scores[kab].scores) - 1))):  # fmt: skip
            for level in LEVELS:
                if peers + 1 >= level:
                    results[name]["tested"][(level, truth)] += 1
                    results[name]["flagged"][(level, truth)] += rank <= 1 / level
    results["joint, outside kecamatan"]["state"] = len(orjson.dumps(next(iter(kab_grid.values())).to_state()))
    results["joint, all peers"]["state"] = results["joint, outside kecamatan"]["state"]
    results["river HalfSpaceTrees"]["state"] = len(pickle.dumps(next(iter(forests.values()))))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--province", default="33")
    parser.add_argument("--kabupaten", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--share", type=float, default=0.03)
    args = parser.parse_args(argv)
    kabupaten = largest_kabupaten(args.province, args.kabupaten)
    with tempfile.TemporaryDirectory() as workdir:
        night = Path(workdir) / "night.jsonl"
        spec = f"stuffing_extreme:rate={args.rate},target=random:{args.share}@kecamatan"
        simulate(night, kabkota=kabupaten, seed=args.seed, anomalies=[spec], complete=True, images=False)
        truth = [orjson.loads(line) for line in night.with_suffix(".truth.jsonl").read_bytes().splitlines()[1:]]
        stuffed = {t["kode_tps"] for t in truth if t["level"] == "tps"}
        profiles = list(first_profiles(night))
    results = run(profiles, stuffed)
    print(f"kabupaten {', '.join(kabupaten)}: {len(profiles):,} TPS, {len(stuffed):,} of them stuffed "
          f"(extreme stuffing, {args.rate:.0%} of the TPS of {args.share:.0%} of kecamatan)")  # fmt: skip
    print(f"{'detector':26} {'level':>7} {'stuffed flagged':>17} {'clean FA/10k':>13} {'µs/TPS':>7} {'state B':>8}")
    for name, r in results.items():
        for level in LEVELS:
            hit, tested = r["flagged"][(level, "stuffed")], r["tested"][(level, "stuffed")]
            clean = r["flagged"][(level, "clean")] / max(r["tested"][(level, "clean")], 1) * 1e4
            print(f"{name:26} {'1/' + str(level):>7} {f'{hit} of {tested}':>17} {clean:13.1f} "
                  f"{r['seconds'] / len(profiles) * 1e6:7.0f} {r['state']:8,}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

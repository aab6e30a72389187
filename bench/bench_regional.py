"""Per-submission cost of the regional statistics against region size (issue 6: O(1) per submission).

Feeds synthetic complete forms into one kecamatan of ``size`` TPS (monitor: region sums, peer
histograms, peer score, kelurahan neighbours) and times the update of the next 2,000 forms; the
assessor's re-test of the region is timed separately (it runs on a schedule, not per submission).
Prints µs per submission at each size and the ratio of the largest to the smallest (goal ≤ 1.2).

Every cost bounded by a constant is at its bound here: the kecamatan is its kabupaten's only one (no TPS
outside it, so every form waits among the deferred TPS, kept at 256), and its kelurahan have 1,000 TPS
(compared in blocks of 32 numbers).

    python bench/bench_regional.py
"""

from __future__ import annotations

import time

import numpy as np

from pantau.detectors.assessor import RegionalAssessor
from pantau.detectors.monitor import RegionalMonitor
from pantau.detectors.regional import Profile, contribution
from pantau.schemas import Region, Tally

SIZES = (100, 1_000, 10_000)
TIMED = 2_000


def forms(count: int, seed: int) -> list[tuple[Tally, Profile]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kode = f"3404010{i // 1000:03d}{i % 1000:03d}"
        register = int(rng.integers(200, 300))
        voters = int(rng.binomial(register, 0.8))
        valid = voters - int(rng.binomial(voters, 0.02))
        first = int(rng.binomial(valid, rng.beta(30, 20)))
        second = int(rng.binomial(valid - first, 0.7))
        counts = (("100025", first), ("100026", second), ("100027", valid - first - second))
        tally = Tally(kode, "ppwp", Region.of(kode), {}, (), True, True, (), None, None, None)
        dpt_voters = voters - int(rng.integers(0, 5))
        out.append((tally, Profile(kode, "ppwp", counts, register, voters, valid, voters - valid, dpt_voters)))
    return out


def main() -> None:
    stream = forms(max(SIZES) + TIMED, seed=1)
    for _, p in stream:  # warm the per-(n, x) expectation caches, as a long-running worker has them
        contribution(p)
    results = {}
    for size in SIZES:
        monitor = RegionalMonitor()
        for tally, p in stream[:size]:
            monitor.apply(tally, None, p)
        monitor.flush()
        started = time.perf_counter()
        for tally, p in stream[size : size + TIMED]:
            monitor.score(tally, p)
            monitor.apply(tally, None, p)
        per_submission = (time.perf_counter() - started) / TIMED * 1e6
        assessor = RegionalAssessor()
        for key, sums in monitor.flush().items():
            assessor.update(key, sums)
        started = time.perf_counter()
        assessor.assess()
        results[size] = per_submission
        print(f"region size {size:>6,}: {per_submission:6.1f} µs per submission; assessing its 3 regions {1e3 * (time.perf_counter() - started):.1f} ms")
    print(f"ratio size {max(SIZES):,} / size {min(SIZES):,}: {results[max(SIZES)] / results[min(SIZES)]:.2f} (goal ≤ 1.2)")


if __name__ == "__main__":
    main()

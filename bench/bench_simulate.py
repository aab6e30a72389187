"""Simulator benchmark: the whole country on election night, timed.

    python bench/bench_simulate.py [--seed 1] [--jenis ppwp] [--out DIR] [--keep]

Prints, for every TPS of the registry (823,366 with ``../shared``'s registry or the synthetic one):
the time of each stage (registry, numbers and timeline, anomalies, writing the envelopes), envelopes
and bytes written, peak memory, and the arrival load of the simulated night (busiest minute and hour of
first uploads) next to the real 2024 curve scaled to the same number of TPS. ``--jenis all`` simulates
the five ballot types nationally (several minutes, ~10 GB of JSON lines); by default a five-type run
of one province is timed and extrapolated.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pantau.schemas import JENIS

from pantau.simulate.anomalies import default_specs, inject
from pantau.simulate.generate import Config, build_night, write_night
from pantau.simulate.model import load_params
from pantau.simulate.registry import resolve_registry


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(jenis: tuple[str, ...], seed: int, out: Path, provinces: list[str] | None = None) -> dict:
    timings = {}
    start = time.perf_counter()
    params = load_params()
    registry = resolve_registry(params).select(provinces)
    timings["registry"] = time.perf_counter() - start
    t = time.perf_counter()
    night = build_night(params, registry, Config(seed=seed, jenis=jenis))
    timings["numbers + timeline"] = time.perf_counter() - t
    t = time.perf_counter()
    truth = inject(night, default_specs(seed, tuple(night.ballots)))
    timings["anomalies"] = time.perf_counter() - t
    t = time.perf_counter()
    lines = write_night(night, out)
    timings["writing"] = time.perf_counter() - t
    total = time.perf_counter() - start
    return {"night": night, "registry": registry, "timings": timings, "total": total, "lines": lines,
            "bytes": out.stat().st_size, "truth": len(truth)}  # fmt: skip


def arrival_load(night, params) -> tuple[int, int, float, float]:
    """Busiest minute and hour of first PPWP uploads, simulated and real-scaled."""
    upload = night.upload["ppwp"]
    minutes = np.bincount((upload - upload.min()) // 60)
    hours = np.bincount((upload - upload.min() + upload.min() % 3600) // 3600)
    arrivals = params.timeline["arrivals"]
    n = len(upload)
    return int(minutes.max()), int(hours.max()), arrivals["peak_minute_share"] * n, arrivals["peak_hour_share"] * n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jenis", default="ppwp", help="comma-separated ballot types, or 'all'")
    parser.add_argument("--out", help="directory for the output (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the written night")
    parser.add_argument("--five-province", default="34", help="province of the five-type sample run ('' to skip)")
    args = parser.parse_args()
    jenis = JENIS if args.jenis == "all" else tuple(args.jenis.split(","))
    directory = Path(args.out or tempfile.mkdtemp(prefix="pantau-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "night.jsonl"
    params = load_params()

    print(f"pantau simulator benchmark: the whole country, {', '.join(jenis)} (seed {args.seed}; {os.cpu_count()} CPUs)")
    result = run(jenis, args.seed, out)
    registry = result["registry"]
    print(f"registry: {registry.source} ({len(registry):,} TPS)")
    for stage, seconds in result["timings"].items():
        print(f"  {stage:<20} {seconds:6.1f} s")
    print(f"  {'total':<20} {result['total']:6.1f} s   {'(target < 60 s)' if jenis == ('ppwp',) else ''}")
    units = sum(len(b) for b in result["night"].ballots.values())
    print(f"envelopes: {result['lines']:,} for {units:,} TPS×ballot units ({result['lines'] / result['total']:,.0f} per second); "
          f"{result['bytes'] / 1e9:.2f} GB ({result['bytes'] / result['lines']:,.0f} B per envelope); truth rows {result['truth']:,}")  # fmt: skip
    print(f"peak memory: {peak_mb():,.0f} MB")
    if "ppwp" in result["night"].ballots:
        sim_minute, sim_hour, real_minute, real_hour = arrival_load(result["night"], params)
        print(f"arrival load (first PPWP uploads): busiest minute {sim_minute:,} (real 2024 curve scaled to {len(registry):,} TPS: "
              f"{real_minute:,.0f}), busiest hour {sim_hour:,} (scaled real: {real_hour:,.0f})")  # fmt: skip
    if not args.keep:
        out.unlink()
    del result

    if args.five_province and jenis == ("ppwp",):
        sample = directory / "five.jsonl"
        five = run(JENIS, args.seed, sample, [args.five_province])
        share = len(five["registry"]) / len(registry)
        print(f"five ballot types, province {args.five_province} ({len(five['registry']):,} TPS): {five['total']:.1f} s, "
              f"{five['lines']:,} envelopes, {five['bytes'] / 1e9:.2f} GB; extrapolated to the whole country: "
              f"~{five['total'] / share / 60:.0f} min, ~{five['bytes'] / share / 1e9:.0f} GB")  # fmt: skip
        sample.unlink()
    if not args.keep and not args.out:
        directory.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())

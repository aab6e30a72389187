"""Audit replay throughput: 1 process vs N, on a simulated night (or given files); outputs compared.

    python bench/bench_audit.py [--province 34,51] [--jenis all] [--jobs 1,2] [--input FILE ...] [--report DIR]

Simulates the night first unless ``--input`` is given (``pantau simulate`` options; the registry
comes from ../shared/data, else ``--synthetic-registry`` is used), then runs the sharded replay once
per ``--jobs`` value and prints documents per second, the speed-up over the first value, whether
every run gave the same alerts, and the time the whole country (823,366 TPS × 5 ballot types plus
~10% revisions, ~4.5 M documents) would take at the best rate. ``--report DIR`` also writes the
report of the last run and times it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from pantau.audit.engine import run_replay
from pantau.audit.report import InputFile, write_report
from pantau.replay import ASSESS_EVERY
from pantau.schemas import JENIS

NATIONAL_DOCUMENTS = 823_366 * 5 * 1.1
REGISTRY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sirekap" / "tps_registry.csv.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--province", default="34,51")
    parser.add_argument("--jenis", default="all")
    parser.add_argument("--jobs", default="1,2", help="comma-separated process counts to time")
    parser.add_argument("--input", action="append", help="replay these files instead of simulating")
    parser.add_argument("--report", help="write the last run's report here")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",")]

    with tempfile.TemporaryDirectory(prefix="pantau-bench-audit-") as scratch:
        inputs = args.input
        if not inputs:
            from pantau.simulate import simulate

            night = Path(scratch) / "night.jsonl.gz"
            started = time.perf_counter()
            jenis = JENIS if args.jenis == "all" else tuple(args.jenis.split(","))
            simulate(night, provinces=args.province.split(","), jenis=jenis, seed=args.seed,
                     synthetic_registry=not REGISTRY.exists())  # fmt: skip
            print(f"simulated provinces {args.province}, jenis {args.jenis}: {time.perf_counter() - started:.0f} s")
            inputs = [str(night)]
        outputs, rates, run = [], [], None
        for n in jobs:
            started = time.perf_counter()
            run = run_replay(inputs, jobs=n)
            elapsed = time.perf_counter() - started
            rates.append(run.summary.documents / elapsed)
            outputs.append([a.alert_id for a in run.alerts])
            print(f"jobs={n}: {run.summary.documents:,} documents, {len(run.alerts):,} alerts in {elapsed:.1f} s = "
                  f"{rates[-1]:,.0f} documents/s ({rates[-1] / rates[0]:.2f}x jobs={jobs[0]})")  # fmt: skip
        print(f"same alerts in every run: {all(o == outputs[0] for o in outputs)}")
        best = max(rates)
        print(f"the whole country (~{NATIONAL_DOCUMENTS / 1e6:.1f} M documents) at {best:,.0f}/s: "
              f"~{NATIONAL_DOCUMENTS / best / 60:.0f} minutes")  # fmt: skip
        if args.report and run is not None:
            started = time.perf_counter()
            write_report(run, Path(args.report), [InputFile.of(p) for p in inputs], {}, ASSESS_EVERY)
            print(f"report written to {args.report} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""State a worker keeps, per TPS-ballot and per region, on a simulated night (issue 9: goal ≤ 1 KiB).

    python bench/bench_state.py                          # national PPWP, then one province with all 5 ballots
    python bench/bench_state.py --province 34 --jenis all

Runs the detectors over every envelope of a simulated night (with its revisions and anomalies) the way
a worker does — revision states per ``kode_tps:jenis``, region sums and peer histograms per
kecamatan/kabupaten — and measures the state as the worker stores it (the JSON key and value of each
table entry, what the changelog topic and the table store hold), each state with its source position,
``{"o": offset, "s": state}`` (stream/app.py ``BatchStates``; the offset taken as the night's envelope
count, as if one partition held them all: an upper bound on its digits). Prints bytes per TPS-ballot
(mean, 99th percentile, largest) by ballot type, bytes per region by level, and the whole per
TPS-ballot with the regional state shared out; plus the process's peak memory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

from pantau.detectors.form import Capacity
from pantau.detectors.inspector import TpsInspector
from pantau.detectors.monitor import RegionalMonitor
from pantau.schemas import InvalidSubmission, normalize, parse_envelope
from pantau.simulate import simulate_lines

GOAL = 1024


def measure(provinces: list[str] | None, jenis: tuple[str, ...], seed: int) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        lines, summary = simulate_lines(Path(folder) / "truth.jsonl", provinces=provinces, jenis=jenis, seed=seed,
                                        images=True)  # fmt: skip
        revisions: dict[str, dict] = {}
        regions: dict[str, dict] = {}
        inspector = TpsInspector(Capacity(), states=revisions, monitor=RegionalMonitor(states=regions))
        envelopes = 0
        for line in lines:
            try:
                tally = normalize(parse_envelope(line))
            except InvalidSubmission:
                continue
            inspector.commit(inspector.inspect(tally))
            envelopes += 1
        inspector.monitor.flush()
    seconds = time.perf_counter() - started

    def stored(state: object) -> bytes:  # as BatchStates stores it, with its source position
        return orjson.dumps({"o": envelopes, "s": state})

    scope = ",".join(provinces) if provinces else "national"
    print(f"\n{scope}, {'+'.join(jenis)}: {summary.tps:,} TPS, {envelopes:,} envelopes in {seconds:.0f} s")
    by_jenis: dict[str, list[int]] = defaultdict(list)
    for key, state in revisions.items():  # form layouts (field names once per layout) are shared: counted apart
        by_jenis["layouts (shared)" if key.startswith("layout:") else key.rsplit(":", 1)[1]].append(
            len(orjson.dumps(key)) + len(stored(state)))  # fmt: skip
    print(f"  {'revision state':<26}{'units':>10}{'mean B':>9}{'p99 B':>8}{'max B':>8}")
    for name, sizes in sorted(by_jenis.items()):
        a = np.array(sizes)
        print(f"  {name:<26}{len(a):>10,}{a.mean():>9.0f}{np.quantile(a, 0.99):>8.0f}{a.max():>8,}")
    by_level: dict[str, list[int]] = defaultdict(list)
    for key, state in regions.items():
        by_level[key.split(":", 1)[0]].append(len(orjson.dumps(key)) + len(stored(state)))
    print(f"  {'regional state':<26}{'regions':>10}{'mean B':>9}{'p99 B':>8}{'max B':>8}")
    for name, sizes in sorted(by_level.items()):
        a = np.array(sizes)
        print(f"  {name:<26}{len(a):>10,}{a.mean():>9.0f}{np.quantile(a, 0.99):>8.0f}{a.max():>8,}")
    units = len(revisions) - len(by_jenis.get("layouts (shared)", []))
    revision_bytes = sum(sum(s) for s in by_jenis.values())
    region_bytes = sum(sum(s) for s in by_level.values())
    per_unit = (revision_bytes + region_bytes) / max(units, 1)
    print(f"  all state: {(revision_bytes + region_bytes) / 2**20:,.1f} MiB for {units:,} TPS-ballots = "
          f"{per_unit:,.0f} B per TPS-ballot (revision {revision_bytes / max(units, 1):,.0f} + regional share "
          f"{region_bytes / max(units, 1):,.0f}); goal ≤ {GOAL:,} B: {'met' if per_unit <= GOAL else 'NOT met'}")
    print(f"  peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--province", action="append", help="only these provinces (default: the whole country)")
    parser.add_argument("--jenis", default=None, help="ppwp, or 'all' (default: national ppwp, then province 34 with all)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    everything = ("ppwp", "pdpr", "pdpd", "pdprdp", "pdprdk")
    if args.jenis is None and args.province is None:
        measure(None, ("ppwp",), args.seed)
        measure(["34"], everything, args.seed)
        return
    measure(args.province, everything if args.jenis == "all" else tuple((args.jenis or "ppwp").split(",")), args.seed)


if __name__ == "__main__":
    main()

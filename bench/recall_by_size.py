"""Kecamatan recall of the regional statistics against the size of a manipulation (issue 6's recall goal).

For each manipulation and size, simulates one province with that manipulation alone in a random share
of its kecamatan (every form complete, a share ``--rate`` of each such kecamatan's TPS hit), replays
it offline through every detector, and prints how many of the hit kecamatan were flagged, the false
alarms among the clean kecamatan, and the TPS-level recall. The sizes are the simulator's ``added``
(share of the non-voters' ballots stuffed) and ``moved`` (share of the other candidates' votes moved to
the favoured one); the first row of each manipulation is the simulator's default.

    python bench/recall_by_size.py [--province 33] [--seed 7] [--rate 0.3] [--share 0.05]

Central Java (33, 117,000 TPS, 576 kecamatan) takes ~1.5 minutes per row on 2 cores; needs the
registry in ``../shared/data`` (else the synthetic registry, which is smaller).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pantau.evaluate import run
from pantau.replay import records_of, replay, write_alerts
from pantau.simulate import simulate

SIZES = (
    ("stuffing_incremental", "added", ("0.15-0.6", "0.6-1")),
    ("vote_shifting", "moved", ("0.1-0.4", "0.4-0.7", "0.7-1")),
    ("stuffing_extreme", "added", ("0.85-1",)),
)


def one_row(workdir: Path, args, anomaly: str, key: str, size: str) -> dict:
    night = workdir / f"{anomaly}-{size}.jsonl"
    spec = f"{anomaly}:rate={args.rate},target=random:{args.share}@kecamatan,{key}={size}"
    started = time.perf_counter()
    simulate(night, provinces=[args.province], seed=args.seed, anomalies=[spec], complete=True, images=False)
    alerts = workdir / f"{anomaly}-{size}.alerts.jsonl"
    with alerts.open("wb") as out:
        write_alerts(replay(records_of([night])), out)
    result = run(alerts, night.with_suffix(".truth.jsonl"), min_share=0.2)
    kecamatan = next(r for r in result.regional if r.anomaly == anomaly and r.level == "kecamatan")
    tps = next(r for r in result.rows if r.anomaly == anomaly)
    night.unlink()
    return {"anomaly": anomaly, "size": f"{key}={size}", "hit": kecamatan.hit, "flagged": kecamatan.detected,
            "false": kecamatan.false_alarms, "clean": kecamatan.clean, "tps_hit": tps.hit, "tps_found": tps.detected,
            "seconds": time.perf_counter() - started}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--province", default="33")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0.3, help="share of a hit kecamatan's TPS manipulated")
    parser.add_argument("--share", type=float, default=0.05, help="share of the province's kecamatan hit")
    args = parser.parse_args()
    header = f"{'manipulation':22} {'size':14} {'kecamatan flagged':>18} {'recall':>7} {'false alarms':>13} {'TPS found':>14} {'s':>5}"
    print(f"province {args.province}, seed {args.seed}: {args.rate:.0%} of the TPS of {args.share:.0%} of kecamatan, "
          f"every form complete; a kecamatan counts as hit when ≥ 20% of its TPS were", flush=True)  # fmt: skip
    print(header)
    with tempfile.TemporaryDirectory(prefix="pantau-recall-") as tmp:
        for anomaly, key, sizes in SIZES:
            for size in sizes:
                r = one_row(Path(tmp), args, anomaly, key, size)
                recall = f"{r['flagged'] / r['hit']:.0%}" if r["hit"] else "–"
                print(f"{r['anomaly']:22} {r['size']:14} {r['flagged']:>8} of {r['hit']:<7} {recall:>7} "
                      f"{r['false']:>5} of {r['clean']:<5} {r['tps_found']:>5} of {r['tps_hit']:<6} {r['seconds']:5.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

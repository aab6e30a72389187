"""Foundation benchmark: offline replay throughput and OCR suggestion accuracy.

    python bench/bench_foundation.py [--misreads 5000] [--seed 1]

Prints:
* offline replay throughput (documents/s, one process) on the real dev CSV (27,168 TPS) and on the
  shipped DKI Jakarta JSONL sample;
* OCR suggestion accuracy on synthetic single misreads (``pantau.misreads``) of real consistent
  documents: top-1 and among-suggestions rates, overall and per misread kind;
* the real corrections in ``tps_revisions_dev.csv.gz`` (value → different value between versions).

Uses ``../shared/data`` when present, else only the shipped sample.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

from pantau import demo_data
from pantau.detectors.form import check_form
from pantau.detectors.ocr import diagnose, misread_edit
from pantau.misreads import misread_trial
from pantau.replay import records_of, replay
from pantau.schemas import normalize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sirekap"
#: The corrections named in ../shared/data/README.md (855→85, 799→99, 551→10, 111→117, 80→880).
PUBLISHED_CORRECTIONS = ((855, 85), (799, 99), (551, 10), (117, 111), (880, 80))


def replay_throughput(path: Path, repeat: int = 3) -> tuple[int, float]:
    best = float("inf")
    documents = 0
    for _ in range(repeat):
        start = time.perf_counter()
        records = list(records_of([path]))
        documents = len(records)
        for _alert in replay(records):
            pass
        best = min(best, time.perf_counter() - start)
    return documents, best


def consistent_tallies(paths: list[Path]):
    for record in records_of(paths):
        if record.envelope is None:
            continue
        tally = normalize(record.envelope)
        form = check_form(tally)
        if form.consistent and len(form.judged) >= 14 and tally.chart_present and tally.admin_present:
            yield tally


def ocr_accuracy(tallies, n: int, seed: int) -> tuple[Counter, Counter, Counter]:
    rng = random.Random(seed)
    trials, top1, among = Counter(), Counter(), Counter()
    tallies = list(tallies)
    for _ in range(n):
        trial = misread_trial(tallies, rng)
        suggestions = diagnose(trial.corrupted, check_form(trial.corrupted))
        trials[trial.kind] += 1
        hits = [(s.field, s.proposed) for s in suggestions]
        if hits[:1] == [(trial.field, trial.true)]:
            top1[trial.kind] += 1
        if (trial.field, trial.true) in hits:
            among[trial.kind] += 1
    return trials, top1, among


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--misreads", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    inputs = [demo_data()]
    dev = SHARED / "tps_latest_dev.csv.gz"
    if dev.exists():
        inputs.insert(0, dev)
    else:
        print(f"note: {SHARED} absent: measuring on the shipped sample only", file=sys.stderr)

    print("Offline replay throughput (one process, best of 3, reading + validation + detectors):")
    for path in inputs:
        documents, seconds = replay_throughput(path)
        print(f"  {path.name:32s} {documents:>7,} documents in {seconds:6.3f} s = {documents / seconds:>9,.0f} documents/s")

    tallies = list(consistent_tallies(inputs))
    trials, top1, among = ocr_accuracy(tallies, args.misreads, args.seed)
    total = sum(trials.values())
    print(f"\nOCR suggestions on {total:,} synthetic single misreads of {len(tallies):,} real consistent documents:")
    print(f"  {'kind':15s} {'cases':>7s} {'top-1':>8s} {'among':>8s}")
    for kind in sorted(trials):
        print(f"  {kind:15s} {trials[kind]:>7,} {top1[kind] / trials[kind]:>8.1%} {among[kind] / trials[kind]:>8.1%}")
    print(f"  {'all':15s} {total:>7,} {sum(top1.values()) / total:>8.1%} {sum(among.values()) / total:>8.1%}")

    print("\nReal 2024 corrections published with the data (read → true): how pantau classifies them")
    for read, true in PUBLISHED_CORRECTIONS:
        edit = misread_edit(read, true)
        print(f"  {read:>4} → {true:<4} {edit.kind if edit else 'not a digit-level misread (arithmetic only)'}")

    revisions = SHARED / "tps_revisions_dev.csv.gz"
    if revisions.exists():
        corrections = Counter()
        previous = {}
        for record in records_of([revisions]):
            if record.envelope is None:
                continue
            tally = normalize(record.envelope)
            before = previous.get(tally.kode_tps)
            if before is not None:
                for field, old in before.counts.items():
                    new = tally.counts.get(field)
                    if new is not None and new != old:
                        corrections["value corrections"] += 1
                        suggestions = diagnose(before, check_form(before))
                        if suggestions and (suggestions[0].field, suggestions[0].proposed) == (field, new):
                            corrections["top-1"] += 1
            previous[tally.kode_tps] = tally
        print(f"\nReal corrections in {revisions.name}: {corrections['value corrections']} value → value changes"
              + (f", top-1 {corrections['top-1'] / corrections['value corrections']:.1%}" if corrections["value corrections"]
                 else " (every revision there fills in nulls: nothing to score)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``pantau simulate`` and ``pantau evaluate`` commands (wired into :mod:`pantau.cli`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pantau.schemas import JENIS

from .truth import NAMES

COMMANDS = ("simulate", "evaluate")


def _codes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate`` (with ``simulate fit``) and ``evaluate`` to the command's subparsers."""
    sim = sub.add_parser(
        "simulate", help="write (or publish) a synthetic election night with injected anomalies and their ground truth",
        description="Simulate an election night: every TPS of the registry (or the chosen provinces/kabupaten), "
        "numbers drawn to match the real 2024 distributions, the real arrival curve, halves arriving separately, "
        "later revisions, and injected anomalies listed in a truth file. `pantau simulate fit` refits the parameters.",
    )  # fmt: skip
    sim.add_argument("--out", default="night.jsonl", help="envelopes JSONL (.jsonl or .jsonl.gz; default night.jsonl)")
    sim.add_argument("--truth", help="ground-truth JSONL (default: next to --out, e.g. night.truth.jsonl)")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--province", action="append", metavar="PP[,PP...]", help="only these provinces (repeatable)")
    sim.add_argument("--kabkota", action="append", metavar="PPKK[,...]", help="only these kabupaten/kota (repeatable)")
    sim.add_argument("--jenis", default="ppwp", help=f"ballot types, comma-separated, or 'all' ({', '.join(JENIS)}; default ppwp)")
    sim.add_argument("--anomaly", action="append", metavar="SPEC",
                     help=f"NAME[:rate=R,target=T,seed=S,jenis=J+J,candidate=C,...], NAME one of {', '.join(NAMES)}; "
                     "target: all, region codes joined by +, or random:N@level (repeatable; default: every anomaly at "
                     "its default rate; see pantau.simulate.anomalies)")  # fmt: skip
    sim.add_argument("--no-anomalies", action="store_true", help="a clean night (the truth file lists nothing)")
    sim.add_argument("--registry", help="TPS registry CSV (default: ../shared/data/sirekap/tps_registry.csv.gz if "
                     "present, else a synthetic registry)")  # fmt: skip
    sim.add_argument("--synthetic-registry", action="store_true", help="use the synthetic registry even if the real one is present")
    sim.add_argument("--params", help="parameter file (default: the shipped pantau/data/sim_params.json)")
    sim.add_argument("--complete", action="store_true", help="every form ends with both halves (none stays half-digitised)")
    sim.add_argument("--no-images", action="store_true", help="leave out the image URLs (smaller output)")
    sim.add_argument("--broker", metavar="HOST:PORT", help="publish to the submissions topic instead of writing --out")
    sim.add_argument("--rate", type=float, help="--broker: submissions per second (default: as fast as possible)")
    sim.add_argument("--topic", help="--broker: topic (default: PANTAU_TOPIC_SUBMISSIONS or sirekap.submissions)")
    sim_sub = sim.add_subparsers(dest="simulate_command", metavar="{fit}")
    fit = sim_sub.add_parser("fit", help="refit the parameters from the real 2024 data (../shared/data/sirekap)")
    fit.add_argument("--from", dest="source", default="../shared/data/sirekap", help="directory of the reference data")
    fit.add_argument("--out", dest="fit_out", help="parameter file to write (default: the shipped pantau/data/sim_params.json)")

    ev = sub.add_parser("evaluate", help="score alerts against the ground truth of a simulated night")
    ev.add_argument("alerts", help="alerts JSONL (pantau replay --offline --out), or kafka://HOST:PORT[/TOPIC] to read "
                    "the alerts topic from its beginning until it is idle for 5 s")  # fmt: skip
    ev.add_argument("truth", help="the truth file written by pantau simulate")
    ev.add_argument("--min-share", type=float, default=0.10, help="regional scoring: share of hit TPS that makes a region hit")
    ev.add_argument("--json", help="also write the figures to this JSON file")


def run_command(args: argparse.Namespace) -> int:
    if args.command == "evaluate":
        return cmd_evaluate(args)
    if args.simulate_command == "fit":
        return cmd_fit(args)
    return cmd_simulate(args)


def cmd_fit(args: argparse.Namespace) -> int:
    from .fit import fit, write

    source = Path(args.source)
    if not (source / "tps_latest_dev.csv.gz").exists():
        print(f"pantau simulate fit: {source} does not hold the reference data (tps_latest_dev.csv.gz)", file=sys.stderr)
        return 2
    path = write(fit(source), args.fit_out)
    print(f"parameters written to {path}", file=sys.stderr)
    return 0


def _options(args: argparse.Namespace) -> dict:
    jenis = JENIS if args.jenis.strip() == "all" else tuple(j.strip() for j in args.jenis.split(",") if j.strip())
    return {
        "seed": args.seed,
        "provinces": _codes(args.province),
        "kabkota": _codes(args.kabkota),
        "jenis": jenis,
        "anomalies": [] if args.no_anomalies else args.anomaly,
        "registry": args.registry,
        "synthetic_registry": args.synthetic_registry,
        "params": args.params,
        "complete": args.complete,
        "images": not args.no_images,
    }


def cmd_simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import simulate

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        options = _options(args)
        if args.broker:
            return _publish(args, options, console)
        summary = simulate(args.out, args.truth, **options)
    except ValueError as exc:
        console.print(f"pantau simulate: {exc}", markup=False)
        return 2
    _report(console, summary)
    console.print(f"envelopes: {summary.out} ({summary.envelopes:,} lines, {summary.seconds:.1f} s); truth: {summary.truth}")
    console.print(f"next: pantau replay --offline --out alerts.jsonl {summary.out} && pantau evaluate alerts.jsonl {summary.truth}")
    return 0


def _report(console, summary) -> None:
    units = ", ".join(f"{j} {n:,}" for j, n in summary.units.items())
    console.print(f"simulated [bold]{summary.tps:,}[/] TPS ({units}); registry: {summary.registry}")
    if summary.truth_rows:
        console.print("injected (TPS×ballot): " + ", ".join(f"{k} {v:,}" for k, v in summary.truth_rows.items()))


def _publish(args: argparse.Namespace, options: dict, console) -> int:
    from pantau.schemas import InvalidSubmission, parse_envelope
    from pantau.sources import Record
    from pantau.stream.ingest import publish
    from pantau.stream.settings import Settings

    from . import simulate_lines, truth_path_for

    truth = Path(args.truth) if args.truth else truth_path_for(args.out)
    lines, summary = simulate_lines(truth, **options)
    _report(console, summary)

    def records():
        for n, line in enumerate(lines, 1):
            try:
                yield Record("simulate", n, line, envelope=parse_envelope(line))
            except InvalidSubmission as exc:  # never expected: the simulator writes valid envelopes
                yield Record("simulate", n, line, error=exc)

    settings = Settings.from_env(broker=args.broker)
    topic = args.topic or settings.topic_submissions
    result = publish(records(), settings.bootstrap, topic, rate=args.rate, security=settings.kafka_options())
    console.print(f"published {result.published:,} envelopes to {topic} in {result.seconds:.1f} s; truth: {truth}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import orjson

    from pantau.evaluate import print_evaluation, run

    result = run(args.alerts, args.truth, min_share=args.min_share)
    print_evaluation(result)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
    return 0

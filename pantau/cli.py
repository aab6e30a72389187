"""The ``pantau`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

from . import __version__, demo_data
from .sources import Record


def _progress(records: Iterable[Record], label: str) -> Iterator[Record]:
    """Show a live count on a terminal; pass records through untouched otherwise."""
    if not sys.stderr.isatty():
        yield from records
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description} {task.completed:,} records"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(label, total=None)
        for n, record in enumerate(records, 1):
            yield record
            if n % 2048 == 0:
                progress.update(task, completed=n)


def cmd_replay_offline(inputs: list[str], out: str, rejects: str | None, verdicts: str | None = None) -> int:
    from .replay import ReplaySummary, print_summary, read_verdicts, records_of, replay, write_alerts, write_rejections

    suppressions = None
    if verdicts:
        try:
            suppressions = read_verdicts(verdicts)
        except (OSError, ValueError) as exc:
            print(f"pantau replay: --verdicts: {exc}", file=sys.stderr)
            return 1
    summary = ReplaySummary()
    with ExitStack() as stack:
        sink = sys.stdout.buffer if out == "-" else stack.enter_context(open(out, "wb"))
        records: Iterable[Record] = _progress(records_of(inputs), "replaying")
        if rejects:
            records = write_rejections(records, stack.enter_context(open(rejects, "wb")))
        written = write_alerts(replay(records, summary=summary, suppressions=suppressions), sink)
    print_summary(summary, written)
    if out != "-":
        print(f"alerts written to {out}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.offline:
        from .demo import run

        return run(exit_when_done=args.exit_when_done, lang=args.lang, inputs=args.input)
    return cmd_demo_offline(args.out)


def cmd_demo_offline(out: str) -> int:
    print(f"pantau {__version__} demo: offline replay of 1,000 real 2024 DKI Jakarta Sirekap documents\n"
          f"({demo_data().name}, MIT-licensed sample; see pantau/data/NOTICE.md)\n", file=sys.stderr)  # fmt: skip
    code = cmd_replay_offline([str(demo_data())], out, None)
    _print_examples(Path(out))
    return code


def _print_examples(alerts_file: Path, limit: int = 5) -> None:
    import orjson
    from rich.console import Console

    from .console import print_alert

    console = Console(stderr=True, highlight=False)
    console.print("\n[bold]Examples[/] (misread suggestions first):")
    alerts = [orjson.loads(line) for line in alerts_file.read_bytes().splitlines()]
    alerts.sort(key=lambda a: (a["detector"] != "ocr.misread", a["severity"] != "critical"))
    for alert in alerts[:limit]:
        print_alert(console, alert)
    if not alerts:
        console.print("  (none)")


def cmd_replay_broker(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .replay import records_of
    from .stream.ingest import publish
    from .stream.settings import Settings

    settings = Settings.from_env(**({"broker": args.broker} if args.broker else {}))
    topic = args.topic or settings.topic_submissions
    records = _progress(records_of(args.inputs), f"publishing to {topic}")
    summary = publish(records, settings.bootstrap, topic, rate=args.rate, security=settings.kafka_options())
    Console(stderr=True).print(
        f"published {summary.published:,} messages to {topic} in {summary.seconds:.1f} s "
        f"({summary.published / max(summary.seconds, 1e-9):,.0f}/s); {summary.invalid:,} of them failed validation "
        "and go to the dead-letter topic with the reason"
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .stream.app import create_app, ensure_topics
    from .stream.settings import Settings

    overrides = {k: v for k, v in (("broker", args.broker), ("web_port", args.web_port)) if v is not None}
    settings = Settings.from_env(**overrides)
    ensure_topics(settings)
    app = create_app(settings)
    web = ["--without-web"] if args.without_web else ["--web-port", str(settings.web_port), "--web-host", settings.web_host]
    sys.argv = ["pantau-worker", "worker", "--loglevel", args.loglevel, *web]
    app.main()
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from .stream.broker import main as broker_main

    return broker_main(["--port", str(args.port), *[a for t in args.topic for a in ("--topic", t)]])


def cmd_alerts(args: argparse.Namespace) -> int:
    import orjson
    from rich.console import Console

    from .console import print_alert
    from .stream.ingest import topic_consumer
    from .stream.settings import Settings

    settings = Settings.from_env(**({"broker": args.broker} if args.broker else {}))
    console = Console(highlight=False)
    consumer = topic_consumer(settings.bootstrap, args.topic or settings.topic_alerts, from_beginning=not args.new,
                              security=settings.kafka_options())
    try:
        while True:
            for message in consumer:
                alert = orjson.loads(message.value)
                if args.min_severity and SEVERITIES.index(alert["severity"]) < SEVERITIES.index(args.min_severity):
                    continue
                print_alert(console, alert, args.lang)
            if not args.follow:
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()


SEVERITIES = ["info", "warning", "critical"]


def cmd_schemas_export(directory: str) -> int:
    from pantau.schemas.export import export

    for path in export(Path(directory)):
        print(path)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit
    from .replay import ASSESS_EVERY, print_summary

    args.assess_every = ASSESS_EVERY if args.assess_every is None else args.assess_every
    if args.jobs < 1 or args.assess_every < 1:
        print("pantau audit: --jobs and --assess-every must be at least 1", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        progress = None
        if sys.stderr.isatty():
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            bar = stack.enter_context(Progress(SpinnerColumn(), TextColumn("replaying {task.completed:,} records"),
                                               TimeElapsedColumn(), transient=True))  # fmt: skip
            task = bar.add_task("audit", total=None)
            progress = lambda records: bar.update(task, completed=records)  # noqa: E731
        try:
            run, written = audit(args.inputs, args.out, jobs=args.jobs, assess_every=args.assess_every,
                                 verdicts_file=args.verdicts, desk_db=args.desk_db, progress=progress)  # fmt: skip
        except (OSError, ValueError) as exc:
            print(f"pantau audit: {exc}", file=sys.stderr)
            return 1
    print_summary(run.summary, len(run.alerts))
    print(f"report: {written[0]} (and {', '.join(p.name for p in written[1:])})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pantau", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pantau {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="embedded broker + worker on the shipped real 2024 DKI Jakarta documents")
    demo.add_argument("--offline", action="store_true", help="no broker: the offline replay of the same data")
    demo.add_argument("--out", default="pantau-demo-alerts.jsonl", help="with --offline: where to write the alerts")
    demo.add_argument("--exit-when-done", action="store_true", help="stop once every document is processed")
    demo.add_argument("--lang", choices=["en", "id"], default="en", help="language of the reasons shown")
    demo.add_argument("--input", action="append", metavar="FILE",
                      help="replay this file instead of the shipped documents (e.g. a simulated night); repeatable")

    rep = sub.add_parser("replay", help="run archived submissions through pantau (offline, or into the broker)")
    rep.add_argument("inputs", nargs="+", help=".jsonl/.jsonl.gz envelopes or .csv/.csv.gz flattened rows")
    mode = rep.add_mutually_exclusive_group(required=True)
    mode.add_argument("--offline", action="store_true", help="run the detectors in this process, no broker")
    mode.add_argument("--broker", metavar="HOST:PORT", help="publish to the submissions topic of this broker")
    rep.add_argument("--out", default="-", help="--offline: alerts JSONL file ('-' = stdout)")
    rep.add_argument("--rejects", help="--offline: also write refused records with their reasons to this JSONL file")
    rep.add_argument("--verdicts", metavar="FILE.jsonl",
                     help="--offline: desk verdicts, one per line; alerts called false alarms are left out, as in the stream")
    rep.add_argument("--rate", type=float, help="--broker: submissions per second (default: as fast as possible)")
    rep.add_argument("--topic", help="--broker: topic (default: PANTAU_TOPIC_SUBMISSIONS or sirekap.submissions)")

    aud = sub.add_parser("audit", help="replay an archive and write the audit report (HTML, CSV, JSONL)")
    aud.add_argument("inputs", nargs="+", help=".jsonl/.jsonl.gz envelopes or .csv/.csv.gz flattened rows, in arrival order")
    aud.add_argument("--out", default="report", help="report directory (default: report)")
    aud.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                     help="replay processes (default: one per core); the report is the same for any number")
    aud.add_argument("--assess-every", type=int, metavar="N",
                     help="records between two regional assessments (default: as pantau replay, 50,000)")
    aud.add_argument("--verdicts", metavar="FILE.jsonl", help="desk verdicts to join (an export of the verdicts topic)")
    aud.add_argument("--desk-db", metavar="URL", help="desk database (SQLAlchemy URL or SQLite file) to join verdicts from")

    worker = sub.add_parser("worker", help="run a pantau stream worker (settings: PANTAU_* environment)")
    worker.add_argument("--broker", metavar="HOST:PORT", help="overrides PANTAU_BROKER")
    worker.add_argument("--web-port", type=int, help="port of /health and /metrics (overrides PANTAU_WEB_PORT)")
    worker.add_argument("--without-web", action="store_true", help="no /health or /metrics")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warn", "error", "crit"])

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu) on 127.0.0.1")
    broker.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    broker.add_argument("--topic", action="append", default=[], metavar="NAME[:PARTITIONS]", help="create a topic")

    alerts = sub.add_parser("alerts", help="print alerts from the alerts topic as readable lines")
    alerts.add_argument("--broker", metavar="HOST:PORT", help="overrides PANTAU_BROKER")
    alerts.add_argument("--follow", action="store_true", help="keep printing new alerts until Ctrl-C")
    alerts.add_argument("--new", action="store_true", help="only alerts published from now on")
    alerts.add_argument("--min-severity", choices=SEVERITIES)
    alerts.add_argument("--lang", choices=["en", "id"], default="en")
    alerts.add_argument("--topic", help="default: PANTAU_TOPIC_ALERTS or pantau.alerts")

    schemas = sub.add_parser("schemas", help="JSON Schemas of the topic messages")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write one JSON Schema file per topic")
    export.add_argument("directory")

    from .simulate.commands import add_commands  # simulate, simulate fit, evaluate

    add_commands(sub)
    from pantau.desk.commands import add_commands as add_desk_commands

    add_desk_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "replay":
        if args.offline:
            return cmd_replay_offline(args.inputs, args.out, args.rejects, args.verdicts)
        if args.verdicts:
            build_parser().error("--verdicts applies to --offline (the stream reads verdicts from its topic)")
        return cmd_replay_broker(args)
    if args.command == "audit":
        return cmd_audit(args)
    if args.command == "worker":
        return cmd_worker(args)
    if args.command == "broker":
        return cmd_broker(args)
    if args.command == "alerts":
        return cmd_alerts(args)
    if args.command == "schemas":
        return cmd_schemas_export(args.directory)
    if args.command in ("simulate", "evaluate"):
        from .simulate.commands import run_command

        return run_command(args)
    if args.command == "desk":
        from pantau.desk.commands import run_command as run_desk_command

        return run_desk_command(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())

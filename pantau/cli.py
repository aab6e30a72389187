"""The ``pantau`` command."""

from __future__ import annotations

import argparse
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


def cmd_replay_offline(inputs: list[str], out: str, rejects: str | None) -> int:
    from .replay import ReplaySummary, print_summary, records_of, replay, write_alerts, write_rejections

    summary = ReplaySummary()
    with ExitStack() as stack:
        sink = sys.stdout.buffer if out == "-" else stack.enter_context(open(out, "wb"))
        records: Iterable[Record] = _progress(records_of(inputs), "replaying")
        if rejects:
            records = write_rejections(records, stack.enter_context(open(rejects, "wb")))
        written = write_alerts(replay(records, summary=summary), sink)
    print_summary(summary, written)
    if out != "-":
        print(f"alerts written to {out}", file=sys.stderr)
    return 0


def cmd_demo(out: str) -> int:
    print(f"pantau {__version__} demo: offline replay of 1,000 real 2024 DKI Jakarta Sirekap documents\n"
          f"({demo_data().name}, MIT-licensed sample; see pantau/data/NOTICE.md)\n", file=sys.stderr)  # fmt: skip
    code = cmd_replay_offline([str(demo_data())], out, None)
    _print_examples(Path(out))
    return code


def _print_examples(alerts_file: Path, limit: int = 5) -> None:
    import orjson
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    shown = 0
    console.print("\n[bold]Examples[/] (misread suggestions first):")
    lines = [orjson.loads(line) for line in alerts_file.read_bytes().splitlines()]
    lines.sort(key=lambda a: (a["detector"] != "ocr.misread", a["severity"] != "critical"))
    for alert in lines[:limit]:
        shown += 1
        console.print(f"{alert['kode_tps']} [{alert['severity']}] {alert['detector']}: {alert['reason_en']}", markup=False)
    if not shown:
        console.print("  (none)")


def cmd_schemas_export(directory: str) -> int:
    from pantau.schemas.export import export

    for path in export(Path(directory)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pantau", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pantau {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run pantau on the shipped real 2024 DKI Jakarta documents")
    demo.add_argument("--out", default="pantau-demo-alerts.jsonl", help="where to write the alerts")

    rep = sub.add_parser("replay", help="run the detectors over archived submissions")
    rep.add_argument("inputs", nargs="+", help=".jsonl/.jsonl.gz envelopes or .csv/.csv.gz flattened rows")
    rep.add_argument("--offline", action="store_true", required=True, help="run in this process, no broker")
    rep.add_argument("--out", default="-", help="alerts JSONL file ('-' = stdout)")
    rep.add_argument("--rejects", help="also write refused records with their reasons to this JSONL file")

    schemas = sub.add_parser("schemas", help="JSON Schemas of the topic messages")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write one JSON Schema file per topic")
    export.add_argument("directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return cmd_demo(args.out)
    if args.command == "replay":
        return cmd_replay_offline(args.inputs, args.out, args.rejects)
    if args.command == "schemas":
        return cmd_schemas_export(args.directory)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())

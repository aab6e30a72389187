"""``pantau desk``: serve the desk, manage accounts, load files, verify the audit log."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
from contextlib import contextmanager
from collections.abc import Iterator

from .db import DEFAULT_URL, connect


def add_commands(sub: argparse._SubParsersAction) -> None:
    desk = sub.add_parser("desk", help="the human verification desk (web application)")
    desk.add_argument("--db", default=os.environ.get("PANTAU_DESK_DB", DEFAULT_URL),
                      help="SQLAlchemy database URL (default: PANTAU_DESK_DB or sqlite:///pantau-desk.sqlite3)")  # fmt: skip
    cmds = desk.add_subparsers(dest="desk_command", required=True)
    serve = cmds.add_parser("serve", help="run the desk web application (and its Kafka feed with --broker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PANTAU_DESK_PORT", "8000")))
    serve.add_argument("--broker", default=os.environ.get("PANTAU_BROKER"), help="consume alerts/submissions and publish verdicts here")
    serve.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    serve.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics server (0.0.0.0 in a container)")
    serve.add_argument("--secure-cookies", action="store_true", default=os.environ.get("PANTAU_DESK_SECURE_COOKIES") == "1",
                       help="mark cookies Secure (behind HTTPS)")  # fmt: skip
    user = cmds.add_parser("create-user", help="add an account (password read from the terminal, or stdin with --password-stdin)")
    user.add_argument("username")
    user.add_argument("--role", choices=("verifier", "supervisor", "auditor"), required=True)
    user.add_argument("--display-name")
    user.add_argument("--password-stdin", action="store_true")
    verify = cmds.add_parser("verify-audit", help="check the audit log's hash chain and the decisions against it")
    verify.add_argument("--head", metavar="SEQ:HASH", help="a head published earlier (e.g. from a verdict): proves nothing was cut off")
    load = cmds.add_parser("load", help="fill the database from files instead of Kafka")
    load.add_argument("--alerts", nargs="*", default=[], help="alerts JSONL (pantau replay --out)")
    load.add_argument("--submissions", nargs="*", default=[], help="submission archives (JSONL envelopes, CSV)")


def run_command(args: argparse.Namespace) -> int:
    return {"serve": cmd_serve, "create-user": cmd_create_user, "verify-audit": cmd_verify_audit, "load": cmd_load}[args.desk_command](args)


@contextmanager
def serving(app, host: str, port: int) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Serve ``app`` from a background thread while the block runs; yields its base URL."""
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="desk-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the desk did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    sessions = connect(args.db)
    with desk_feed(sessions, args.broker), metrics_server(sessions, args.metrics_port, args.metrics_host):
        from .web import create_app

        print(f"pantau desk on http://{args.host}:{args.port}/ (database {args.db})", file=sys.stderr)
        uvicorn.run(create_app(sessions, secure_cookies=args.secure_cookies), host=args.host, port=args.port, log_level="warning")
    return 0


@contextmanager
def desk_feed(sessions, broker: str | None, settings=None) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Run the Kafka feed in a thread while the block runs (nothing without a broker).

    Topic names come from ``settings`` (default: the worker's ``PANTAU_*`` environment).
    """
    if not broker:
        yield
        return
    from pantau.stream.settings import Settings

    from .feed import Feed

    settings = settings or Settings.from_env()
    feed = Feed(sessions, broker, settings.topic_alerts, settings.topic_submissions, settings.topic_verdicts,
                security=settings.kafka_options())
    thread = threading.Thread(target=feed.run, name="desk-feed", daemon=True)
    thread.start()
    try:
        yield
    finally:
        feed.stop()
        thread.join(10)
        feed.close()


@contextmanager
def metrics_server(sessions, port: int | None, host: str = "127.0.0.1") -> Iterator[None]:  # type: ignore[no-untyped-def]
    from .metrics import DESK

    DESK.watch(sessions)
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=DESK.registry)
    yield


def cmd_create_user(args: argparse.Namespace) -> int:
    from . import audit
    from .auth import PolicyError, create_user

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"password for {args.username}: ")
    sessions = connect(args.db)
    with sessions() as session:
        try:
            user = create_user(session, args.username, password, args.role, args.display_name)
        except PolicyError as exc:
            print(f"pantau desk: {exc}", file=sys.stderr)
            return 2
        audit.append(session, "admin-cli", "create_user", f"user:{user.username}", {"role": user.role})
        session.commit()
    print(f"created {args.role} {args.username}")
    return 0


def cmd_verify_audit(args: argparse.Namespace) -> int:
    from .audit import verify

    head = None
    if args.head:
        seq, _, digest = args.head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            print("pantau desk: --head must be SEQ:HASH (a 64-hex-digit hash)", file=sys.stderr)
            return 2
        head = (int(seq), digest)
    with connect(args.db)() as session:
        report = verify(session, head)
    if report.ok:
        print(f"audit log intact: {report.entries} entries, head {report.head[0]}:{report.head[1]}")
        return 0
    print(f"audit log BROKEN ({len(report.problems)} problems):", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_load(args: argparse.Namespace) -> int:
    from .feed import load_files

    submissions, alerts = load_files(connect(args.db), args.alerts, args.submissions)
    print(f"loaded {submissions:,} submission versions and {alerts:,} alerts")
    return 0

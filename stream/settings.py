"""Worker settings, read from the environment (``PANTAU_*``), with defaults for development.

=================================  ===========================================================  ====================
variable                           meaning                                                      default
=================================  ===========================================================  ====================
``PANTAU_BROKER``                  Kafka bootstrap servers, ``host:port[,host:port]``            ``127.0.0.1:9092``
``PANTAU_APP_ID``                  consumer group / app id (workers with one id share work)    ``pantau``
``PANTAU_PARTITIONS``              partitions of the topics pantau creates                      ``8``
``PANTAU_REPLICATION``             replication factor of the topics pantau creates              ``1``
``PANTAU_TOPIC_SUBMISSIONS``       submissions topic (key: 4-digit kab/kota code)               ``sirekap.submissions``
``PANTAU_TOPIC_ALERTS``            alerts topic (key: the alert's region)                       ``pantau.alerts``
``PANTAU_TOPIC_DEADLETTER``        dead-letter topic                                            ``pantau.deadletter``
``PANTAU_TOPIC_VERDICTS``          desk verdicts topic                                          ``pantau.verdicts``
``PANTAU_TOPIC_REGIONAL``          region sums from the workers to the assessor (1 partition)  ``pantau.regional``
``PANTAU_FDR``                     false discovery rate of the regional tests, per level        ``0.01``
``PANTAU_ASSESS_INTERVAL``         seconds between regional assessments                         ``5``
``PANTAU_SWEEP_INTERVAL``          seconds between sweeps (regions grown by 10% tested)         ``1800``
``PANTAU_PEER_FAR``                false-alarm rate of the TPS peer-outlier detector            ``0.002``
``PANTAU_STORE``                   Faust table store (``memory://``, ``rocksdb://``)            ``memory://``
``PANTAU_DATA_DIR``                worker data directory                                        ``./pantau-data``
``PANTAU_WEB_HOST`` / ``_PORT``    ``/health`` and ``/metrics``                                 ``127.0.0.1`` / ``6066``
``PANTAU_SESSION_TIMEOUT``         consumer group session timeout, seconds                      ``10``
``PANTAU_HEARTBEAT_INTERVAL``      consumer heartbeat interval, seconds                         ``1``
``PANTAU_COMMIT_INTERVAL``         offset commit interval, seconds                              ``0.5``
``PANTAU_BATCH_SIZE`` / ``_WITHIN``  messages per batch (a fetch of submissions; verdicts,    ``500`` / ``0.05``
                                   regional sums), and the longest wait to fill one of the latter
``PANTAU_FLUSH_INTERVAL``          seconds between two stores of the states (revisions, regions)  ``1``
                                   and acknowledgements of the submissions processed since
``PANTAU_FLUSH_MAX``               submissions processed before they are stored, at the latest  ``20000``
``PANTAU_PRODUCER_BATCH_BYTES``    producer batch size (alerts, dead letters)                   ``16384``
``PANTAU_CHANGELOG_BATCH_BYTES``   revision-table changelog batch size; ``1`` on the embedded   ``16384``
                                   broker (below)
``PANTAU_FETCH_MAX_WAIT_MS``      longest a fetch waits on the broker for data                 ``500``
``PANTAU_RECONNECT_BACKOFF_MS``    first wait before reconnecting to a broker that failed; doubles per  ``50``
                                   consecutive failure (stream/backoff.py)
``PANTAU_RECONNECT_BACKOFF_MAX_MS``  longest wait between two connection attempts to a broker      ``1000``
``PANTAU_STALL_SECONDS``           a held submissions partition behind its end and not moving for this  ``120``
                                   long is reported stalled (/health 503)
``PANTAU_MAX_MESSAGE_BYTES``       largest message the worker produces (a dead letter carries   ``4194304``
                                   its original, base64); the topics are created to accept it
``PANTAU_CAPACITY_DOMESTIC``       largest plausible count at a domestic TPS                     ``500``
``PANTAU_CAPACITY_OVERSEAS``       largest plausible count at an overseas unit (province 99)    ``10000``
``PANTAU_STANDBY_REPLICAS``        workers that keep a warm copy of each table partition: a quick  ``1``
                                   takeover, at the cost of reading every other worker's changelog
                                   (``0`` on a CPU-bound cluster: bench/bench_scaleout.py)
``PANTAU_SECURITY_PROTOCOL``       ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``           ``PLAINTEXT``
``PANTAU_SASL_MECHANISM``          ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``                    ``PLAIN``
``PANTAU_SASL_USERNAME`` / ``_PASSWORD``  SASL credentials (required with a SASL protocol)
``PANTAU_SSL_CAFILE``              CA bundle that signed the brokers' certificates (default: system)
``PANTAU_SSL_CERTFILE`` / ``_KEYFILE``  client certificate and key (mutual TLS)
``PANTAU_TPS_EXPECTED_FILE``       JSON ``{"tps": {"PP": count}}`` of TPS per province (default: 2024's)
=================================  ===========================================================  ====================

The embedded Tansu broker reports a wrong end offset after a produce batch of several records, which
makes Faust's table recovery stop early; ``pantau demo`` and the tests therefore run with
``PANTAU_CHANGELOG_BATCH_BYTES=1`` (one changelog record per batch). Apache Kafka needs no such setting.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pantau.detectors.form import Capacity

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Settings:
    broker: str = "127.0.0.1:9092"
    app_id: str = "pantau"
    partitions: int = 8
    replication: int = 1
    topic_submissions: str = "sirekap.submissions"
    topic_alerts: str = "pantau.alerts"
    topic_deadletter: str = "pantau.deadletter"
    topic_verdicts: str = "pantau.verdicts"
    topic_regional: str = "pantau.regional"
    fdr: float = 0.01
    assess_interval: float = 5.0
    sweep_interval: float = 1800.0
    peer_far: float = 0.002
    store: str = "memory://"
    data_dir: Path = field(default_factory=lambda: Path("pantau-data"))
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    commit_interval: float = 0.5
    batch_size: int = 500
    batch_within: float = 0.05
    flush_interval: float = 1.0
    flush_max: int = 20_000
    producer_batch_bytes: int = 16384
    changelog_batch_bytes: int = 16384
    max_message_bytes: int = 4 << 20
    fetch_max_wait_ms: int = 500
    reconnect_backoff_ms: int = 50
    reconnect_backoff_max_ms: int = 1000
    stall_seconds: float = 120.0
    capacity_domestic: int = 500
    capacity_overseas: int = 10_000
    standby_replicas: int = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    tps_expected_file: str = ""

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``PANTAU_*`` variables; keyword arguments win over the environment."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"PANTAU_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"PANTAU_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.batch_size < 1 or settings.partitions < 1 or settings.standby_replicas < 0 or settings.flush_max < 1:
            raise ValueError("PANTAU_BATCH_SIZE, PANTAU_PARTITIONS and PANTAU_FLUSH_MAX must be at least 1, "
                             "PANTAU_STANDBY_REPLICAS at least 0")
        if not 0 < settings.flush_interval <= 60:
            raise ValueError(f"PANTAU_FLUSH_INTERVAL={settings.flush_interval} must lie in (0, 60] seconds")
        if not (0 < settings.fdr < 1 and 0 < settings.peer_far < 1 and settings.assess_interval > 0
                and settings.sweep_interval > 0):
            raise ValueError("PANTAU_FDR and PANTAU_PEER_FAR must lie in (0, 1), PANTAU_ASSESS_INTERVAL and "
                             "PANTAU_SWEEP_INTERVAL above 0")
        if not 0 < settings.reconnect_backoff_ms <= settings.reconnect_backoff_max_ms:
            raise ValueError("PANTAU_RECONNECT_BACKOFF_MS must be above 0 and at most PANTAU_RECONNECT_BACKOFF_MAX_MS")
        if not 1 <= settings.web_port <= 65535:
            raise ValueError(f"PANTAU_WEB_PORT={settings.web_port} is not a TCP port (1-65535)")
        settings.check_security()
        return settings

    def check_security(self) -> None:
        """Refuse a Kafka security configuration that cannot work, before any connection is tried."""
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"PANTAU_SECURITY_PROTOCOL={self.security_protocol!r}: one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(f"PANTAU_SASL_MECHANISM={self.sasl_mechanism!r}: one of {', '.join(SASL_MECHANISMS)}")
            if not (self.sasl_username and self.sasl_password):
                raise ValueError(f"{self.security_protocol} needs PANTAU_SASL_USERNAME and PANTAU_SASL_PASSWORD")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("PANTAU_SSL_KEYFILE needs PANTAU_SSL_CERTFILE")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "tps_expected_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"PANTAU_{name.upper()}={path!r}: no such file")

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for the SSL protocols (server certificates verified, hostnames checked)."""
        if not self.security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile or None)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
        return context

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        import faust

        if self.security_protocol == "PLAINTEXT":
            return None
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                     ssl_context=self.ssl_context(), mechanism=self.sasl_mechanism)  # fmt: skip

    def aiokafka_options(self) -> dict[str, Any]:
        """Security options for aiokafka clients (the changelog producer)."""
        return self._security_options(ssl_context=self.ssl_context())

    def kafka_options(self) -> dict[str, Any]:
        """Security options for kafka-python clients (publisher, admin, the desk's feed)."""
        files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile}
        return self._security_options(**{k: v for k, v in files.items() if v and self.security_protocol.endswith("SSL")})

    def _security_options(self, **tls: Any) -> dict[str, Any]:
        if self.security_protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.endswith("SSL"):
            options.update({k: v for k, v in tls.items() if v is not None})
        if self.security_protocol.startswith("SASL"):
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)  # fmt: skip
        return options

    @property
    def broker_url(self) -> str:
        """Faust's form: ``kafka://host:port;kafka://host:port``."""
        hosts = [h.strip() for h in self.broker.split(",") if h.strip()]
        return ";".join(h if "://" in h else f"kafka://{h}" for h in hosts)

    @property
    def bootstrap(self) -> str:
        """kafka-python / aiokafka form: ``host:port,host:port``."""
        return ",".join(h.split("://", 1)[-1] for h in self.broker_url.split(";"))

    @property
    def capacity(self) -> Capacity:
        return Capacity(domestic=self.capacity_domestic, overseas=self.capacity_overseas)

    @property
    def topic_configs(self) -> dict[str, str]:
        """Kafka topic configs for the topics pantau creates."""
        return {"max.message.bytes": str(self.max_message_bytes)}

    @property
    def topics(self) -> dict[str, int]:
        """The topics pantau reads and writes, with their partition counts."""
        topics = {t: self.partitions for t in (self.topic_submissions, self.topic_alerts,
                                               self.topic_deadletter, self.topic_verdicts)}  # fmt: skip
        topics[self.topic_regional] = 1  # one assessor sees every region
        return topics

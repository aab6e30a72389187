"""Between the desk's database and Kafka: alerts and submissions in, verdicts out.

:class:`Feed` consumes ``pantau.alerts`` and ``sirekap.submissions`` (consumer group
``pantau-desk``) and commits the consumer offsets only *after* the database transaction holding a
batch has committed: a crash in between redelivers the batch, which the database ignores (alert ids,
message sources). Messages that are not valid (a refused submission is the worker's dead letter, not
the desk's business) are counted and skipped.

The outbox (verdicts written with their decision) is published with ``acks=all`` and marked sent
only when the broker acknowledged it: a verdict may go out twice after a crash, never zero times;
verdict ids make the second copy harmless.

:func:`load_files` fills the database from files instead (offline replay's alerts, archives of
submissions): the desk without a broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import orjson
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from pantau.schemas import Alert, InvalidSubmission
from pantau.sources import read_records

from . import cases
from .db import Outbox
from .metrics import DESK

log = logging.getLogger(__name__)

GROUP = "pantau-desk"
OUTBOX_BATCH = 500


class Feed:
    """The desk's Kafka consumer and verdict publisher (kafka-python; ``security`` passes TLS/SASL options)."""

    def __init__(self, sessions: sessionmaker, bootstrap: str, alerts_topic: str = "pantau.alerts",
                 submissions_topic: str = "sirekap.submissions", verdicts_topic: str = "pantau.verdicts",
                 group: str = GROUP, security: dict | None = None) -> None:  # fmt: skip
        from kafka import KafkaConsumer, KafkaProducer

        self.sessions = sessions
        self.alerts_topic, self.submissions_topic, self.verdicts_topic = alerts_topic, submissions_topic, verdicts_topic
        options = {"bootstrap_servers": bootstrap, **(security or {})}
        self.consumer = KafkaConsumer(alerts_topic, submissions_topic, group_id=group, enable_auto_commit=False,
                                      auto_offset_reset="earliest", max_poll_records=1000, **options)  # fmt: skip
        self.producer = KafkaProducer(acks="all", retries=5, **options)
        self.stopping = threading.Event()

    def consume_once(self, timeout_ms: int = 500) -> int:
        """Apply one polled batch; commit the database, then the offsets. Returns messages applied.

        A message the database refuses (a value too long for its column, say) would fail its batch
        forever: the batch is then applied message by message and that one skipped and counted. A
        database that is unreachable is retried: the consumer rewinds and the error propagates.
        """
        batch = self.consumer.poll(timeout_ms=timeout_ms)
        if not batch:
            return 0
        messages = [(tp, m) for tp, ms in batch.items() for m in ms]
        try:
            applied = self._apply(messages)
        except OperationalError:
            self._rewind(messages)
            raise
        except SQLAlchemyError:
            applied = self._apply_one_by_one(messages)
        except BaseException:
            self._rewind(messages)
            raise
        self.consumer.commit()
        return applied

    def _apply(self, messages: list) -> int:  # type: ignore[type-arg]
        with self.sessions() as session:
            applied = sum(apply_message(session, tp.topic, f"{tp.topic}:{tp.partition}:{m.offset}", m.value,
                                        is_alert=tp.topic == self.alerts_topic) for tp, m in messages)  # fmt: skip
            session.commit()
        return applied

    def _apply_one_by_one(self, messages: list) -> int:  # type: ignore[type-arg]
        applied = 0
        for i, (tp, message) in enumerate(messages):
            try:
                applied += self._apply([(tp, message)])
            except OperationalError:
                self._rewind(messages[i:])
                raise
            except SQLAlchemyError as exc:
                DESK.skipped.labels(tp.topic).inc()
                log.warning("desk: the database refused %s:%s:%s, skipped (%s)", tp.topic, tp.partition, message.offset,
                            str(exc).splitlines()[0][:200])  # fmt: skip
        return applied

    def _rewind(self, messages: list) -> None:  # type: ignore[type-arg]
        # The poll moved the consumer past the batch: without this rewind the next poll goes on after it,
        # and the next commit() would commit offsets of messages the database never kept.
        first: dict = {}
        for tp, message in messages:
            first.setdefault(tp, message.offset)
        for tp, offset in first.items():
            self.consumer.seek(tp, offset)

    def publish_once(self) -> int:
        """Send unsent verdicts; mark those the broker acknowledged."""
        with self.sessions() as session:
            rows = session.execute(select(Outbox).where(Outbox.sent_at.is_(None)).order_by(Outbox.id).limit(OUTBOX_BATCH)).scalars().all()
            if not rows:
                return 0
            futures = [(row, self.producer.send(self.verdicts_topic, key=row.key.encode(), value=row.value.encode())) for row in rows]
            self.producer.flush()
            now = datetime.now(timezone.utc)
            sent = 0
            for row, future in futures:
                try:
                    future.get(timeout=10)
                except Exception as exc:  # noqa: BLE001 - the row stays unsent and is retried
                    log.warning("verdict %s not published yet: %s", row.id, exc)
                    continue
                row.sent_at = now
                sent += 1
            session.commit()
        DESK.verdicts_published.inc(sent)
        return sent

    def run(self) -> None:
        """Consume and publish until :meth:`stop`."""
        while not self.stopping.is_set():
            try:
                self.consume_once()
                self.publish_once()
            except Exception:  # noqa: BLE001 - a broker or database hiccup must not end the desk's feed
                log.exception("desk feed: retrying in 2 s")
                self.stopping.wait(2.0)

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()


def apply_message(session, topic: str, source: str, value: bytes | None, is_alert: bool) -> int:  # type: ignore[no-untyped-def]
    """File one message; 1 if it changed the database, 0 if it was a repeat or was skipped."""
    try:
        if is_alert:
            changed = cases.ingest_alert(session, Alert.model_validate_json(value or b""))
            DESK.alerts.labels("new" if changed else "repeat").inc()
        else:
            changed = cases.ingest_submission(session, source, orjson.loads(value or b""))
            DESK.submissions.labels("new" if changed else "repeat").inc()
        return int(changed)
    except (ValidationError, InvalidSubmission, orjson.JSONDecodeError, TypeError, ValueError) as exc:
        DESK.skipped.labels(topic).inc()
        log.info("desk: skipped %s (%s)", source, str(exc).splitlines()[0][:200])
        return 0


def load_files(sessions: sessionmaker, alerts: Iterable[str | Path] = (), submissions: Iterable[str | Path] = ()) -> tuple[int, int]:
    """Fill the database from files: submissions first (archives pantau reads), then alerts JSONL."""
    loaded_submissions = loaded_alerts = 0
    for path in submissions:
        with sessions() as session:
            for record in read_records(path):
                if record.envelope is not None:
                    raw = record.envelope.model_dump(mode="json", by_alias=True, exclude_unset=True)
                    loaded_submissions += apply_message(session, "file", f"{path}:{record.line}", orjson.dumps(raw), is_alert=False)
            session.commit()
    for path in alerts:
        with sessions() as session, open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    loaded_alerts += apply_message(session, "file", f"{path}:{n}", line, is_alert=True)
            session.commit()
    return loaded_submissions, loaded_alerts

"""Post-election audit: replay an archive (in several processes) and write a report people can read.

``pantau audit ARCHIVE... --out report/`` is :func:`audit`: :mod:`~pantau.audit.engine` replays the
archive with the stream's detectors and configuration, :mod:`~pantau.audit.report` writes
``index.html`` (self-contained), ``alerts.csv``, ``alerts.jsonl`` and ``regions.csv``. Desk verdicts
are joined from a JSONL export of ``pantau.verdicts`` or from the desk's database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pantau.replay import ASSESS_EVERY, verdicts_of
from pantau.schemas import InvalidSubmission, Verdict, parse_verdict

from .engine import AuditRun, run_replay
from .report import InputFile, latest_verdicts, write_report

__all__ = ["audit", "desk_verdicts"]


def desk_verdicts(url: str) -> list[Verdict]:
    """Every verdict a desk database recorded (its outbox keeps each one as published)."""
    from sqlalchemy import create_engine, inspect, select
    from sqlalchemy.orm import Session

    from pantau.desk.db import Outbox

    engine = create_engine(url if "://" in url else f"sqlite:///{url}")
    try:
        if not inspect(engine).has_table(Outbox.__tablename__):
            raise ValueError(f"{url}: not a pantau desk database (no {Outbox.__tablename__} table)")
        with Session(engine) as session:
            values = session.scalars(select(Outbox.value).order_by(Outbox.id)).all()
    finally:
        engine.dispose()
    verdicts = []
    for number, value in enumerate(values, 1):
        try:
            verdicts.append(parse_verdict(value))
        except InvalidSubmission as exc:
            raise ValueError(f"{url}: outbox row {number} is not a verdict ({exc.code}): {exc.reason}") from None
    return verdicts


def audit(paths: Sequence[str | Path], out: str | Path, jobs: int = 1, assess_every: int = ASSESS_EVERY,
          verdicts_file: str | Path | None = None, desk_db: str | None = None,
          progress: Callable[[int], None] | None = None) -> tuple[AuditRun, list[Path]]:  # fmt: skip
    """Replay ``paths`` and write the report into ``out``; returns the run and the files written.

    Raises ``FileNotFoundError`` for a missing input and ``ValueError`` for an invalid verdict.
    """
    verdicts: list[Verdict] = []
    sources = []
    if verdicts_file is not None:
        verdicts += verdicts_of(verdicts_file)
        sources.append(Path(verdicts_file).name)
    if desk_db is not None:
        verdicts += desk_verdicts(desk_db)
        sources.append("desk database")
    inputs = [InputFile.of(path) for path in paths]
    run = run_replay(paths, jobs=jobs, assess_every=assess_every, progress=progress)
    written = write_report(run, Path(out), inputs, latest_verdicts(verdicts), assess_every,
                           " + ".join(sources) if sources else None)  # fmt: skip
    return run, written

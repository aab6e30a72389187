"""The human verification desk: alerts become cases, people decide them, verdicts go back to the stream.

:mod:`~pantau.desk.db` (SQLAlchemy models), :mod:`~pantau.desk.cases` (case life cycle, decisions),
:mod:`~pantau.desk.auth` (accounts, sessions, CSRF), :mod:`~pantau.desk.audit` (hash-chained log),
:mod:`~pantau.desk.web` (FastAPI pages), :mod:`~pantau.desk.feed` (Kafka in and out),
:mod:`~pantau.desk.plots` (SVG charts), :mod:`~pantau.desk.commands` (``pantau desk ...``).
"""

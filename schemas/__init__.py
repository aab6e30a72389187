"""pantau's one contract: pydantic models of every message on every topic.

* :mod:`.sirekap` — the verbatim Sirekap TPS document and the submission envelope,
* :mod:`.tally` — the normalized tally the detectors read,
* :mod:`.alert` — Alert and Suggestion, published to ``pantau.alerts``,
* :mod:`.verdict` — a person's decision on an alert, published to ``pantau.verdicts``,
* :mod:`.deadletter` — a message that could not be processed, with the reason.

``python -m pantau.cli schemas export DIR`` writes their JSON Schemas (see :mod:`.export`).
"""

from .alert import Alert, Level, Severity, Suggestion
from .deadletter import DeadLetter
from .errors import InvalidSubmission
from .sirekap import (
    ADMIN_FIELDS,
    JENIS,
    PARTY_BALLOTS,
    Administrasi,
    Envelope,
    Jenis,
    PartyVotes,
    SirekapDocument,
    parse_envelope,
    validate_kode_tps,
)
from .tally import Region, Tally, normalize
from .verdict import Decision, Verdict, parse_verdict, verdict_key

__all__ = [
    "ADMIN_FIELDS",
    "JENIS",
    "PARTY_BALLOTS",
    "Administrasi",
    "Alert",
    "DeadLetter",
    "Decision",
    "Envelope",
    "InvalidSubmission",
    "Jenis",
    "Level",
    "PartyVotes",
    "Region",
    "Severity",
    "SirekapDocument",
    "Suggestion",
    "Tally",
    "Verdict",
    "normalize",
    "parse_envelope",
    "parse_verdict",
    "validate_kode_tps",
    "verdict_key",
]

"""A person's decision on an alert, published to ``pantau.verdicts`` by the verification desk.

Verdicts are keyed like the submissions (:func:`verdict_key`: the kab/kota code), so a verdict lands on
the partition, and the worker, that inspects its TPS.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .errors import InvalidSubmission
from .sirekap import Count, Jenis, _describe

Decision = Literal["confirmed", "false_alarm", "field_check", "corrected"]


class Verdict(BaseModel):
    """Who decided what about which alert, when, and why.

    ``corrected`` requires ``corrected_values`` (document path → the value read from the form photo).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict_id: str
    alert_id: str
    detector: str
    jenis: Jenis
    kode_tps: str | None = None
    region: str
    decision: Decision
    corrected_values: dict[str, Count] = Field(default_factory=dict)
    note: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
    decided_by: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    role: Literal["verifier", "supervisor"]
    decided_at: datetime
    audit_seq: int | None = Field(default=None, ge=1, description="the desk's audit-log entry that recorded the decision")
    audit_hash: str | None = Field(default=None, pattern="^[0-9a-f]{64}$",
                                   description="that entry's chain hash: a published anchor `pantau desk verify-audit --head` checks")

    @model_validator(mode="after")
    def _corrections(self) -> Verdict:
        if (self.decision == "corrected") != bool(self.corrected_values):
            raise ValueError("corrected_values is required for, and only for, decision 'corrected'")
        return self


def verdict_key(verdict: Verdict) -> bytes:
    """The message key of a verdict: the 4-digit kab/kota code of its TPS (or region), as for submissions.

    >>> verdict_key(Verdict(verdict_id="v-1", alert_id="afd42a8ed3a17673b246f9bc8b7151bd", detector="form.sum_valid",
    ...     jenis="ppwp", kode_tps="3173011002090", region="3173011002090", decision="false_alarm", note="sesuai foto",
    ...     decided_by="rina", role="verifier", decided_at="2024-02-16T09:00:00+07:00"))
    b'3173'
    """
    return (verdict.kode_tps or verdict.region)[:4].encode()


def parse_verdict(data: bytes | str) -> Verdict:
    """Validate one verdict message; raises :class:`InvalidSubmission` (``not_json``, ``schema``) with the reason.

    ``decided_at`` must carry its UTC offset (RFC 3339, as the JSON Schema's ``date-time`` says): verdicts
    are ordered by it.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidSubmission("not_json", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidSubmission("schema", f"expected a JSON object, got {type(value).__name__}")
    try:
        verdict = Verdict.model_validate(value)
    except ValidationError as exc:
        raise InvalidSubmission("schema", _describe(exc)) from None
    if verdict.decided_at.utcoffset() is None:
        raise InvalidSubmission("schema", f"decided_at: needs a UTC offset (got {value['decided_at']!r})")
    return verdict

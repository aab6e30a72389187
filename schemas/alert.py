"""Alerts: what pantau found, with the evidence and a reason a person can act on.

Published one per message on ``pantau.alerts`` (key: the alert's ``region``) and one per line in
offline replay files. ``alert_id`` is deterministic: the same finding on the same data always gets the
same id (so a replayed or reprocessed submission never yields a second, distinct alert), and a finding
on different data gets a different id.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .sirekap import Jenis

Severity = Literal["info", "warning", "critical"]
Level = Literal["tps", "kelurahan", "kecamatan", "kabkota", "provinsi"]
EditKind = Literal["substitution", "crossed_box", "extra_digit", "dropped_digit", "transposition", "two_digits", "arithmetic"]


class Suggestion(BaseModel):
    """A likely correct value for one field, for a person to confirm against the form photo."""

    model_config = ConfigDict(frozen=True)

    field: str = Field(description="document path, e.g. chart.100027 or administrasi.suara_sah")
    current: int
    proposed: int
    confidence: float = Field(ge=0.0, le=1.0)
    edit: EditKind = Field(
        description="the misread that turns `proposed` into `current`; `arithmetic`: no digit-level misread "
        "explains it, the form's identities alone pin the value"
    )


class Alert(BaseModel):
    """One finding. TPS-level alerts carry ``kode_tps``; regional ones only ``region`` and ``level``."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    detector: str
    severity: Severity
    jenis: Jenis
    kode_tps: str | None = None
    region: str = Field(description="code of the unit at `level` (the TPS code for level=tps)")
    level: Level
    score: float = Field(description="strength of the finding; detector-specific, larger is stronger")
    reason: str = Field(description="plain-language reason, Bahasa Indonesia")
    reason_en: str = Field(description="the same reason in English")
    evidence: dict[str, Any] = Field(description="the numbers involved")
    suggestions: list[Suggestion] = Field(default_factory=list)
    resolves: list[str] = Field(default_factory=list, description="ids of earlier alerts this one closes")
    observed_at: datetime | None = Field(
        description="time of the data the finding is about: receipt time, else the document's publication time"
    )

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys): byte-identical for the same alert."""
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def alert_id(detector: str, jenis: str, subject: str, evidence: dict[str, Any]) -> str:
    """Deterministic id of a finding: a digest of what was found, about what, on which numbers.

    >>> alert_id("form.sum_valid", "ppwp", "3173011002090", {"sum": 704, "suara_sah": 163})
    'afd42a8ed3a17673b246f9bc8b7151bd'
    """
    canonical = orjson.dumps([detector, jenis, subject, evidence], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()

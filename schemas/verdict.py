"""A person's decision on an alert, published to ``pantau.verdicts`` by the verification desk."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .sirekap import Count, Jenis

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

    @model_validator(mode="after")
    def _corrections(self) -> Verdict:
        if (self.decision == "corrected") != bool(self.corrected_values):
            raise ValueError("corrected_values is required for, and only for, decision 'corrected'")
        return self

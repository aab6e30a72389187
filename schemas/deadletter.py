"""A message pantau could not process: kept whole, with the reason and where it came from."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DeadLetter(BaseModel):
    """Published to ``pantau.deadletter``; ``original`` is the message value, base64-encoded."""

    model_config = ConfigDict(frozen=True)

    original: str = Field(description="base64 of the original message bytes")
    key: str | None = Field(default=None, description="base64 of the original message key")
    code: str = Field(description="fixed rejection code (not_json, schema, kode_tps, too_large, error; "
                      "verdicts: key, keyed other than by their kab/kota code)")
    reason: str
    topic: str
    partition: int
    offset: int
    failed_at: datetime

    def original_bytes(self) -> bytes:
        return base64.b64decode(self.original)

"""The ``pantau.regional`` message: one region's summed statistics, from a worker to the assessor.

Key: ``<level>:<region code>:<jenis>`` (level ``kecamatan`` or ``kabkota``). The value is the state of
:class:`pantau.detectors.regional.RegionSums`; the latest message per key replaces the earlier ones.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RegionSumsMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: list[float] = Field(description="summed station contributions, in the order of pantau.detectors.regional.FIELDS")
    c: dict[str, list[float]] = Field(description="per candidate (chart key): sums in the order of CANDIDATE_FIELDS")
    s: list[tuple[int, float, float]] = Field(
        description="dip-test sample: [stable hash of the TPS code, turnout, the TPS winner's vote share]"
    )
    x: int | None = Field(description="sample cutoff: hashes above it were never kept (null: nothing dropped yet)")
    t: dict[str, list[tuple[float, str, float]]] = Field(
        description="per test: the top contributing TPS as [|excess|, kode_tps, excess], largest first"
    )
    k: dict[str, list[float]] = Field(
        description="per candidate: kelurahan-neighbour tails, [TPS with a residual, TPS with a residual ≥ each edge of "
        "pantau.detectors.regional.NEIGHBOUR_EDGES]"
    )

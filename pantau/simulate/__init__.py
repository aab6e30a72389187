"""``pantau simulate``: a synthetic election night with injected anomalies and their ground truth.

    from pantau.simulate import simulate
    summary = simulate("night.jsonl", provinces=["34"], seed=7)   # also writes night.truth.jsonl

* :mod:`.model`      the fitted parameters (``pantau/data/sim_params.json``) and numeric helpers
* :mod:`.fit`        fitting them to the real 2024 data in ``../shared/data/sirekap``
* :mod:`.registry`   the TPS registry (real file, or synthetic with the real region sizes)
* :mod:`.generate`   the clean night: numbers, timeline, envelopes
* :mod:`.anomalies`  injected anomalies and the truth rows
* :mod:`.truth`      the truth file
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .truth import read_truth, truth_path_for, write_truth

if TYPE_CHECKING:  # the heavy modules (numpy) load when a night is built, not with the command line
    from .anomalies import AnomalySpec
    from .generate import Night
    from .model import Params
    from .registry import Registry

__all__ = ["Registry", "SimulationSummary", "prepare", "read_truth", "simulate", "truth_path_for"]


def __getattr__(name: str) -> Any:
    if name == "Registry":
        from .registry import Registry

        return Registry
    raise AttributeError(name)


@dataclass
class SimulationSummary:
    tps: int = 0
    units: dict[str, int] = field(default_factory=dict)
    envelopes: int = 0
    registry: str = ""
    truth_rows: Counter[str] = field(default_factory=Counter)
    regional_rows: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    out: str = ""
    truth: str = ""


def prepare(
    *,
    seed: int = 1,
    provinces: list[str] | None = None,
    kabkota: list[str] | None = None,
    jenis: tuple[str, ...] = ("ppwp",),
    anomalies: list[str] | None = None,
    registry: str | Path | Registry | None = None,
    synthetic_registry: bool = False,
    params: str | Path | Params | None = None,
    complete: bool = False,
    images: bool = True,
) -> tuple[Night, dict[str, Any], list[dict[str, Any]]]:
    """Build the night, inject the anomalies: (night, truth meta, truth rows). Nothing is written.

    ``anomalies``: specs (``NAME[:key=value,...]``); None = every anomaly at its defaults; [] = none.
    ``registry``: a registry file, or a :class:`~pantau.simulate.registry.Registry`; by default
    ``../shared``'s when present, else the synthetic one.
    """
    import numpy as np

    from pantau.schemas import JENIS

    from .anomalies import default_specs, inject, parse_spec
    from .generate import Config, build_night
    from .model import LEVEL_DIGITS, LEVELS, Params, load_params
    from .registry import Registry, resolve_registry

    params = params if isinstance(params, Params) else load_params(params)
    unknown = [j for j in jenis if j not in JENIS]
    if unknown:
        raise ValueError(f"unknown ballot types {unknown}; known: {', '.join(JENIS)}")
    jenis = tuple(j for j in JENIS if j in jenis)
    base = registry if isinstance(registry, Registry) else resolve_registry(params, registry, synthetic_registry)
    reg = base.select(provinces, kabkota)
    night = build_night(params, reg, Config(seed=seed, jenis=jenis, complete=complete, images=images))
    simulated = tuple(night.ballots)
    specs: list[AnomalySpec] = (default_specs(seed, simulated) if anomalies is None
                                else [parse_spec(text, seed, simulated) for text in anomalies])  # fmt: skip
    rows = inject(night, specs)
    meta = {
        "generator": "pantau simulate",
        "seed": seed,
        "jenis": list(simulated),
        "tps": len(reg),
        "units": {j: len(b) for j, b in night.ballots.items()},
        "regions": {level: len(np.unique(reg.region_numbers(LEVEL_DIGITS[level]))) for level in LEVELS},
        "registry": reg.source,
        "params_version": params.raw.get("version"),
        "provinces": provinces or [],
        "kabkota": kabkota or [],
        "complete": complete,
        "anomalies": [s.as_dict() for s in specs],
    }
    return night, meta, rows


def simulate(out: str | Path, truth: str | Path | None = None, **options: Any) -> SimulationSummary:
    """Write a simulated night to ``out`` (``.jsonl`` or ``.jsonl.gz``) and its truth file."""
    started = time.perf_counter()
    from .generate import write_night

    night, meta, rows = prepare(**options)
    truth = Path(truth) if truth else truth_path_for(out)
    write_truth(truth, meta, rows)
    summary = _summary(night, meta, rows)
    summary.envelopes = write_night(night, out)
    summary.seconds = time.perf_counter() - started
    summary.out, summary.truth = str(out), str(truth)
    return summary


def simulate_lines(truth: str | Path, **options: Any) -> tuple[Iterator[bytes], SimulationSummary]:
    """The envelope lines of a simulated night (for publishing), its truth file written first."""
    from .generate import night_lines

    night, meta, rows = prepare(**options)
    write_truth(truth, meta, rows)
    summary = _summary(night, meta, rows)
    summary.truth = str(truth)
    return night_lines(night), summary


def _summary(night: Night, meta: dict[str, Any], rows: list[dict[str, Any]]) -> SimulationSummary:
    summary = SimulationSummary(tps=meta["tps"], units=meta["units"], registry=meta["registry"])
    for row in rows:
        (summary.truth_rows if row["level"] == "tps" else summary.regional_rows)[row["anomaly"]] += 1
    return summary

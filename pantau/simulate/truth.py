"""The ground-truth file of a simulated night: one JSON line per affected unit, after a meta line.

Line 1: ``{"meta": {...}}``: seed, ballot types, number of TPS per ballot type, number of regions per
level, the registry used and every anomaly spec with its seed. Then one line per hit TPS and ballot::

    {"kode_tps": "3471011001004", "level": "tps", "jenis": "ppwp", "anomaly": "ocr_misread",
     "detail": {"field": "chart.100026", "true": 80, "published": 880, "kind": "crossed_box", ...}, "seed": 7}

and, for the regional manipulations, one line per region (every level) holding hit TPS::

    {"region": "347101", "level": "kecamatan", "jenis": "ppwp", "anomaly": "stuffing_extreme",
     "detail": {"affected_tps": 12, "tps": 30, "share": 0.4, "targeted": true, "rate": 0.4}, "seed": 7}

A TPS not listed is clean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

#: The anomaly kinds a truth file names (see :mod:`pantau.simulate.anomalies`), in injection order.
NAMES = ("ocr_misread", "typo", "stuffing_incremental", "stuffing_extreme", "vote_shifting", "fabricated",
         "copied_tally", "duplicate_submission")  # fmt: skip
#: The manipulations aimed at regions (their truth has regional rows too).
REGIONAL = frozenset({"stuffing_incremental", "stuffing_extreme", "vote_shifting", "fabricated"})


def truth_path_for(out: str | Path) -> Path:
    """``night.jsonl`` → ``night.truth.jsonl`` (``.gz`` and ``.jsonl`` suffixes dropped first)."""
    out = Path(out)
    name = out.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return out.with_name(name + ".truth.jsonl")


def write_truth(path: str | Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    with open(path, "wb") as handle:
        handle.write(orjson.dumps({"meta": meta}) + b"\n")
        handle.writelines(orjson.dumps(row) + b"\n" for row in rows)


def read_truth(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(meta, rows) of a truth file."""
    meta: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            item = orjson.loads(line)
            if "meta" in item:
                meta = item["meta"]
            else:
                rows.append(item)
    return meta, rows

"""JSON Schemas of every topic message, generated from the pydantic models.

The committed files in ``schemas/json/`` are what other teams code against; a test checks that they
match the models, and ``pantau schemas export DIR`` regenerates them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .regional import RegionSumsMessage
from .alert import Alert
from .deadletter import DeadLetter
from .sirekap import Envelope
from .verdict import Verdict

#: Default topic name → the model of its message values.
TOPIC_MODELS: dict[str, type[BaseModel]] = {
    "sirekap.submissions": Envelope,
    "pantau.alerts": Alert,
    "pantau.verdicts": Verdict,
    "pantau.deadletter": DeadLetter,
    "pantau.regional": RegionSumsMessage,
}

COMMITTED = Path(__file__).parent / "json"


def topic_schema(topic: str) -> dict[str, Any]:
    schema = TOPIC_MODELS[topic].model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"pantau:{topic}", **schema}


def render(topic: str) -> str:
    return json.dumps(topic_schema(topic), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(directory: Path) -> list[Path]:
    """Write ``<topic>.schema.json`` for every topic into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for topic in TOPIC_MODELS:
        path = directory / f"{topic}.schema.json"
        path.write_text(render(topic), encoding="utf-8")
        paths.append(path)
    return paths

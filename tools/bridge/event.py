"""The event that goes on Kafka for each entry (key = camera, value = this JSON).

`persons` are the objects `python -m tools.client` prints (`Person.as_json`) with `face`: the face box
the server found for the person (x1, y1, x2, y2 in original pixels), or null. Every entry gets exactly
one event, with `error` null or `{"code", "message"}`; `id` is stable, so duplicates are dropped by it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from pipelines import spec
from tools.bridge.entry import Entry
from tools.client.people import unpack


def persons(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One image's persons as JSON, each with its face box (Person does not carry FACES yet)."""
    (found,) = unpack(outputs)
    faces = outputs[spec.FACES.name][0]
    records = []
    for k, person in enumerate(found):
        face = [round(float(v), 2) for v in faces[k]]
        records.append({**person.as_json(), "face": face if any(face) else None})
    return records


def build(
    entry: Entry,
    camera: str,
    ts: float | None,
    tier: str,
    found: list[dict[str, Any]] | None = None,
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The event; `ts` is the capture time, else the time Redis added the entry (latency counts from it)."""
    ts = entry.added_s if ts is None else ts
    return {
        "id": entry.event_id,
        "camera": camera,
        "ts": ts,
        "tier": tier,
        "count": None if found is None else len(found),
        "persons": found,
        "latency_ms": round((time.time() - ts) * 1000, 1),
        "error": None if error is None else {"code": error[0], "message": error[1]},
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()

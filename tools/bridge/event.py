"""The event that goes on Kafka for each entry (key = camera, value = this JSON).

`persons` are the objects `python -m tools.client` prints (`Person.as_json`: with `face`, and a tier
that tracks adds each person's track id and voted gender, and `sequence`: the `id` of the event whose
frame started the camera's sequence, so that camera, sequence and track id name one person). Every
entry gets exactly one event, with `error` null or `{"code", "message"}`; `id` is stable, so duplicates
are dropped by it.
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
    """One image's persons as JSON."""
    return [person.as_json() for person in unpack(outputs)[0]]


def build(
    entry: Entry,
    camera: str,
    ts: float | None,
    tier: str,
    found: list[dict[str, Any]] | None = None,
    error: tuple[str, str] | None = None,
    sequence: str | None = None,
) -> dict[str, Any]:
    """The event; `ts` is the capture time, else the time Redis added the entry (latency counts from it);
    `sequence` (a tier that tracks): the id of the event that started the camera's sequence, None unsent."""
    ts = entry.added_s if ts is None else ts
    value = {
        "id": entry.event_id,
        "camera": camera,
        "ts": ts,
        "tier": tier,
        "count": None if found is None else len(found),
        "persons": found,
        "latency_ms": round((time.time() - ts) * 1000, 1),
        "error": None if error is None else {"code": error[0], "message": error[1]},
    }
    if spec.tier(tier).tracks:
        value["sequence"] = sequence
    return value


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()

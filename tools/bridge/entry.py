"""A stream entry's fields, and the bridge's own checks before anything is sent.

Fields (bytes, as Redis stores them): `jpeg` (required), `camera` (default: the stream's name), `ts`
(capture time, seconds since the epoch), `conf`, `iou`, `gender_threshold`. Whether the bytes are an
image is the server's call (its INVALID_ARGUMENT message); here only what the server cannot be asked:
a missing field, a size over the limit before it travels, numbers that are not numbers. A threshold
out of [0, 1] is the server's to refuse, as for every client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines import spec

THRESHOLD_FIELDS = ("conf", "iou", "gender_threshold")


class BadEntry(ValueError):
    """The entry can never succeed; the message goes into its error event."""


@dataclass
class Entry:
    """One entry read from (or claimed in) a stream; `deliveries` as Redis counts them."""

    stream: str
    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1

    @property
    def event_id(self) -> str:
        """Stable across deliveries, so a consumer drops duplicates by it."""
        return f"{self.stream}/{self.id}"

    @property
    def added_s(self) -> float:
        """When Redis added the entry: the id's milliseconds."""
        return int(self.id.split("-")[0]) / 1000

    @property
    def order(self) -> tuple[int, int]:
        """Where the entry falls in time: its id's milliseconds and sequence number."""
        ms, seq = self.id.split("-")
        return int(ms), int(seq)

    def text(self, name: str) -> str | None:
        value = self.fields.get(name.encode())
        if value is None:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise BadEntry(f"field {name!r} is not UTF-8 text") from None

    @property
    def camera(self) -> str:
        """The Kafka key: the `camera` field, else the stream's name (also for a bad entry)."""
        try:
            return self.text("camera") or self.stream
        except BadEntry:
            return self.stream


@dataclass(frozen=True)
class Frame:
    """What one request sends."""

    jpeg: bytes
    camera: str
    ts: float | None
    conf: float | None = None
    iou: float | None = None
    gender_threshold: float | None = None

    def thresholds(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in THRESHOLD_FIELDS}


def _number(entry: Entry, name: str) -> float | None:
    text = entry.text(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadEntry(f"field {name!r} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise BadEntry(f"field {name!r} must be finite, got {text!r}")
    return value


def capture_ts(entry: Entry) -> float | None:
    """The entry's `ts`, or None where it is missing or not a number (the event then says the entry's time)."""
    try:
        return _number(entry, "ts")
    except BadEntry:
        return None


def frame(entry: Entry, max_bytes: int = spec.MAX_IMAGE_BYTES) -> Frame:
    """The request an entry asks for; BadEntry names what is wrong with it."""
    jpeg = entry.fields.get(b"jpeg")
    if jpeg is None:
        present = ", ".join(sorted(k.decode(errors="replace") for k in entry.fields)) or "none"
        raise BadEntry(f"entry has no 'jpeg' field (fields: {present})")
    if not jpeg:
        raise BadEntry("field 'jpeg' is empty")
    if len(jpeg) > max_bytes:
        raise BadEntry(f"field 'jpeg' is {len(jpeg)} bytes, over the limit of {max_bytes} bytes")
    thresholds = {name: _number(entry, name) for name in THRESHOLD_FIELDS}
    camera = entry.text("camera") or entry.stream  # BadEntry where it is not text
    return Frame(jpeg=jpeg, camera=camera, ts=_number(entry, "ts"), **thresholds)

"""The frames sent and not yet handed to the sink, in frame order, and the session's statistics
(with the persons of a tracked run: `People`).

Answers can come out of order (only the streaming tier preserves it), so the
`Window` holds a frame that is finished before an older one until the older
ones are finished too, and counts it (`reordered`). It bounds the frames sent
and not yet handed on, held ones included, so nothing waits without bound.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tools.client.people import Person, gender_counts
from tools.client.video.media import FrameResult


@dataclass
class People:
    """The persons of a tracked run: each (sequence, track id) is one, with the gender last voted for them."""

    last_gender: dict[tuple[Hashable, int], int] = field(default_factory=dict)

    def add(self, sequence: Hashable, persons: Iterable[Person]) -> None:
        for p in persons:
            if p.tracked:
                assert p.track_id is not None and p.track_gender is not None
                self.last_gender[sequence, p.track_id] = p.track_gender

    def summary(self) -> dict[str, Any]:
        return {"unique": len(self.last_gender), "genders": gender_counts(self.last_gender.values())}


@dataclass
class Stats:
    """Counters of one session, each counted by the part that sees the event; sent + dropped == produced at the end."""

    # the readers
    produced: int = 0  # frames read from the source
    dropped: int = 0  # live frames never sent
    max_pending_seen: int = 0  # live frames waiting for a slot at once
    # the window
    sent: int = 0
    ok: int = 0
    errors: int = 0
    reordered: int = 0  # frames finished while an older one was still awaited
    max_inflight_seen: int = 0  # frames sent and awaiting their answer at once
    latencies_s: array = field(default_factory=lambda: array("d"))  # of the answered frames
    # the session
    reconnects: int = 0  # new streams after a broken one, as the stream reports them
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    stopped: str | None = None  # why the run ended early, if it did
    people: People | None = None  # a tier that tracks: the persons seen, counted by the window

    @property
    def elapsed_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def summary(self) -> dict[str, Any]:
        latencies = np.frombuffer(self.latencies_s, dtype=np.float64) * 1000 if self.latencies_s else None
        return {
            "produced": self.produced,
            "sent": self.sent,
            "dropped": self.dropped,
            "ok": self.ok,
            "errors": self.errors,
            "reordered": self.reordered,
            "reconnects": self.reconnects,
            "latency_ms": {
                "mean": None if latencies is None else round(float(latencies.mean()), 1),
                "p99": None if latencies is None else round(float(np.percentile(latencies, 99)), 1),
            },
            "throughput_fps": round(self.ok / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "elapsed_s": round(self.elapsed_s, 2),
            "max_inflight": self.max_inflight_seen,
            "max_pending": self.max_pending_seen,
            "stopped": self.stopped,
            **({} if self.people is None else {"people": self.people.summary()}),
        }


class Window:
    """At most `size` frames sent and not yet handed on, in frame order; `pop` yields them in that order.

    Owns the frames in the window (each says whether it is finished). Counts in `stats` what passes through
    it: sent, in flight at once, reordered, then answered (with latency, and a tracked run's persons) or
    failed as frames leave.
    Not locked: the session calls it with its lock held (answers arrive on tritonclient's thread).
    """

    def __init__(self, size: int, stats: Stats):
        if size < 1:
            raise ValueError("the window must hold at least one frame")
        self.size = size
        self.stats = stats
        self._frames: deque[FrameResult] = deque()  # sent, not yet popped, in frame order

    def full(self) -> bool:
        return len(self._frames) >= self.size

    def empty(self) -> bool:
        return not self._frames

    def add(self, frame: FrameResult) -> None:
        """A frame just sent, after every frame already added; one with an `error` failed before it left."""
        if self.full():
            raise RuntimeError("the window is full")
        self._frames.append(frame)
        self.stats.sent += 1
        if not frame.finished:
            in_flight = sum(not f.finished for f in self._frames)
            self.stats.max_inflight_seen = max(self.stats.max_inflight_seen, in_flight)

    def finish(self, index: int, persons: list[Person] | None, error: str | None, latency_s: float | None) -> None:
        """A frame's outcome: its persons, or why it failed. Held until every older frame is finished."""
        if persons is None and error is None:
            raise ValueError(f"frame {index}: an outcome is persons or an error")
        frame = next((f for f in self._frames if f.index == index), None)
        if frame is None or frame.finished:
            raise KeyError(f"frame {index} is not awaited")
        if any(f.index < index and not f.finished for f in self._frames):
            self.stats.reordered += 1
        frame.persons, frame.error, frame.latency_s = persons, error, latency_s

    def ready(self) -> bool:
        """The oldest frame is finished: `pop` returns it."""
        return bool(self._frames) and self._frames[0].finished

    def pop(self) -> FrameResult | None:
        """The oldest frame once it is finished (counted as answered or failed), else None."""
        if not self.ready():
            return None
        frame = self._frames.popleft()
        if frame.ok:
            self.stats.ok += 1
            if frame.latency_s is not None:
                self.stats.latencies_s.append(frame.latency_s)
            if self.stats.people is not None:
                self.stats.people.add(frame.sequence, frame.persons or ())
        else:
            self.stats.errors += 1
        return frame

"""A camera's frames as one Triton sequence, as every client here sends them to a tier that tracks.

The sequence id is the camera's id; `sequence_start` goes on its first frame, `sequence_end` on its last
where the client knows it (a file's; a live camera's sequence is freed by the server's idle timeout).
A frame carries `sequence_start` again whenever the server may have lost the camera's sequence, or
never begun it:

- the frame that carried `sequence_start` was refused (a full queue, every camera slot taken, a bad
  image, a broken connection): the server may not have started the sequence;
- a frame is refused with a message asking for it: Triton's "must specify the START flag" (the camera was
  idle past the timeout, or the server restarted) or the tier's "start its sequence again";
- the camera was silent for longer than the server's idle timeout (spec.TRACKING), so it forgot it;
- the previous frame carried `sequence_end`;
- the frame is older than the last one sent (where the caller says when frames were taken: a bridge
  that took over a dead peer's entries): the tracker must see a camera's frames in time order.

Refusals of frames sent before the latest start belong to the sequence it replaced and change nothing,
so frames in flight that are all refused restart the sequence once, not once each. A start begins fresh
tracks, ids from 1 again: `Flags.sequence` names the sequence a frame belongs to (the label of the frame
that started it), so a camera, a sequence and a track id name one person.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from pipelines import spec

# The shortest idle timeout of the variants: a camera silent longer has been forgotten by any server.
IDLE_TIMEOUT_S = min(t.idle_timeout_us for t in spec.TRACKING.values()) / 1e6
START_AGAIN = ("must specify the START flag", "start its sequence again")  # Triton's refusal, the tier's


def asks_to_start_again(message: str) -> bool:
    """The server refused a frame because the camera's sequence must start again."""
    return any(text in message for text in START_AGAIN)


@dataclass(frozen=True)
class Flags:
    """One frame's place in its camera's sequence; `kwargs()` as tritonclient's infer calls take it."""

    camera: str
    start: bool
    end: bool
    sequence: Hashable  # the label of the frame that started the sequence this frame belongs to
    number: int  # which start of the camera that was, from 0

    def kwargs(self) -> dict[str, Any]:
        return {"sequence_id": self.camera, "sequence_start": self.start, "sequence_end": self.end}


class CameraSequence:
    """Which flags a camera's next frame carries, and what a refused frame changes.

    Thread-safe: frames are sent on one thread while refusals may come on tritonclient's.
    """

    def __init__(self, camera: str, idle_timeout_s: float | None = IDLE_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.camera = camera
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._start = True  # the next frame starts the sequence
        self._number = -1
        self._sequence: Hashable = None
        self._last_sent: float | None = None
        self._last_taken: Any = None

    def next(self, label: Hashable, end: bool = False, taken: Any = None) -> Flags:
        """The flags of the frame about to be sent, `label` naming it (a frame index, an event id); `taken`,
        where given, orders the camera's frames in time (a frame taken before the last one starts again)."""
        with self._lock:
            now = self._clock()
            older = taken is not None and self._last_taken is not None and taken < self._last_taken
            start = self._start or self._forgotten(now) or older
            if start:
                self._number += 1
                self._sequence = label
            self._start, self._last_sent, self._last_taken = end, now, taken
            return Flags(self.camera, start, end, self._sequence, self._number)

    def _forgotten(self, now: float) -> bool:
        """Silent past the idle timeout: the server has forgotten the camera."""
        if self._last_sent is None or self.idle_timeout_s is None:
            return False
        return now - self._last_sent > self.idle_timeout_s

    def refused(self, flags: Flags, message: str) -> None:
        """A frame sent with `flags` was refused (or failed on the way) with `message`."""
        with self._lock:
            if flags.number == self._number and (flags.start or asks_to_start_again(message)):
                self._start = True

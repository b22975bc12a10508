"""The cameras a tracking tier let in: at most its limit at once, shared by its preprocess instances.

A camera is a Triton sequence. Triton's sequence batcher (on the tier's preprocess) refuses a frame
without a sequence id, or one that continues a sequence it does not hold; it never refuses a new
sequence, it makes it wait for a free slot. So the tier keeps its own list of the cameras it let start:
a start beyond the limit is refused at once with an error that says what to do, and the frames after a
refused start are refused too, as the camera was never let in. A camera leaves at its sequence's end,
or when it sent nothing for the idle timeout (Triton's own, so both forget it alike).

The list is a table in shared memory (pipelines.shared_memory): each preprocess instance holds its own
cameras' sequences, and the limit is the tier's. A camera is known by a 64-bit hash of its sequence id
(a number or a string; 7 and "7" are two cameras, as for Triton).
"""

from __future__ import annotations

import hashlib
import time
from enum import Enum
from pathlib import Path

import numpy as np

from pipelines import shared_memory

Frame = tuple[int | str, bool, bool]  # a frame's camera (its sequence id), whether it starts and whether it ends it
_SLOT = np.dtype([("key", "<u8"), ("seen", "<f8")])  # key 0: a free slot; seen: the camera's last frame


def path_for(tier: str, server_pid: int | None = None) -> Path:
    """The list of `tier` in the server that runs this stub (its parent), or in `server_pid`'s."""
    return shared_memory.path_for(f"cameras-{tier}", server_pid)


def key(camera: int | str) -> int:
    """The camera's key in the table: never 0 (a free slot)."""
    digest = hashlib.blake2b(repr(camera).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class Verdict(Enum):
    LET_IN = "let in"
    FULL = "every camera slot is taken"  # a start beyond the limit
    UNKNOWN = "not let in"  # a frame after a refused start, or after the camera idled out


class Cameras:
    """At most `limit` cameras at once, each forgotten after `idle_s` without a frame."""

    def __init__(self, path: Path, limit: int, idle_s: float):
        if limit < 1:
            raise ValueError(f"a tier that tracks lets in at least one camera ({limit} configured)")
        self.limit = limit
        self.idle_s = idle_s
        self.table = shared_memory.Table(path, np.dtype([("slots", _SLOT, (limit,))]))
        self._slots = self.table.record["slots"]

    def enter(self, frames: list[Frame]) -> list[Verdict]:
        """The verdict on each frame (camera, sequence_start, sequence_end), in order, under one lock."""
        with self.table.locked():
            now = time.monotonic()
            slots = self._slots
            slots[(slots["key"] != 0) & (now - slots["seen"] > self.idle_s)] = 0
            verdicts = []
            for camera, start, end in frames:
                k = key(camera)
                held = np.flatnonzero(slots["key"] == k)
                if not len(held) and start:
                    held = np.flatnonzero(slots["key"] == 0)[:1]
                if not len(held):
                    verdicts.append(Verdict.FULL if start else Verdict.UNKNOWN)
                    continue
                slots[held[0]] = (0, 0.0) if end else (k, now)
                verdicts.append(Verdict.LET_IN)
            return verdicts

    @property
    def held(self) -> int:
        """Cameras let in now (idle ones count until the next `enter` forgets them)."""
        with self.table.locked():
            return int((self._slots["key"] != 0).sum())

    def close(self) -> None:
        del self._slots
        self.table.close()

    def remove(self) -> None:
        """Delete the files (the server is stopping)."""
        self.table.remove()

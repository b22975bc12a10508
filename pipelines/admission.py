"""Admission at a tier's first step: the images inside a tier, shared by its preprocess and postprocess.

A tier refuses work only where none has been spent on it: in preprocess's queue, before the image is
decoded. Past preprocess, the detector and postprocess never refuse (their queues have no limit and no
timeout), so nothing a tier admitted is thrown away at a full inner queue, and a drain can count
what is inside exactly (admitted − answered − failed, from Triton's metrics). What bounds the inner
queues is this ledger: preprocess admits a request only while the images admitted and not yet
answered stay within the tier's `max_in_flight`; otherwise it waits, and the requests behind it wait
in its own queue, where Triton's queue size and timeout refuse them without any work spent.

Each admitted request gets a ticket that travels with it to postprocess (spec.TICKET), which hands it
back when it answers. A request can vanish between the steps without an answer from postprocess: a
client that cancels (a gRPC deadline) is dropped from the next step's queue (Triton counts it on that
step's failures), or a step fails. Its ticket would hold its images' room forever, so a ticket older
than spec.TICKET_LOST_AFTER_S is taken back.

The ledger is a small shared-memory table per tier and per server process (pipelines.shared_memory):
the python stubs are children of tritonserver, and a lock serializes its updates between the instances.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines import shared_memory, spec

SLOTS = 4096  # tickets outstanding at once (ticket t lives in slot t % SLOTS); far above any tier's limit
POLL_S = 0.001  # how often a waiting preprocess looks for room
_HEADER = np.dtype([("next_ticket", "<i8"), ("images", "<i8"), ("lost", "<i8"), ("reserved", "<i8")])
_SLOT = np.dtype([("ticket", "<i8"), ("images", "<i8"), ("admitted_at", "<f8")])
_LEDGER = np.dtype([("header", _HEADER), ("slots", _SLOT, (SLOTS,))])  # zero-filled: none outstanding, ticket 1 next


def path_for(tier: str, server_pid: int | None = None) -> Path:
    """The ledger of `tier` in the server that runs this stub (its parent), or in `server_pid`'s."""
    return shared_memory.path_for(f"admission-{tier}", server_pid)


class Ledger:
    """The tier's admitted requests (tickets) and their images; every method takes the lock."""

    def __init__(self, path: Path):
        self.table = shared_memory.Table(path, _LEDGER)
        self.locked = self.table.locked
        self._header = self.table.record["header"]
        self._slots = self.table.record["slots"]

    @property
    def images(self) -> int:
        """Images admitted and not yet answered (nor taken back as lost)."""
        with self.locked():
            return int(self._header["images"])

    @property
    def lost(self) -> int:
        """Tickets taken back because their requests never reached postprocess's answer."""
        with self.locked():
            return int(self._header["lost"])

    def _take_back_lost(self, now: float) -> None:
        stale = (self._slots["ticket"] != 0) & (self._slots["admitted_at"] < now - spec.TICKET_LOST_AFTER_S)
        if stale.any():
            self._header["images"] -= self._slots["images"][stale].sum()
            self._header["lost"] += int(stale.sum())
            self._slots[stale] = 0

    def _issue(self, images: int, now: float) -> int:
        ticket = int(self._header["next_ticket"]) or 1
        slot = self._slots[ticket % SLOTS]
        if slot["ticket"]:  # SLOTS tickets later and still outstanding: lost long ago
            self._header["images"] -= slot["images"]
            self._header["lost"] += 1
        slot["ticket"], slot["images"], slot["admitted_at"] = ticket, images, now
        self._header["next_ticket"] = ticket + 1
        self._header["images"] += images
        return ticket

    def admit(self, images: Sequence[int], limit: int, wait_s: float | None) -> list[int]:
        """Tickets for requests of `images` images each, in order, once they fit within `limit` images.

        Waits until all fit, for at most `wait_s` (None: as long as it takes); then the longest leading
        run that fits gets tickets, and the rest get 0 (not admitted).
        """
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            with self.locked():
                now = time.monotonic()
                self._take_back_lost(now)
                room = limit - int(self._header["images"])
                fits = int(np.searchsorted(np.cumsum(images), room, side="right"))
                if fits == len(images) or (deadline is not None and now >= deadline):
                    return [self._issue(n, now) for n in images[:fits]] + [0] * (len(images) - fits)
            time.sleep(POLL_S)

    def answered(self, tickets: Sequence[int]) -> None:
        """Postprocess answered these requests (with outputs or an error): their room is free again."""
        with self.locked():
            for ticket in tickets:
                slot = self._slots[ticket % SLOTS]
                if ticket and slot["ticket"] == ticket:  # not taken back meanwhile
                    self._header["images"] -= slot["images"]
                    slot["ticket"] = 0

    def close(self) -> None:
        del self._header, self._slots
        self.table.close()

    def remove(self) -> None:
        """Delete the files (the server is stopping); instances that still hold them keep working."""
        self.table.remove()

"""Requests to the tier, and what a failed one means for its entry.

Each entry is its own request (a bad image fails only its own), sent with `PeopleClient.infer_async`
(gRPC). Separate calls may reach the server in any order, so a tier that tracks gets one frame of a camera
at a time (pipeline.py). A failure is one of:
- the entry's fault (`INVALID_ARGUMENT`: not an image, a threshold out of range): an error event;
- the server's state (down, restarting, stopping, queue full, too slow): retried without limit, with
  backoff, while the bridge stops reading; nothing is the entry's fault;
- the camera's sequence (a tier that tracks): the server lost it or never began it ("start its sequence
  again", "must specify the START flag"): sent again at once, starting the sequence;
- anything else (`INTERNAL`, ...): retried, and counted toward the entry's dead letter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from tools.bridge.entry import Frame
from tools.bridge.options import Options
from tools.client.people import PeopleClient, outputs
from tools.client.sequence import Flags, asks_to_start_again

log = logging.getLogger("bridge.inference")

TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED", "ABORTED", "NOT_FOUND"}


class Outcome(str, Enum):
    OK = "ok"
    BAD = "bad"  # the entry's fault: error event, acknowledged
    RETRY = "retry"  # the server's state: retried without limit
    RESTART = "restart"  # the camera's sequence must start again: sent again at once, starting it
    FAIL = "fail"  # unexplained: retried, counted toward the dead letter


def code_of(error: Exception) -> str:
    """`INVALID_ARGUMENT` from tritonclient's `StatusCode.INVALID_ARGUMENT`; the class name otherwise."""
    if isinstance(error, InferenceServerException) and error.status():
        return str(error.status()).rsplit(".", 1)[-1]
    return type(error).__name__


def message_of(error: Exception) -> str:
    return (error.message() if isinstance(error, InferenceServerException) else None) or str(error)


def classify(error: Exception) -> Outcome:
    code = code_of(error)
    if asks_to_start_again(message_of(error)):
        return Outcome.RESTART
    if code == "INVALID_ARGUMENT":
        return Outcome.BAD
    if code in TRANSIENT:
        return Outcome.RETRY
    return Outcome.FAIL


Done = Callable[[dict[str, np.ndarray] | None, Exception | None], None]


class Inference:
    """One gRPC client; after the server went away, the next send opens a new channel (gRPC's own
    reconnection backs off up to two minutes, longer than a Triton restart)."""

    def __init__(self, options: Options):
        self.options = options
        self._lock = threading.Lock()
        self._client: PeopleClient | None = None
        self._stale = False

    def _current(self) -> PeopleClient:
        with self._lock:
            if self._client is None or self._stale:
                old, self._client, self._stale = self._client, self._new(), False
                if old is not None:
                    old.close()  # its calls still in flight come back CANCELLED: retried
            return self._client

    def _new(self) -> PeopleClient:
        return PeopleClient(self.options.url, "grpc", self.options.api_key, timeout_s=self.options.request_timeout_s)

    def reconnect(self) -> None:
        """The server looked gone: the next send opens a new channel."""
        self._stale = True

    def send(self, frame: Frame, flags: Flags | None, done: Done) -> None:
        """Send one frame (`flags`: its place in its camera's sequence, for a tier that tracks); `done(outputs,
        None)` or `done(None, error)` is called on tritonclient's thread."""

        def answered(result: Any, error: Exception | None) -> None:
            if error is None:
                try:
                    got = outputs(result)
                except Exception as e:  # an answer we cannot read counts as a failure, not a crash
                    done(None, e)
                    return
                done(got, None)
            else:
                done(None, error)

        client = self._current()
        try:
            inputs = client.inputs([frame.jpeg], **frame.thresholds())
            client.infer_async(self.options.tier, inputs, answered, **(flags.kwargs() if flags else {}))
        except InferenceServerException as e:
            done(None, e)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

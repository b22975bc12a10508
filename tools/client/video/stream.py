"""One gRPC stream to a model that outlives its server: requests pipelined, answers matched by request id.

Requests go out with `start_stream` / `async_stream_infer`, so several are on
their way at once; each answer is matched to its request by id. A failed
request fails only itself, and the server's readiness is checked before the
next send. A broken stream (server gone, not ready, or silent for `timeout_s`)
fails the requests on it and is closed; the next `connect` makes a new client
and stream once the server is ready again, with an exponential backoff
between attempts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

log = logging.getLogger("video")

_REQUEST_ID = re.compile(r"\[request id: (\d+)\]")

# (request id, the answer or None, why it failed or None, seconds from send to answer or None)
OnAnswer = Callable[[int, "grpcclient.InferResult | None", "str | None", "float | None"], None]


class Backoff:
    """When the next connection attempt may be made: the wait doubles from `first` to `longest` per failure."""

    def __init__(self, first_s: float, longest_s: float):
        self.first_s, self.longest_s = first_s, longest_s
        self._wait_s = first_s
        self._next_at = 0.0  # time.monotonic() of the next allowed attempt

    def remaining_s(self) -> float:
        return max(0.0, self._next_at - time.monotonic())

    def failed(self) -> None:
        self._next_at = time.monotonic() + self._wait_s
        self._wait_s = min(self._wait_s * 2, self.longest_s)

    def succeeded(self) -> None:
        self._wait_s = self.first_s
        self._next_at = 0.0


@dataclass(eq=False)
class _Connection:
    """One client with its started stream, and the requests sent on it that await an answer."""

    client: grpcclient.InferenceServerClient
    in_flight: OrderedDict[int, float] = field(default_factory=OrderedDict)  # request id -> send time, sent order
    failed_request: bool = False  # a request failed: check the server's readiness before the next send
    ended: str | None = None  # why the server ended the stream, once its callback said so
    ended_event: threading.Event = field(default_factory=threading.Event)


class ReconnectingStream:
    """Requests to `model` at `url` over one stream at a time, started again after it breaks (`name` for logs).

    Owns the connection (client, stream, requests in flight), why the server cannot be used right now,
    and the backoff. Every request given to `send` gets exactly one `on_answer` call, on tritonclient's
    thread or the caller's: its answer, or why it failed. `on_reconnect` is told of each new stream after
    a broken one. `connect` tries the server when asked; the owner waits `retry_in_s()` first (working
    meanwhile, or stopping early), so the backoff holds.
    """

    def __init__(
        self,
        name: str,
        url: str,
        model: str,
        headers: dict[str, str] | None,
        timeout_s: float,
        backoff_s: tuple[float, float],
        on_answer: OnAnswer,
        on_reconnect: Callable[[], None],
    ):
        self.name, self.url, self.model, self.timeout_s = name, url, model, timeout_s
        self._headers = headers
        self._on_answer, self._on_reconnect = on_answer, on_reconnect
        self._lock = threading.Lock()  # the connection is shared with tritonclient's callback thread
        self._connection: _Connection | None = None
        self._down: str | None = None  # why the server cannot be used: a failed attempt or a broken stream
        self._backoff = Backoff(*backoff_s)

    def connect(self) -> str | None:
        """None once a stream is started (a new one if it broke), else why the server cannot be used.

        After a failed request the server's readiness is checked first: a stopping server fails requests
        one by one but waits for open streams to close before it exits, so the stream is closed then.
        """
        with self._lock:
            connection, down = self._connection, self._down
            check = connection is not None and connection.failed_request
            if check:
                connection.failed_request = False
        if connection is not None and down is None:
            if not check:
                return None
            not_ready = self._not_ready(connection.client)
            if not_ready is None:
                return None
            self.abandon(not_ready)
        reconnecting = connection is not None or down is not None
        self.close()
        client = grpcclient.InferenceServerClient(self.url)
        not_ready = self._not_ready(client)
        if not_ready is not None:
            client.close()
            with self._lock:
                self._down = not_ready
            self._backoff.failed()
            return not_ready
        new = _Connection(client)
        with self._lock:  # held, so that no callback of the new stream runs before it is the current one
            client.start_stream(callback=partial(self._on_response, new), headers=self._headers)
            self._connection, self._down = new, None
        self._backoff.succeeded()
        if reconnecting:
            log.info("%s: reconnected to %s", self.name, self.url)
            self._on_reconnect()
        return None

    def retry_in_s(self) -> float:
        """Seconds until the backoff lets `connect` try the server again; 0 after a started stream."""
        return self._backoff.remaining_s()

    def send(self, request_id: int, inputs: list[Any], **kwargs: Any) -> None:
        """Send one request on the stream `connect` started; its outcome goes to `on_answer`. `kwargs` go to
        tritonclient's async_stream_infer (a sequence's flags: the stream keeps the order they are sent in)."""
        with self._lock:
            connection, down = self._connection, self._down
            if connection is not None and down is None:
                connection.in_flight[request_id] = time.monotonic()
        if connection is None or down is not None:  # it broke since `connect`
            self._on_answer(request_id, None, f"stream failed: {down or 'not connected'}", None)
            return
        try:
            connection.client.async_stream_infer(self.model, inputs, request_id=str(request_id), **kwargs)
        except InferenceServerException as e:
            # The stream has ended. tritonclient marks it so just before its callback brings the reason
            # (such as a missing API key): wait a moment for that rather than report only "not valid".
            connection.ended_event.wait(1.0)
            self.abandon(connection.ended or f"sending failed: {e.message()}")

    def expire(self) -> None:
        """Abandon the stream when its oldest request has waited longer than `timeout_s`."""
        with self._lock:
            connection = self._connection if self._down is None else None
            if connection is None or not connection.in_flight:
                return
            waited_s = time.monotonic() - next(iter(connection.in_flight.values()))
        if waited_s > self.timeout_s:
            self.abandon(f"no answer within {self.timeout_s:g}s")

    def abandon(self, reason: str) -> None:
        """Fail every request in flight and mark the stream for a restart; its late answers are ignored."""
        with self._lock:
            failed = self._abandon_locked(reason)
        self._fail(failed, f"stream failed: {reason}")

    def close(self) -> None:
        """Stop the stream without waiting for answers (any request still on it fails)."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is None:
            return
        self._fail(list(connection.in_flight), "stream closed")
        try:
            connection.client.stop_stream(cancel_requests=True)
            connection.client.close()
        except Exception as e:  # closing a dead channel must not end the run
            log.debug("closing the stream: %s", e)

    def _not_ready(self, client: grpcclient.InferenceServerClient) -> str | None:
        """None when the server is ready, else why not."""
        try:
            if client.is_server_ready(headers=self._headers, client_timeout=2.0):
                return None
            return f"{self.url} is not ready"
        except InferenceServerException as e:
            return e.message() or str(e)

    def _abandon_locked(self, reason: str) -> list[int]:
        """Mark the stream broken and take its requests in flight, oldest first; call with the lock held."""
        self._down = reason
        if self._connection is None:
            return []
        failed = list(self._connection.in_flight)
        self._connection.in_flight.clear()
        return failed

    def _fail(self, request_ids: list[int], error: str) -> None:
        for request_id in request_ids:
            self._on_answer(request_id, None, error, None)

    def _on_response(
        self, connection: _Connection, result: grpcclient.InferResult | None, error: InferenceServerException | None
    ) -> None:
        """The stream's callback (tritonclient's thread): match the answer to its request by id."""
        now = time.monotonic()
        if error is not None and error.status() is not None:  # a gRPC status: the stream itself ended
            reason = error.message() or str(error)
            connection.ended = reason
            connection.ended_event.set()
            with self._lock:
                failed = self._abandon_locked(reason) if self._current(connection) else []
            self._fail(failed, f"stream failed: {reason}")
            return
        with self._lock:
            if not self._current(connection):
                return  # a stream already given up: its requests have failed
            if result is not None:
                request_id = int(result.get_response().id)
            else:  # tritonclient drops the id of failed requests; Triton often names it in the message
                named = _REQUEST_ID.search(error.message() if error is not None else "")
                request_id = int(named.group(1)) if named else next(iter(connection.in_flight), -1)
            sent_at = connection.in_flight.pop(request_id, None)
            connection.failed_request |= error is not None
        if sent_at is None:
            log.warning("%s: answer for unknown request %s ignored", self.name, request_id)
            return
        message = None if error is None else error.message() or str(error)
        self._on_answer(request_id, result, message, now - sent_at)

    def _current(self, connection: _Connection) -> bool:
        """`connection` is the stream in use (not closed, not abandoned); call with the lock held."""
        return connection is self._connection and self._down is None

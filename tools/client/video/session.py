"""Frames of a video or a live source through one tier over one gRPC stream, answered in frame order.

The logic behind `python -m tools.client.video`, importable so tests can drive
it with their own frame source and sink. `StreamSession` joins three parts:

- a reader: `FileReader` reads a file only when the window has room, so every
  frame is sent; `LiveReader` reads a live source on its own thread at the
  source's pace into a buffer of `max_pending` frames, and a frame that does
  not fit is dropped (`DropPolicy`) and counted. Nothing queues without bound.
- `Window` (window.py): at most `max_inflight` frames sent and not yet handed
  on, given to the sink in frame order.
- `ReconnectingStream` (stream.py): the frames as requests on one
  `start_stream` / `async_stream_infer` stream (request id = frame index),
  restarted after it breaks.

Each frame is encoded as JPEG (`encode_jpeg`, media.py) and its answer goes to
a `Sink` in frame order. A failed frame fails alone; `OnError.STOP` ends the
run at the first one, `CONTINUE` goes on.

With a tier that tracks, the source is one camera: a Triton sequence whose id
is the source's name (`CameraSequence`, tools/client/sequence.py: started on
the first frame and again after a refusal that needs it, ended on a file's
last frame). The frames in flight go in order on the one stream, and Triton
keeps a camera's frames in that order, so the window may hold several.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import cv2
import numpy as np
import tritonclient.grpc as grpcclient

from pipelines import spec
from tools.client.people import auth_headers, image_inputs, outputs, threshold_inputs, unpack
from tools.client.sequence import CameraSequence, Flags
from tools.client.video.media import DEFAULT_FPS, DEFAULT_JPEG_QUALITY, FrameResult, Sink, Source, encode_jpeg
from tools.client.video.stream import ReconnectingStream
from tools.client.video.window import People, Stats, Window

log = logging.getLogger("video")


class DropPolicy(str, Enum):
    """Which frame a live source loses when the server falls behind."""

    OLDEST = "oldest"  # drop the longest-waiting frame: results stay as fresh as possible
    NEWEST = "newest"  # drop the frame just captured: frames already waiting keep their turn


class OnError(str, Enum):
    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class StreamOptions:
    url: str = f"{spec.HOST}:{spec.GRPC_PORT}"
    tier: str = "streaming"
    max_inflight: int = 4  # frames sent and not yet handed to the sink
    max_pending: int = 1  # live only: captured frames waiting for a free slot
    drop: DropPolicy = DropPolicy.OLDEST
    on_error: OnError = OnError.CONTINUE
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    conf: float | None = None
    iou: float | None = None
    gender_threshold: float | None = None
    api_key: str | None = None
    request_timeout_s: float = 30.0  # no answer by then: the stream is taken as broken and restarted
    backoff_s: tuple[float, float] = (0.25, 2.0)  # first and longest wait between reconnection attempts
    stop_grace_s: float = 5.0  # after a stop, how long answers already on their way are awaited


class FileReader:
    """A file's frames, read one at a time when the session asks, so none is dropped.

    Owns the position in the file, read one frame ahead so that the last one says so; counts `produced`.
    A frame's timestamp is its position over the frame rate.
    """

    def __init__(self, source: Source, stats: Stats):
        self._frames = iter(source.frames)
        self._ahead: np.ndarray | None = None
        self._fps = source.fps or DEFAULT_FPS
        self._stats = stats

    def start(self) -> None:
        """Nothing to start: the session reads on its own thread."""

    def ready(self) -> bool:
        return True

    def next(self) -> FrameResult | None:
        """The next frame, or None at the end of the file."""
        image = self._ahead if self._ahead is not None else next(self._frames, None)
        if image is None:
            return None
        self._ahead = next(self._frames, None)
        index = self._stats.produced
        self._stats.produced += 1
        return FrameResult(index, index / self._fps, image, last=self._ahead is None)

    def close(self) -> None:
        """Nothing to stop."""


class LiveReader:
    """A live source read on its own thread at its own pace into a buffer of at most `max_pending` frames.

    Owns the buffer, the thread and whether the source has ended. When the buffer is full the server is
    behind: a frame is dropped by `drop` instead of waiting. Counts produced, dropped and max_pending_seen.
    Shares the session's condition (`cond`, guarding the buffer), which it notifies when a frame is
    buffered or the source ends; it stops reading once `stopping()`.
    """

    def __init__(
        self,
        source: Source,
        max_pending: int,
        drop: DropPolicy,
        stats: Stats,
        cond: threading.Condition,
        stopping: Callable[[], bool],
    ):
        self.source, self.max_pending, self.drop = source, max_pending, drop
        self._stats, self._cond, self._stopping = stats, cond, stopping
        self._pending: deque[FrameResult] = deque()
        self._ended = False
        self._thread = threading.Thread(target=self._read, name=f"read-{source.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def ready(self) -> bool:
        """A frame is waiting, or none will come; call with `cond` held."""
        return bool(self._pending) or self._ended

    def next(self) -> FrameResult | None:
        """The oldest waiting frame; None only once the source has ended."""
        with self._cond:
            return self._pending.popleft() if self._pending else None

    def close(self) -> None:
        """Let the thread end (`stopping()` is true by now); frames still waiting count as dropped."""
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        with self._cond:
            self._stats.dropped += len(self._pending)  # captured, never sent
            self._pending.clear()

    def _read(self) -> None:
        """Capture at the source's own pace; when the buffer is full, drop by policy instead of waiting."""
        try:
            for image in self.source.frames:
                if self._stopping():
                    break
                with self._cond:
                    frame = FrameResult(self._stats.produced, time.time(), image)
                    self._stats.produced += 1
                    if len(self._pending) >= self.max_pending:
                        self._stats.dropped += 1
                        if self.drop is DropPolicy.NEWEST:
                            continue
                        self._pending.popleft()
                    self._pending.append(frame)
                    self._stats.max_pending_seen = max(self._stats.max_pending_seen, len(self._pending))
                    self._cond.notify_all()
        except Exception as e:  # a broken capture ends the source, not the run's bookkeeping
            log.error("%s: reading frames failed: %s", self.source.name, e)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()


class StreamSession:
    """One source through one tier: its reader, a window in frame order and a reconnecting stream, to a sink.

    Owns what joins the parts: the condition they share (the window and the live buffer, notified on
    every change the sending loop waits for), the loop itself, and whether a failed frame halted the run
    (`OnError.STOP`). `stats` is the tally all parts count into.
    """

    def __init__(self, source: Source, sink: Sink, options: StreamOptions, stop: threading.Event | None = None):
        if options.max_inflight < 1 or options.max_pending < 1:
            raise ValueError("max_inflight and max_pending must be at least 1")
        self.source = source
        self.sink = sink
        self.options = options
        self.stop_event = stop or threading.Event()
        self.stats = Stats()
        self._cond = threading.Condition()
        self._halted = False
        self._window = Window(options.max_inflight, self.stats)
        self._reader = (
            LiveReader(source, options.max_pending, options.drop, self.stats, self._cond, self._stopping)
            if source.live
            else FileReader(source, self.stats)
        )
        self._stream = ReconnectingStream(
            source.name,
            options.url,
            spec.tier(options.tier).model(spec.Step.ENSEMBLE),
            auth_headers("grpc", options.api_key),
            options.request_timeout_s,
            options.backoff_s,
            on_answer=self._answered,
            on_reconnect=self._reconnected,
        )
        # One frame per request: the same threshold tensors for every frame.
        self._thresholds = threshold_inputs(grpcclient, 1, options.conf, options.iou, options.gender_threshold)
        self._sequence = CameraSequence(source.name) if spec.tier(options.tier).tracks else None
        self._flags: dict[int, Flags] = {}  # a tracked run's frames in flight: their sequence flags
        if self._sequence is not None:
            self.stats.people = People()

    def run(self) -> Stats:
        """Send every frame (files) or as many as the server keeps up with (live); always closes sink and source."""
        try:
            self._reader.start()
            while self._wait_for_room():
                frame = self._reader.next()
                if frame is None:
                    break
                self._send(frame)
            self._drain()
        finally:
            self._halted = True
            self._reader.close()
            self._stream.close()
            self.stats.ended = time.monotonic()
            try:
                self.sink.close()
            finally:
                if self.source.release:
                    self.source.release()
        return self.stats

    # -- frames out ---------------------------------------------------------------
    def _send(self, frame: FrameResult) -> None:
        """Encode and send one frame; a frame that cannot be encoded or meets the server down fails here."""
        try:
            frame.jpeg = encode_jpeg(frame.image, self.options.jpeg_quality)
        except (cv2.error, ValueError) as e:
            frame.error = f"bad frame: {e}"
        else:
            self._wait_out_backoff()
            down = self._stream.connect()
            if down is not None:
                frame.error = f"server unavailable: {down}"
        flags = self._flags_for(frame) if frame.error is None else {}
        with self._cond:
            self._window.add(frame)
        if frame.error is None:
            self._stream.send(frame.index, [*image_inputs(grpcclient, [frame.jpeg]), *self._thresholds], **flags)

    def _flags_for(self, frame: FrameResult) -> dict[str, Any]:
        """A tracked run: the frame's sequence flags (kept until its answer), as the stream sends them."""
        if self._sequence is None:
            return {}
        flags = self._sequence.next(frame.index, end=frame.last)
        frame.sequence = flags.sequence
        with self._cond:
            self._flags[frame.index] = flags
        return flags.kwargs()

    # -- the stream's reports ---------------------------------------------------------
    def _answered(
        self, index: int, result: grpcclient.InferResult | None, error: str | None, latency_s: float | None
    ) -> None:
        """A frame's answer or failure (tritonclient's thread, or ours): its persons go into the window."""
        with self._cond:
            flags = self._flags.pop(index, None)
        if error is not None and flags is not None and self._sequence is not None:
            self._sequence.refused(flags, error)
        persons = None
        if result is not None:
            try:
                (persons,) = unpack(outputs(result))
            except Exception as e:  # a malformed answer fails its frame, not the stream
                error, latency_s = f"bad answer: {e}", None
        with self._cond:
            self._window.finish(index, persons, error, latency_s)
            self._cond.notify_all()

    def _reconnected(self) -> None:
        self.stats.reconnects += 1

    def _wait_out_backoff(self) -> None:
        """Before the stream tries the server again, the wait its backoff asks for: frames failed by the
        outage reach the sink first; a stop cuts it short."""
        wait_s = self._stream.retry_in_s()
        if wait_s > 0:
            self._emit()
            self.stop_event.wait(wait_s)

    # -- results in frame order ---------------------------------------------------------
    def _stopping(self) -> bool:
        return self._halted or self.stop_event.is_set()

    def _emit(self) -> None:
        """Hand finished frames to the sink in frame order (outside the lock: sinks may be slow)."""
        while True:
            with self._cond:
                result = self._window.pop()
            if result is None:
                return
            if not result.ok:
                log.warning("%s: frame %d failed: %s", self.source.name, result.index, result.error)
                if self.options.on_error is OnError.STOP and not self._halted:
                    self._halted = True
                    self.stats.stopped = f"frame {result.index} failed (--on-error stop)"
            self.sink.write(result)

    def _wait_for_room(self) -> bool:
        """Emit results until the window has room and the reader a frame (True), or a stop (False)."""
        while True:
            self._emit()
            if self._stopping():
                return False
            self._stream.expire()
            with self._cond:
                if self._window.ready():
                    continue
                if not self._window.full() and self._reader.ready():
                    return True
                self._cond.wait(0.2)  # also wakes the stream's timeout check

    def _drain(self) -> None:
        """Wait for the frames in the window; after a stop, only for `stop_grace_s`, then fail the rest."""
        grace_until: float | None = None
        while True:
            self._emit()
            if self._stopping() and grace_until is None:
                grace_until = time.monotonic() + self.options.stop_grace_s
                if self.stats.stopped is None:
                    self.stats.stopped = "interrupted"
            if grace_until is not None and time.monotonic() > grace_until:
                self._stream.abandon("run stopped before the answer came")
            else:
                self._stream.expire()
            with self._cond:
                if self._window.empty():
                    break
                if not self._window.ready():
                    self._cond.wait(0.2)
        if self.stop_event.is_set() and self.stats.stopped is None:
            self.stats.stopped = "interrupted"

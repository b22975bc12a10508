"""Frames of a video or a live source through one tier over one gRPC stream, answered in frame order.

The logic behind `tools/video.py`, importable so tests can drive it with their
own frame source and sink:

- `Source`: an iterable of BGR frames plus whether it is live (`open_source`
  wraps `cv2.VideoCapture` for files, camera indices and stream URLs).
- `StreamSession`: encodes each frame as JPEG (`encode_jpeg`, deterministic),
  keeps at most `max_inflight` requests on one `start_stream` /
  `async_stream_infer` stream (request id = frame index) and hands the results
  to a `Sink` in frame order. A file blocks when the window is full, so every
  frame is sent; a live source is read by its own thread into a buffer of
  `max_pending` frames, and a frame that does not fit is dropped (`DropPolicy`)
  and counted. Nothing queues without bound.
- Order: answers are matched to frames by request id. One that arrives before
  an older frame's answer is counted (`reordered`) and held until the older
  frames are done; the hold is bounded by the window. The streaming tier
  preserves order, so there it stays 0.
- Errors: a failed request fails its frame only, and the server's readiness
  is checked before the next send. A broken stream (server gone, not ready, or
  silent for `request_timeout_s`) fails the frames in flight and is closed;
  the next frame reconnects with a new client and stream once the server is
  ready again (exponential backoff meanwhile; frames that find it down fail).
  `OnError.STOP` ends the run at the first failed frame, `CONTINUE` goes on.
- `FileSink` writes `annotated.mp4` (mp4v) and `frame_counts.jsonl`, and closes
  both on any exit, so a stopped run leaves playable files.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import cv2
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pipelines import spec
from tools.client.people import Person, auth_headers, request_inputs, unpack

log = logging.getLogger("video")

DEFAULT_JPEG_QUALITY = 90
DEFAULT_FPS = 25.0  # the annotated video's rate when the source does not say
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtp", "udp", "tcp", "srt", "http", "https")
UNDETERMINED_LABEL = "undetermined"
_REQUEST_ID = re.compile(r"\[request id: (\d+)\]")


class DropPolicy(str, Enum):
    """Which frame a live source loses when the server falls behind."""

    OLDEST = "oldest"  # drop the longest-waiting frame: results stay as fresh as possible
    NEWEST = "newest"  # drop the frame just captured: frames already waiting keep their turn


class OnError(str, Enum):
    CONTINUE = "continue"
    STOP = "stop"


def encode_jpeg(image: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """The bytes sent for a frame; the same pixels and quality give the same bytes, so tests can rebuild them."""
    if image is None or image.size == 0:
        raise ValueError("empty frame")
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


# --- Sources --------------------------------------------------------------------


@dataclass
class Source:
    """Frames (BGR uint8) in capture order; `live` ones are read at their own pace and may be dropped."""

    name: str
    frames: Iterable[np.ndarray]
    live: bool
    fps: float | None = None
    release: Callable[[], None] | None = None


def is_live(location: str) -> bool:
    """Camera indices and network streams are live; files (and file:// URLs) are not."""
    return location.isdigit() or urlparse(location).scheme.lower() in LIVE_SCHEMES


def source_name(location: str) -> str:
    """A short name for logs and output folders: the file's stem, `camera0`, or the URL's host and path."""
    if location.isdigit():
        return f"camera{location}"
    parsed = urlparse(location)
    if parsed.scheme and parsed.scheme != "file":
        raw = f"{parsed.hostname or ''}{parsed.path}"
    else:
        raw = Path(parsed.path if parsed.scheme == "file" else location).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-") or "source"


def open_source(location: str, live: bool | None = None) -> Source:
    """A file, camera index or stream URL read with OpenCV (its bundled FFmpeg); `live=None` guesses."""
    capture = cv2.VideoCapture(int(location)) if location.isdigit() else cv2.VideoCapture(location)
    if not capture.isOpened():
        capture.release()
        raise OSError(f"cannot open video source {location!r}")
    fps = capture.get(cv2.CAP_PROP_FPS)

    def frames() -> Iterator[np.ndarray]:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame

    return Source(
        name=source_name(location),
        frames=frames(),
        live=is_live(location) if live is None else live,
        fps=fps if 0 < fps < 1000 else None,
        release=capture.release,
    )


# --- Results and sinks -----------------------------------------------------------


@dataclass
class FrameResult:
    """One sent frame's outcome: persons, or the error that took its place."""

    index: int  # position in the source, counting dropped frames
    timestamp: float | None  # files: seconds into the video; live: Unix time of capture
    image: np.ndarray | None
    jpeg: bytes | None = None
    persons: list[Person] | None = None
    error: str | None = None
    latency_s: float | None = None  # request sent -> answer received

    @property
    def ok(self) -> bool:
        return self.error is None

    def gender_counts(self) -> dict[str, int]:
        counts = dict.fromkeys((*spec.GENDER_LABELS, UNDETERMINED_LABEL), 0)
        for p in self.persons or ():
            counts[p.gender_label or UNDETERMINED_LABEL] += 1
        return counts

    def record(self) -> dict[str, Any]:
        """The frame's line in frame_counts.jsonl."""
        line: dict[str, Any] = {"frame": self.index, "timestamp": _round(self.timestamp, 3)}
        if self.error is not None:
            line["error"] = self.error
            return line
        line["count"] = len(self.persons or ())
        line["genders"] = self.gender_counts()
        line["latency_ms"] = _round(None if self.latency_s is None else self.latency_s * 1000, 1)
        line["persons"] = [p.as_json() for p in self.persons or ()]
        return line


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Sink(Protocol):
    """Receives every sent frame's result, in frame order, on the session's thread."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


GENDER_COLORS = {0: (180, 60, 220), 1: (220, 140, 0), spec.UNDETERMINED: (170, 170, 170)}  # BGR


def draw(result: FrameResult) -> np.ndarray:
    """The frame with its boxes, gender labels and counts drawn (a red banner for a failed frame)."""
    assert result.image is not None
    image = result.image.copy()
    for p in result.persons or ():
        color = GENDER_COLORS.get(p.gender, GENDER_COLORS[spec.UNDETERMINED])
        x1, y1, x2, y2 = (round(v) for v in p.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
        label = f"{p.gender_label or '?'} {p.score:.2f}"
        cv2.putText(image, label, (x1, max(y1 - 5, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    if result.ok:
        g = result.gender_counts()
        n = len(result.persons or ())
        text = f"#{result.index} persons {n}  F {g['female']}  M {g['male']}  ? {g[UNDETERMINED_LABEL]}"
        band = (40, 40, 40)
    else:
        text = f"#{result.index} error: {result.error}"[:80]
        band = (0, 0, 200)
    cv2.rectangle(image, (0, 0), (image.shape[1], 22), band, -1)
    cv2.putText(image, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image


class FileSink:
    """`annotated.mp4` and `frame_counts.jsonl` in `out_dir`; every line is flushed, the video is released on close."""

    VIDEO = "annotated.mp4"
    JSONL = "frame_counts.jsonl"

    def __init__(self, out_dir: Path, fps: float | None = None):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.fps = fps or DEFAULT_FPS
        self.jsonl = (out_dir / self.JSONL).open("w", encoding="utf-8")
        self.video: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None  # (width, height): a video has one size
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        self.jsonl.write(json.dumps(result.record()) + "\n")
        self.jsonl.flush()
        if result.image is None or result.image.size == 0 or result.image.ndim != 3:
            return  # nothing to show: the line records the error
        image = draw(result)
        if self.video is None:
            self.size = (image.shape[1], image.shape[0])
            self.video = cv2.VideoWriter(
                str(self.out_dir / self.VIDEO), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size
            )
            if not self.video.isOpened():
                raise OSError(f"cannot write {self.out_dir / self.VIDEO}")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.video.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.video is not None:
            self.video.release()
            self.video = None
        if not self.jsonl.closed:
            self.jsonl.close()


# --- The session ------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOptions:
    url: str = f"{spec.HOST}:{spec.GRPC_PORT}"
    tier: str = "streaming"
    max_inflight: int = 4  # requests on the stream without an answer yet
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


@dataclass
class Stats:
    """Counters of one session; sent + dropped == produced once it has ended."""

    produced: int = 0
    sent: int = 0
    dropped: int = 0
    ok: int = 0
    errors: int = 0
    reordered: int = 0
    reconnects: int = 0
    max_inflight_seen: int = 0
    max_pending_seen: int = 0
    latencies_s: array = field(default_factory=lambda: array("d"))
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    stopped: str | None = None  # why the run ended early, if it did

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
        }


@dataclass
class _Frame:
    index: int
    timestamp: float | None
    image: np.ndarray
    jpeg: bytes | None = None
    sent_at: float = 0.0


class StreamSession:
    """One source through one tier: a bounded window on one gRPC stream, results to a sink in frame order."""

    def __init__(self, source: Source, sink: Sink, options: StreamOptions, stop: threading.Event | None = None):
        if options.max_inflight < 1 or options.max_pending < 1:
            raise ValueError("max_inflight and max_pending must be at least 1")
        self.source = source
        self.sink = sink
        self.options = options
        self.model = spec.tier(options.tier).model(spec.Step.ENSEMBLE)
        self.stop_event = stop or threading.Event()
        self.stats = Stats()
        self._headers = auth_headers("grpc", options.api_key)
        self._cond = threading.Condition()
        self._inflight: OrderedDict[int, _Frame] = OrderedDict()  # in send order, which is frame order
        self._order: deque[int] = deque()  # frames sent, not yet handed to the sink
        self._done: dict[int, FrameResult] = {}
        self._pending: deque[_Frame] = deque()  # live only
        self._reader_done = False
        self._halted = False  # on-error stop
        self._client: grpcclient.InferenceServerClient | None = None
        self._epoch = 0  # bumped whenever a stream is abandoned, so its late callbacks are ignored
        self._broken: str | None = None  # why the stream must be restarted
        self._suspect = False  # a request failed: check the server before the next send
        self._backoff = options.backoff_s[0]
        self._next_attempt = 0.0
        self._fps = source.fps

    # -- public ---------------------------------------------------------------
    def run(self) -> Stats:
        """Send every frame (files) or as many as the server keeps up with (live); always closes sink and source."""
        reader = None
        try:
            if self.source.live:
                reader = threading.Thread(target=self._read_live, name=f"read-{self.source.name}", daemon=True)
                reader.start()
            frames = None if self.source.live else iter(self.source.frames)
            while self._wait(self._can_send):
                frame = self._next_frame(frames)
                if frame is None:
                    break
                self._send(frame)
            self._drain()
        finally:
            self._halted = True
            if reader is not None:
                reader.join(timeout=1.0)
            with self._cond:
                self.stats.dropped += len(self._pending)  # captured, never sent
                self._pending.clear()
            self._close_stream()
            self.stats.ended = time.monotonic()
            try:
                self.sink.close()
            finally:
                if self.source.release:
                    self.source.release()
        return self.stats

    # -- frames in ----------------------------------------------------------------
    def _stopping(self) -> bool:
        return self._halted or self.stop_event.is_set()

    def _can_send(self) -> bool:
        if len(self._inflight) >= self.options.max_inflight:
            return False
        return not self.source.live or bool(self._pending) or self._reader_done

    def _next_frame(self, frames: Iterator[np.ndarray] | None) -> _Frame | None:
        if frames is not None:  # a file: read only when there is room, so it is never dropped
            image = next(frames, None)
            if image is None:
                return None
            index = self.stats.produced
            self.stats.produced += 1
            return _Frame(index, index / (self._fps or DEFAULT_FPS), image)
        with self._cond:
            return self._pending.popleft() if self._pending else None  # empty only once the reader is done

    def _read_live(self) -> None:
        """Capture at the source's own pace; when the buffer is full, drop by policy instead of waiting."""
        try:
            for image in self.source.frames:
                if self._stopping():
                    break
                with self._cond:
                    frame = _Frame(self.stats.produced, time.time(), image)
                    self.stats.produced += 1
                    if len(self._pending) >= self.options.max_pending:
                        self.stats.dropped += 1
                        if self.options.drop is DropPolicy.NEWEST:
                            continue
                        self._pending.popleft()
                    self._pending.append(frame)
                    self.stats.max_pending_seen = max(self.stats.max_pending_seen, len(self._pending))
                    self._cond.notify_all()
        except Exception as e:  # a broken capture ends the source, not the run's bookkeeping
            log.error("%s: reading frames failed: %s", self.source.name, e)
        finally:
            with self._cond:
                self._reader_done = True
                self._cond.notify_all()

    # -- requests out ---------------------------------------------------------------
    def _send(self, frame: _Frame) -> None:
        self.stats.sent += 1
        try:
            frame.jpeg = encode_jpeg(frame.image, self.options.jpeg_quality)
        except (cv2.error, ValueError) as e:
            self._fail_now(frame, f"bad frame: {e}")
            return
        if not self._ensure_stream():
            self._fail_now(frame, f"server unavailable: {self._broken}")
            return
        assert self._client is not None
        with self._cond:
            frame.sent_at = time.monotonic()
            self._inflight[frame.index] = frame
            self._order.append(frame.index)
            self.stats.max_inflight_seen = max(self.stats.max_inflight_seen, len(self._inflight))
        try:
            o = self.options
            inputs = request_inputs(grpcclient, [frame.jpeg], o.conf, o.iou, o.gender_threshold)
            self._client.async_stream_infer(self.model, inputs, request_id=str(frame.index))
        except InferenceServerException as e:
            with self._cond:
                self._abandon_stream(f"sending failed: {e.message()}")

    def _fail_now(self, frame: _Frame, error: str) -> None:
        with self._cond:
            self._order.append(frame.index)
            self._done[frame.index] = FrameResult(frame.index, frame.timestamp, frame.image, frame.jpeg, error=error)

    # -- the stream -------------------------------------------------------------------
    def _ensure_stream(self) -> bool:
        """A started stream, reconnecting with backoff after a failure; False while the server is unreachable.

        After a failed request the server's readiness is checked first: a stopping server fails requests
        one by one but waits for open streams to close before it exits, so the stream is closed then.
        """
        if self._client is not None and self._broken is None:
            if not self._suspect:
                return True
            self._suspect = False
            not_ready = self._not_ready(self._client)
            if not_ready is None:
                return True
            with self._cond:
                self._abandon_stream(not_ready)
        reconnecting = self._client is not None or self._broken is not None
        self._close_stream()
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            self._emit()  # frames failed by the outage reach the sink before the pause
            self.stop_event.wait(wait)
        client = grpcclient.InferenceServerClient(self.options.url)
        not_ready = self._not_ready(client)
        if not_ready is not None:
            self._broken = not_ready
            client.close()
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.options.backoff_s[1])
            return False
        with self._cond:
            self._epoch += 1
            client.start_stream(callback=partial(self._on_response, self._epoch), headers=self._headers)
            self._client = client
            self._broken = None
            self._suspect = False
        self._backoff = self.options.backoff_s[0]
        if reconnecting:
            self.stats.reconnects += 1
            log.info("%s: reconnected to %s", self.source.name, self.options.url)
        return True

    def _not_ready(self, client: grpcclient.InferenceServerClient) -> str | None:
        """None when the server is ready, else why not."""
        try:
            if client.is_server_ready(headers=self._headers, client_timeout=2.0):
                return None
            return f"{self.options.url} is not ready"
        except InferenceServerException as e:
            return e.message() or str(e)

    def _close_stream(self) -> None:
        """Stop the current stream without waiting for answers (its callbacks are ignored from here on)."""
        with self._cond:
            self._epoch += 1
            client, self._client = self._client, None
        if client is not None:
            try:
                client.stop_stream(cancel_requests=True)
                client.close()
            except Exception as e:  # closing a dead channel must not end the run
                log.debug("closing the stream: %s", e)

    def _abandon_stream(self, reason: str) -> None:
        """Fail every frame in flight and mark the stream for a restart; call with the lock held."""
        self._epoch += 1
        self._broken = reason
        for frame in self._inflight.values():
            self._done[frame.index] = FrameResult(
                frame.index, frame.timestamp, frame.image, frame.jpeg, error=f"stream failed: {reason}"
            )
        self._inflight.clear()
        self._cond.notify_all()

    def _on_response(self, epoch: int, result: Any, error: InferenceServerException | None) -> None:
        """The stream's callback (tritonclient's thread): match the answer to its frame by request id."""
        now = time.monotonic()
        with self._cond:
            if epoch != self._epoch:
                return
            if error is not None and error.status() is not None:  # gRPC status: the stream itself ended
                self._abandon_stream(error.message() or str(error))
                return
            if result is not None:
                index = int(result.get_response().id)
            else:  # tritonclient drops the id of failed requests; Triton often names it in the message
                named = _REQUEST_ID.search(error.message() if error is not None else "")
                index = int(named.group(1)) if named else next(iter(self._inflight), -1)
            frame = self._inflight.pop(index, None)
            if frame is None:
                log.warning("%s: answer for unknown request %s ignored", self.source.name, index)
                return
            if any(i < index for i in self._inflight):
                self.stats.reordered += 1  # held until the older frames are answered
            out = FrameResult(frame.index, frame.timestamp, frame.image, frame.jpeg, latency_s=now - frame.sent_at)
            if error is not None:
                out.error = error.message() or str(error)
                self._suspect = True
            else:
                try:
                    (out.persons,) = unpack({t.name: result.as_numpy(t.name) for t in spec.ENSEMBLE_OUTPUTS})
                except Exception as e:  # a malformed answer fails its frame, not the stream
                    out.error, out.latency_s = f"bad answer: {e}", None
            self._done[index] = out
            self._cond.notify_all()

    # -- results in frame order ---------------------------------------------------------
    def _ready_to_emit(self) -> bool:
        return bool(self._order) and self._order[0] in self._done

    def _emit(self) -> None:
        """Hand finished frames to the sink in frame order (outside the lock: sinks may be slow)."""
        while True:
            with self._cond:
                if not self._ready_to_emit():
                    return
                result = self._done.pop(self._order.popleft())
                if result.ok:
                    self.stats.ok += 1
                    if result.latency_s is not None:
                        self.stats.latencies_s.append(result.latency_s)
                else:
                    self.stats.errors += 1
            if not result.ok:
                log.warning("%s: frame %d failed: %s", self.source.name, result.index, result.error)
                if self.options.on_error is OnError.STOP and not self._halted:
                    self._halted = True
                    self.stats.stopped = f"frame {result.index} failed (--on-error stop)"
            self.sink.write(result)

    def _watchdog(self) -> None:
        """A stream that stopped answering is abandoned; call with the lock held."""
        if self._inflight:
            oldest = next(iter(self._inflight.values()))
            if time.monotonic() - oldest.sent_at > self.options.request_timeout_s:
                self._abandon_stream(f"no answer within {self.options.request_timeout_s:g}s")

    def _wait(self, ready: Callable[[], bool]) -> bool:
        """Emit results until `ready()` (True) or a stop (False)."""
        while True:
            self._emit()
            if self._stopping():
                return False
            with self._cond:
                self._watchdog()
                if self._ready_to_emit():
                    continue
                if ready():
                    return True
                self._cond.wait(0.2)

    def _drain(self) -> None:
        """Wait for the frames in flight; after a stop, only for `stop_grace_s`, then fail the rest."""
        grace_until: float | None = None
        while True:
            self._emit()
            with self._cond:
                if not self._inflight and not self._ready_to_emit():
                    break
                if self._stopping() and grace_until is None:
                    grace_until = time.monotonic() + self.options.stop_grace_s
                    if self.stats.stopped is None:
                        self.stats.stopped = "interrupted"
                if grace_until is not None and time.monotonic() > grace_until:
                    self._abandon_stream("run stopped before the answer came")
                    continue
                self._watchdog()
                if not self._ready_to_emit():
                    self._cond.wait(0.2)
        if self.stop_event.is_set() and self.stats.stopped is None:
            self.stats.stopped = "interrupted"

"""Video in and out: frame sources (files, cameras, stream URLs), the JPEG sent per frame, and sinks.

- `Source`: an iterable of BGR frames plus whether it is live (`open_source`
  wraps `cv2.VideoCapture` for files, camera indices and stream URLs; `is_live`
  guesses from the location, `source_name` names it for logs and folders).
- `encode_jpeg`: the bytes sent for a frame, deterministic so tests rebuild them.
- `FrameResult`: one sent frame's outcome, as a `Sink` receives it in frame order.
- `FileSink` writes `annotated.mp4` (mp4v, frames drawn by `draw`) and
  `frame_counts.jsonl`, and closes both on any exit, so a stopped run leaves
  playable files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import cv2
import numpy as np

from pipelines import spec
from tools.client.draw import band_size, draw_persons, put_label
from tools.client.people import UNDETERMINED_LABEL, Person, gender_counts

DEFAULT_JPEG_QUALITY = 90
DEFAULT_FPS = 25.0  # the annotated video's rate (and a file's timestamps) when the source does not say
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtp", "udp", "tcp", "srt", "http", "https")


def encode_jpeg(image: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """The bytes sent for a frame; the same pixels and quality give the same bytes, so tests can rebuild them."""
    if image is None or image.size == 0:
        raise ValueError("empty frame")
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


# --- Sources ---------------------------------------------------------------------


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


def open_source(location: str, live: bool | None = None, name: str | None = None) -> Source:
    """A file, camera index or stream URL read with OpenCV (its bundled FFmpeg); `live=None` guesses; `name`
    (default `source_name`) names it in logs and, to a tier that tracks, is its camera id."""
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
        name=name or source_name(location),
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
    last: bool = False  # no frame follows it (a file's last frame): it ends the camera's sequence
    sequence: int | None = None  # a tier that tracks: the index of the frame that started this frame's sequence

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def finished(self) -> bool:
        """It has its outcome: persons, or an error (one that failed before it was sent has one already)."""
        return self.persons is not None or self.error is not None

    def gender_counts(self) -> dict[str, int]:
        return gender_counts(p.gender for p in self.persons or ())

    def record(self) -> dict[str, Any]:
        """The frame's line in frame_counts.jsonl."""
        line: dict[str, Any] = {"frame": self.index, "timestamp": _round(self.timestamp, 3)}
        if self.sequence is not None:
            line["sequence"] = self.sequence
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


def draw(result: FrameResult) -> np.ndarray:
    """The frame with its persons drawn under a band with the index and the persons by the gender their labels
    show (a red band with the error for a failed frame)."""
    assert result.image is not None
    image = result.image.copy()
    persons = result.persons or ()
    draw_persons(image, persons)
    if result.ok:
        g = gender_counts(p.shown_gender[0] for p in persons)
        female, male = (g[label] for label in spec.GENDER_LABELS)
        text = f"#{result.index} persons {len(persons)}  F {female}  M {male}  ? {g[UNDETERMINED_LABEL]}"
        band = (40, 40, 40)
    else:
        text = f"#{result.index} error: {result.error}"[:80]
        band = (0, 0, 200)
    cv2.rectangle(image, (0, 0), (image.shape[1], band_size(image, text)[1]), band, -1)
    put_label(image, text, (0, 0), band)
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

"""Publish frames to a Redis stream, as a camera ingestor would: one entry per frame, capped with MAXLEN.

    python -m tools.bridge.publish input.mp4 --camera door-1 --stream frames --maxlen 1000
    python -m tools.bridge.publish rtsp://camera/stream --camera lobby --fps 5
    python -m tools.bridge.publish bus.jpg zidane.jpg --camera demo --repeat 10

SOURCE is what `python -m tools.client.video` reads (a video file, a camera index, a stream URL), or
image files, sent as they are. Each entry has `jpeg`, `camera` and `ts` (capture time), plus the
thresholds given. MAXLEN is exact: the stream never holds more than N frames, and a slow consumer
loses the oldest ones, never the newest. Prints one JSON summary line; Ctrl-C stops after the current frame.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tools.bridge.options import DEFAULT_REDIS
from tools.bridge.redis_in import connect
from tools.client.options import add_thresholds, thresholds
from tools.client.video.media import DEFAULT_JPEG_QUALITY, encode_jpeg, open_source, source_name

log = logging.getLogger("bridge.publish")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_image(location: str) -> bool:
    return Path(location).suffix.lower() in IMAGE_SUFFIXES


def jpegs(locations: list[str], quality: int = DEFAULT_JPEG_QUALITY, repeat: int = 1) -> Iterator[bytes]:
    """Encoded frames in order: image files as they are, each frame of a video source encoded."""
    for _ in range(repeat):
        for location in locations:
            if is_image(location):
                yield Path(location).read_bytes()
                continue
            source = open_source(location)
            try:
                for image in source.frames:
                    yield encode_jpeg(image, quality)
            finally:
                if source.release:
                    source.release()


def fields(jpeg: bytes, camera: str, thresholds: dict[str, float | None]) -> dict[str, bytes | str]:
    """One entry: the image, its camera, its capture time and the thresholds that were given."""
    entry: dict[str, bytes | str] = {"jpeg": jpeg, "camera": camera, "ts": f"{time.time():.6f}"}
    entry.update({name: repr(value) for name, value in thresholds.items() if value is not None})
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bridge.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="video file, camera index, stream URL or images")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help=f"Redis URL (default {DEFAULT_REDIS})")
    parser.add_argument("--stream", default="frames", help="the stream (default frames)")
    parser.add_argument("--camera", help="the camera field (default: the first source's name)")
    parser.add_argument("--maxlen", type=int, default=1000, metavar="N", help="cap of the stream (default 1000)")
    parser.add_argument("--fps", type=float, help="at most this many frames per second (default: as read)")
    parser.add_argument("--limit", type=int, help="stop after this many frames")
    parser.add_argument("--repeat", type=int, default=1, help="go through the sources this many times")
    parser.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, help="for video frames, 1-100")
    add_thresholds(parser, ", sent with every frame")
    args = parser.parse_args(argv)
    if args.maxlen < 1 or args.repeat < 1 or not 1 <= args.jpeg_quality <= 100:
        parser.error("--maxlen and --repeat must be at least 1, --jpeg-quality within 1-100")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    camera = args.camera or source_name(args.sources[0])
    given = thresholds(args)
    client = connect(args.redis)
    published, first, last, interrupted = 0, None, None, False
    period = 1 / args.fps if args.fps else 0.0
    next_at = time.monotonic()
    try:
        for jpeg in jpegs(args.sources, args.jpeg_quality, args.repeat):
            if args.limit is not None and published >= args.limit:
                break
            if period:
                time.sleep(max(next_at - time.monotonic(), 0))
                next_at = max(next_at + period, time.monotonic())
            last = client.xadd(args.stream, fields(jpeg, camera, given), maxlen=args.maxlen,
                               approximate=False).decode()  # fmt: skip
            first = first or last
            published += 1
    except KeyboardInterrupt:
        interrupted = True
    except (OSError, redis.RedisError) as e:
        log.error("%s", e)
        print(json.dumps({"stream": args.stream, "camera": camera, "published": published, "error": str(e)}))
        return 1
    print(json.dumps({"stream": args.stream, "camera": camera, "published": published, "first_id": first,
                      "last_id": last}), flush=True)  # fmt: skip
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())

"""One command to see the bridge work against a running server (`make serve`): nothing else to install or start.

    python -m tools.bridge.demo                      # the sample images, 3 cameras x 4 frames
    python -m tools.bridge.demo --url 127.0.0.1:8001 --tier balanced my.jpg

Starts a local Redis and a Tansu broker (local.py) in a temporary folder, a bridge, publishes the
images as frames of a few cameras, prints every event (one JSON line each) and stops everything.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import threading
from pathlib import Path

from pipelines import spec
from tools.bridge.events import consumer, events
from tools.bridge.local import LocalBroker, LocalRedis
from tools.bridge.options import Options
from tools.bridge.pipeline import Bridge
from tools.bridge.publish import fields
from tools.bridge.redis_in import connect

log = logging.getLogger("bridge.demo")


def sample_images() -> list[Path]:
    """The two photos the ultralytics wheel ships (found without importing it: that takes seconds)."""
    found = importlib.util.find_spec("ultralytics")
    assert found is not None and found.origin, "ultralytics is not installed (make setup)"
    return [Path(found.origin).parent / "assets" / name for name in ("bus.jpg", "zidane.jpg")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bridge.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("images", nargs="*", type=Path, help="JPEG or PNG files (default: the sample photos)")
    parser.add_argument("--url", default=Options.url, help=f"the server's gRPC address (default {Options.url})")
    parser.add_argument("--tier", choices=spec.TIER_NAMES, default=Options.tier)
    parser.add_argument("--api-key", help="the key given to `make serve API_KEY=...`")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4, help="per camera")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    images = [p.read_bytes() for p in args.images or sample_images()]
    total = args.cameras * args.frames
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as tmp, LocalRedis(Path(tmp)) as r, \
            LocalBroker(Path(tmp)) as k:  # fmt: skip
        options = Options(redis=r.url, kafka=k.address, url=args.url, tier=args.tier, api_key=args.api_key,
                          metrics_port=0)  # fmt: skip
        bridge = Bridge(options)
        running = threading.Thread(target=bridge.run, name="bridge", daemon=True)
        running.start()
        client = connect(r.url)
        for n in range(args.frames):
            for c in range(args.cameras):
                client.xadd("frames", fields(images[(n + c) % len(images)], f"camera-{c}", {}), maxlen=1000)
        log.info("published %d frames from %d cameras to stream frames at %s; events from %s:", total,
                 args.cameras, r.url, k.address)  # fmt: skip
        reader = consumer(k.address, options.topic)
        seen = 0
        try:
            for _, event in events(reader, idle_s=60):
                print(json.dumps(event), flush=True)
                seen += 1
                if seen == total:
                    break
        finally:
            reader.close()
            bridge.stop.asked.set()
            running.join(options.stop_timeout_s + 5)
    if seen < total:
        log.error("only %d of %d events within a minute: is the server up at %s?", seen, total, args.url)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m tools.bridge`: Redis Streams -> a tier -> Kafka (options: options.py; docs/camera-fleets.md)."""

from __future__ import annotations

import logging
import sys

from tools.bridge.metrics import Metrics
from tools.bridge.options import parse
from tools.bridge.pipeline import Bridge
from tools.server.serve import StopRequest

log = logging.getLogger("bridge")


def main(argv: list[str] | None = None) -> int:
    options, args = parse(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s: %(message)s")
    metrics = Metrics(options.max_inflight)
    if options.metrics_port:
        metrics.serve(options.metrics_port, options.metrics_address)
        log.info("metrics on http://%s:%d/metrics", options.metrics_address, options.metrics_port)
    stop = StopRequest()
    stop.install()
    return Bridge(options, metrics).run(stop)


if __name__ == "__main__":
    sys.exit(main())

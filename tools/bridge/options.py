"""Every option of `python -m tools.bridge`, its default and why; the one place they are defined."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import spec

DEFAULT_REDIS = "redis://127.0.0.1:6379"
DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_METRICS_PORT = 9108
# What the guarantees rest on; --kafka-config may add to these, never change them.
REQUIRED_KAFKA = {"enable.idempotence": "true", "acks": "all"}
KAFKA_DEFAULTS = {
    # Java clients' partitioner: a camera lands in the partition a Java producer would choose.
    # (librdkafka's default, CRC32, put cam0, cam1 and cam2 all in partition 1 of 3.)
    "partitioner": "murmur2_random",
    "linger.ms": "1",  # events are small and latency counts; 1 ms still batches a burst
    # A delivery not confirmed by then is reported failed; the bridge produces it again (it stays pending).
    "message.timeout.ms": "30000",
    "reconnect.backoff.max.ms": "2000",
}


def default_consumer() -> str:
    """Host name and pid: a pod's name in Kubernetes, so a restarted container finds its own pending entries."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Options:
    redis: str = DEFAULT_REDIS
    streams: tuple[str, ...] = ("frames",)
    group: str = "people"
    consumer: str = field(default_factory=default_consumer)
    start_id: str = "0"  # where a group the bridge creates starts: 0 = the whole stream, $ = new entries only
    kafka: str = DEFAULT_KAFKA
    topic: str = "people.detections"
    kafka_config: dict[str, str] = field(default_factory=dict)
    url: str = f"{spec.HOST}:{spec.GRPC_PORT}"
    tier: str = "streaming"  # keeps request order; the bridge reorders per camera anyway
    api_key: str | None = None
    max_inflight: int = 4  # entries held (read, not yet acknowledged); keep within the tier's queue
    request_timeout_s: float = 30.0
    claim_idle_s: float = 30.0  # a peer's entry idle this long is taken over (its bridge died)
    claim_interval_s: float = 5.0
    max_deliveries: int = 5  # deliveries (or failed attempts) after which an entry is dead-lettered
    dead_letter: str = "{stream}:dead"
    dead_letter_maxlen: int = 10000
    max_bytes: int = spec.MAX_IMAGE_BYTES
    block_ms: int = 500  # XREADGROUP BLOCK: how soon a stop or a free slot is noticed while idle
    backoff_s: tuple[float, float] = (0.25, 5.0)  # first and longest wait between retries
    stop_timeout_s: float = 30.0
    lag_interval_s: float = 5.0
    metrics_port: int = DEFAULT_METRICS_PORT  # 0: no metrics endpoint
    metrics_address: str = "127.0.0.1"

    def producer_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.kafka, **KAFKA_DEFAULTS, **self.kafka_config, **REQUIRED_KAFKA}

    def dead_letter_stream(self, stream: str) -> str:
        return self.dead_letter.format(stream=stream)


def _properties(text: str) -> list[tuple[str, str]]:
    """librdkafka's properties-file form: key=value lines, blank lines and # comments ignored."""
    return [_key_value(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where there is none to show or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, [], False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    d = Options(consumer="")
    p = argparse.ArgumentParser(
        prog="python -m tools.bridge",
        description="Frames from Redis Streams through a tier to detection events on Kafka; an entry is "
        "acknowledged only after Kafka confirmed its event. See docs/camera-fleets.md.",
        formatter_class=_Help,
    )
    a = p.add_argument
    a("--redis", default=d.redis, help="redis:// or rediss:// URL; a password goes in it (redis://:PASS@host:6379/0)")
    a("--redis-file", type=Path, metavar="PATH",
      help="read the Redis URL from this file instead (a mounted Secret: no password on the command line)")  # fmt: skip
    a("--stream", dest="streams", action="append", metavar="NAME", help="stream to read (repeatable; default frames)")
    a("--group", default=d.group, help="consumer group (created with the stream when missing)")
    a("--consumer", help="this bridge's name in the group (default: host name and pid)")
    a("--start-id", default=d.start_id, help="where a group the bridge creates starts: 0 whole stream, $ new only")
    a("--kafka", default=d.kafka, metavar="HOST:PORT", help="bootstrap servers (comma-separated)")
    a("--topic", default=d.topic, help="topic of the events (key = camera)")
    a("--kafka-config", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
      help="librdkafka setting (repeatable): security.protocol, sasl.*, ssl.*, ...")  # fmt: skip
    a("--kafka-config-file", type=Path, metavar="PATH",
      help="librdkafka settings, one key=value a line (# comments); --kafka-config ones win")  # fmt: skip
    a("--url", default=d.url, help="the server's gRPC address")
    a("--tier", choices=spec.TIER_NAMES, default=d.tier)
    a("--api-key", help="the key given to `make serve API_KEY=...`")
    a("--max-inflight", type=int, default=d.max_inflight, metavar="N", help="entries held at once (read, not acked)")
    a("--request-timeout", type=float, default=d.request_timeout_s, metavar="S", help="seconds per request")
    a("--claim-idle", type=float, default=d.claim_idle_s, metavar="S",
      help="take over a peer's pending entry idle this long (its bridge died)")  # fmt: skip
    a("--claim-interval", type=float, default=d.claim_interval_s, metavar="S", help="how often to look for them")
    a("--max-deliveries", type=int, default=d.max_deliveries, metavar="N",
      help="an entry delivered or failed this often goes to the dead-letter stream")  # fmt: skip
    a("--dead-letter", default=d.dead_letter, metavar="FORMAT", help="dead-letter stream; {stream} is the source")
    a("--dead-letter-maxlen", type=int, default=d.dead_letter_maxlen, metavar="N", help="approximate cap")
    a("--max-bytes", type=int, default=d.max_bytes, metavar="N", help="larger jpeg fields are refused")
    a("--stop-timeout", type=float, default=d.stop_timeout_s, metavar="S",
      help="on SIGTERM/Ctrl-C, how long to finish what is held")  # fmt: skip
    a("--metrics-port", type=int, default=d.metrics_port, help="Prometheus /metrics port (0: none)")
    a("--metrics-address", default=d.metrics_address, help="address of the metrics endpoint (0.0.0.0 in a pod)")
    a("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def parse(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    p = parser()
    args = p.parse_args(argv)
    if args.max_inflight < 1 or args.max_deliveries < 1:
        p.error("--max-inflight and --max-deliveries must be at least 1")
    if args.claim_idle <= 0 or args.claim_interval <= 0 or args.request_timeout <= 0:
        p.error("--claim-idle, --claim-interval and --request-timeout must be positive")
    try:
        redis_url = args.redis_file.read_text().strip() if args.redis_file else args.redis
        kafka_config = dict(_properties(args.kafka_config_file.read_text())) if args.kafka_config_file else {}
    except (OSError, argparse.ArgumentTypeError) as e:
        p.error(str(e))
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        shown = "the URL in --redis-file" if args.redis_file else repr(redis_url)
        p.error(f"--redis must be a redis://, rediss:// or unix:// URL, not {shown}")
    kafka_config.update(args.kafka_config)
    for key, value in kafka_config.items():
        if key in REQUIRED_KAFKA and value.lower() != REQUIRED_KAFKA[key]:
            p.error(f"--kafka-config {key}={value}: the bridge needs {key}={REQUIRED_KAFKA[key]} (nothing lost)")
        if key == "bootstrap.servers":
            p.error("give the brokers with --kafka")
    options = Options(
        redis=redis_url,
        streams=tuple(dict.fromkeys(args.streams or Options.streams)),
        group=args.group,
        consumer=args.consumer or default_consumer(),
        start_id=args.start_id,
        kafka=args.kafka,
        topic=args.topic,
        kafka_config=kafka_config,
        url=args.url,
        tier=args.tier,
        api_key=args.api_key,
        max_inflight=args.max_inflight,
        request_timeout_s=args.request_timeout,
        claim_idle_s=args.claim_idle,
        claim_interval_s=args.claim_interval,
        max_deliveries=args.max_deliveries,
        dead_letter=args.dead_letter,
        dead_letter_maxlen=args.dead_letter_maxlen,
        max_bytes=args.max_bytes,
        stop_timeout_s=args.stop_timeout,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
    )
    return options, args

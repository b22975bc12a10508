"""Read the events off the topic: `python -m tools.bridge.events` prints them, one JSON line each.

It reads every partition by assignment, from the beginning (or only new events with `--new`), without
joining a consumer group: nothing is committed, so it never takes events from a real consumer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from tools.bridge.options import DEFAULT_KAFKA, Options


def consumer(kafka: str, topic: str, new_only: bool = False, config: dict[str, str] | None = None,
             timeout_s: float = 30) -> Consumer:  # fmt: skip
    """A consumer assigned every partition of `topic` (waits up to `timeout_s` for the topic to exist)."""
    c = Consumer({"bootstrap.servers": kafka, "group.id": "tools.bridge.events", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10, **(config or {})})  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            partitions = c.list_topics(topic, timeout=5).topics[topic].partitions
        except KafkaException:
            partitions = {}
        if partitions:
            break
        if time.monotonic() > deadline:
            c.close()
            raise TimeoutError(f"topic {topic} not found at {kafka} within {timeout_s:g} s")
        time.sleep(0.2)
    start = OFFSET_END if new_only else OFFSET_BEGINNING
    c.assign([TopicPartition(topic, p, start) for p in sorted(partitions)])
    return c


def events(c: Consumer, idle_s: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, event) as they arrive; ends after `idle_s` without one (None: never)."""
    last = time.monotonic()
    while idle_s is None or time.monotonic() - last < idle_s:
        message = c.poll(0.2)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        last = time.monotonic()
        yield (message.key() or b"").decode(), json.loads(message.value())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bridge.events", description=__doc__)
    parser.add_argument("--kafka", default=DEFAULT_KAFKA, metavar="HOST:PORT", help=f"default {DEFAULT_KAFKA}")
    parser.add_argument("--topic", default=Options.topic, help=f"default {Options.topic}")
    parser.add_argument("--new", action="store_true", help="only events produced from now on")
    parser.add_argument("--idle", type=float, help="stop after this many seconds without an event")
    args = parser.parse_args(argv)
    c = consumer(args.kafka, args.topic, args.new)
    try:
        for _, value in events(c, args.idle):
            print(json.dumps(value), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The idempotent producer (acks=all): an event counts as delivered only when its delivery report says so.

librdkafka retries on its own inside `message.timeout.ms`; past that, or after a fatal error, the
delivery report fails and the pipeline produces the event again (its entry stays pending meanwhile).
A fatal error (seen here: UNKNOWN_PRODUCER_ID after a broker restart lost its state) leaves the
producer unusable, so it is replaced; the messages it still held are purged and reported failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from tools.bridge.options import Options

log = logging.getLogger("bridge.kafka")

Delivered = Callable[[KafkaError | None], None]


class KafkaOut:
    def __init__(self, options: Options):
        self.options = options
        self._lock = threading.Lock()
        self._fatal: KafkaError | None = None
        self.producer = self._new()

    def _new(self) -> Producer:
        # librdkafka's own log lines go through `logging` (else they are printed to stderr).
        config: dict[str, object] = {**self.options.producer_config(), "error_cb": self._on_error, "logger": log}
        return Producer(config)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("producer failed for good (%s): a new one takes over", error.str())
            self._fatal = error
        elif error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            log.warning("Kafka: %s", error.str())

    def produce(self, key: str, value: bytes, delivered: Delivered) -> None:
        """Queue one event; `delivered(None)` or `delivered(error)` comes from `poll` (raises KafkaException)."""

        def report(error: KafkaError | None, _message: Message) -> None:
            delivered(error)

        with self._lock:
            self.producer.produce(self.options.topic, key=key.encode(), value=value, on_delivery=report)

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports; replace the producer after a fatal error."""
        self.producer.poll(timeout_s)
        if self._fatal is not None:
            with self._lock:
                old, self.producer, self._fatal = self.producer, self._new(), None
            old.purge()  # what it still held is reported failed, and produced again by the pipeline
            old.poll(0)
            old.flush(0)

    def flush(self, timeout_s: float) -> int:
        """Wait for delivery reports; returns how many messages are still undelivered."""
        return self.producer.flush(timeout_s)

    def queued(self) -> int:
        return len(self.producer)

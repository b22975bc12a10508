"""Prometheus metrics of one bridge (served on --metrics-port): what came in, what went out, what failed.

Names are `bridge_*`. Each bridge has its own registry, so tests can run several in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# End-to-end latency (capture or entry time -> Kafka's confirmation): 5 ms to 2 minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, max_inflight: int) -> None:
        self.registry = r = CollectorRegistry()
        self.read = Counter("bridge_entries_read", "Entries taken from Redis, by stream and how: new, "
                            "pending (this consumer's own, after a restart) or claimed (from a peer)",
                            ["stream", "how"], registry=r)  # fmt: skip
        self.produced = Counter("bridge_events_produced", "Events Kafka confirmed, by outcome (ok or error)",
                                ["outcome"], registry=r)  # fmt: skip
        self.acked = Counter("bridge_entries_acked", "Entries acknowledged (XACK) after their event", registry=r)
        self.errors = Counter("bridge_errors", "Failures by kind: invalid_entry, invalid_argument, "
                              "triton_unavailable, triton_failed, sequence_restart, kafka_delivery, redis, "
                              "trimmed", ["kind"], registry=r)  # fmt: skip
        self.sequence_starts = Counter("bridge_sequence_starts", "Frames sent with sequence_start (a tier that "
                                       "tracks): each camera's first, and each start again", registry=r)  # fmt: skip
        self.retries = Counter("bridge_retries", "Retries by what was retried: triton, kafka, redis",
                               ["target"], registry=r)  # fmt: skip
        self.reclaimed = Counter("bridge_reclaimed", "Entries taken over from an idle peer (XAUTOCLAIM)",
                                 ["stream"], registry=r)  # fmt: skip
        self.dead_letters = Counter("bridge_dead_letters", "Entries moved to the dead-letter stream",
                                    ["stream"], registry=r)  # fmt: skip
        self.inflight = Gauge("bridge_inflight", "Entries held: read and not yet acknowledged", registry=r)
        self.inflight_peak = Gauge("bridge_inflight_peak", "The most entries held at once so far", registry=r)
        self.max_inflight = Gauge("bridge_max_inflight", "The limit (--max-inflight)", registry=r)
        self.max_inflight.set(max_inflight)
        self.lag = Gauge("bridge_group_lag", "Entries of the stream the group has not read yet (Redis 7 lag)",
                         ["stream"], registry=r)  # fmt: skip
        self.pending = Gauge("bridge_group_pending", "Entries read by the group and not yet acknowledged",
                             ["stream"], registry=r)  # fmt: skip
        self.latency = Histogram("bridge_latency_seconds", "Capture time (ts, else the entry's time) to "
                                 "Kafka's confirmation of the event", buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip

        self._peak = 0

    def held(self, count: int) -> None:
        self.inflight.set(count)
        if count > self._peak:
            self._peak = count
            self.inflight_peak.set(count)

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, address, registry=self.registry)

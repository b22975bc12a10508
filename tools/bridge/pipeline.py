"""The bridge's loop: slots, order per camera, retries with backoff, acknowledgement after delivery, the stop.

An entry holds one of `max_inflight` slots from the moment it is read until XACK, whatever happens in
between, so memory is bounded and a read asks only for free slots. Its life:

    read/claimed -> sent to the tier -> event built -> its turn in its camera's order -> produced
    -> Kafka confirmed -> acknowledged (or moved to the dead-letter stream) -> slot free

A retry (server down or overloaded, Kafka failed a delivery, Redis unreachable) waits with backoff
and keeps the entry pending; while any entry waits for one, no new entry is read. With a tier that
tracks, each camera is a Triton sequence (tools/client/sequence.py) and its frames go to the server
one at a time, in read order: the next waits (`QUEUED`) until the one before has its event, retries
included, so the tracker sees them in order whatever fails. Threads: the
caller's runs `run` (reads, claims, refreshes what it holds); tritonclient's delivers answers; one
poller serves Kafka's delivery reports, the retry timers and the acknowledgements.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import redis
from confluent_kafka import KafkaError, KafkaException

from pipelines import spec
from tools.bridge import event
from tools.bridge.entry import BadEntry, Entry, Frame, capture_ts, frame
from tools.bridge.inference import Inference, Outcome, classify, code_of, message_of
from tools.bridge.kafka_out import KafkaOut
from tools.bridge.metrics import Metrics
from tools.bridge.options import Options
from tools.bridge.redis_in import RedisIn
from tools.client.sequence import CameraSequence, Flags
from tools.server.serve import StopRequest

log = logging.getLogger("bridge")

DEAD_LETTER = "DEAD_LETTER"
INVALID_ARGUMENT = "INVALID_ARGUMENT"


class State(str, Enum):
    QUEUED = "queued"  # a tier that tracks: waiting for the frame of its camera before it
    SENDING = "sending"
    WAITING = "waiting"  # for a retry
    READY = "ready"  # event built, waiting for its turn in its camera's order
    PRODUCING = "producing"
    DELIVERED = "delivered"  # Kafka confirmed; acknowledgement next


@dataclass(eq=False)
class Item:
    entry: Entry
    camera: str
    ts: float | None
    state: State = State.SENDING
    frame: Frame | None = None
    event: bytes | None = None
    outcome: str = "ok"
    dead_reason: str | None = None
    failures: int = 0
    backoff_s: float = 0.0
    flags: Flags | None = None  # a tier that tracks: the sequence flags it was last sent with


@dataclass
class Outage:
    """Logs the first failure and the recovery of a dependency, not every retry."""

    name: str
    since: float | None = None

    def failed(self, why: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s: %s; retrying with backoff, entries stay pending, reading paused", self.name, why)

    def recovered(self) -> None:
        if self.since is not None:
            log.info("%s back after %.1f s", self.name, time.monotonic() - self.since)
            self.since = None


class Bridge:
    def __init__(self, options: Options, metrics: Metrics | None = None, redis_in: RedisIn | None = None,
                 kafka: KafkaOut | None = None, inference: Inference | None = None):  # fmt: skip
        self.options = options
        self.metrics = metrics or Metrics(options.max_inflight)
        self.redis = redis_in or RedisIn(options)
        self.kafka = kafka or KafkaOut(options)
        self.inference = inference or Inference(options)
        self.held: dict[str, Item] = {}
        self.order: dict[str, deque[Item]] = {}
        self.waiting = 0
        self.to_ack: list[Item] = []
        self.lock = threading.Condition(threading.RLock())
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._tick = itertools.count()
        self.outages = {name: Outage(name) for name in ("Triton", "Kafka", "Redis")}
        self.tracks = spec.tier(options.tier).tracks
        self.sequences: dict[str, CameraSequence] = {}  # a tier that tracks: each camera's sequence
        self.at_server: dict[str, Item] = {}  # a tier that tracks: each camera's frame being sent
        self.stop = StopRequest()  # `asked`: finish what is held; `now`: leave it pending for peers
        self.finished = threading.Event()

    # --- the caller's thread ---------------------------------------------------------------

    def run(self, stop: StopRequest | None = None) -> int:
        """Until a stop is asked; returns 0 when everything read was acknowledged, 1 when some stays pending."""
        self.stop = stop or self.stop
        o = self.options
        self._redis_retrying(self.redis.ensure_groups)
        poller = threading.Thread(target=self._poll, name="bridge-poller", daemon=True)
        poller.start()
        log.info("reading %s (group %s, consumer %s) -> %s tier at %s -> topic %s at %s; up to %d in flight",
                 ",".join(o.streams), o.group, o.consumer, o.tier, o.url, o.topic, o.kafka, o.max_inflight)
        now = time.monotonic()
        due = {"claim": now, "refresh": now + o.claim_idle_s / 3, "lag": now}
        while not self.stop.asked.is_set():
            try:
                self._periodic(due)
                free = self._wait_for_room(until=min(due.values()))
                if free:
                    for e in self.redis.read(free, o.block_ms):
                        self.admit(e, "pending" if e.deliveries > 1 else "new")
                self.outages["Redis"].recovered()
            except redis.RedisError as e:
                self._redis_failed(e)
                self.stop.asked.wait(o.backoff_s[1])
        return self._finish()

    def _periodic(self, due: dict[str, float]) -> None:
        o, now = self.options, time.monotonic()
        if now >= due["refresh"]:
            due["refresh"] = now + o.claim_idle_s / 3
            with self.lock:
                held = [i.entry for i in self.held.values()]
            if held:
                self.redis.refresh(held)
        if now >= due["lag"]:
            due["lag"] = now + o.lag_interval_s
            for stream, (lag, pending) in self.redis.lag().items():
                if lag is not None:
                    self.metrics.lag.labels(stream).set(lag)
                self.metrics.pending.labels(stream).set(pending)
        if now >= due["claim"]:
            due["claim"] = now + o.claim_interval_s
            free = self._free()
            if free:
                for e in self.redis.claim(free):
                    self.metrics.reclaimed.labels(e.stream).inc()
                    self.admit(e, "claimed")
        trimmed, self.redis.trimmed = self.redis.trimmed, 0
        if trimmed:
            self.metrics.errors.labels("trimmed").inc(trimmed)

    def _free(self) -> int:
        with self.lock:
            return 0 if self.waiting else self.options.max_inflight - len(self.held)

    def _wait_for_room(self, until: float) -> int:
        """Free slots, once there are some and no entry waits for a retry (or 0 at `until` or a stop)."""
        with self.lock:
            while not self.stop.asked.is_set():
                free = self._free()
                if free > 0:
                    return free
                left = until - time.monotonic()
                if left <= 0:
                    return 0
                self.lock.wait(min(left, 0.5))
        return 0

    def _finish(self) -> int:
        deadline = time.monotonic() + self.options.stop_timeout_s
        with self.lock:
            if self.held:
                log.info("stopping: finishing %d entr(ies) held", len(self.held))
            while self.held and not self.stop.now.is_set() and time.monotonic() < deadline:
                self.lock.wait(0.1)
            left = len(self.held)
        self.finished.set()  # the poller ends; what is still held stays pending
        if not left:
            self.kafka.flush(1.0)
        self.inference.close()
        self.redis.close()
        if left:
            log.warning("stopped with %d entr(ies) pending: a peer or a restart takes them over", left)
            return 1
        log.info("stopped cleanly: everything read was acknowledged")
        return 0

    # --- an entry's way through -----------------------------------------------------------

    def admit(self, entry: Entry, how: str) -> None:
        with self.lock:
            if entry.event_id in self.held:
                return  # already ours (a claim raced our own refresh)
            item = Item(entry, entry.camera, capture_ts(entry))
            self.held[entry.event_id] = item
            self.order.setdefault(item.camera, deque()).append(item)
            self.metrics.read.labels(entry.stream, how).inc()
            self.metrics.held(len(self.held))
            if entry.deliveries > self.options.max_deliveries:
                reason = f"delivered {entry.deliveries} times without an event (bridges holding it died or stopped)"
                self._dead(item, reason)
                return
            try:
                item.frame = frame(entry, self.options.max_bytes)
            except BadEntry as e:
                self.metrics.errors.labels("invalid_entry").inc()
                self._built(item, error=(INVALID_ARGUMENT, str(e)))
                return
            if self.tracks:
                if item.camera in self.at_server:
                    item.state = State.QUEUED
                    return
                self.at_server[item.camera] = item
        self._send(item)

    def _send(self, item: Item) -> None:
        if self.finished.is_set():
            return
        item.state = State.SENDING
        assert item.frame is not None
        if self.tracks:
            sequence = self.sequences.setdefault(item.camera, CameraSequence(item.camera))
            item.flags = sequence.next(item.entry.event_id, taken=item.entry.order)
            if item.flags.start:
                self.metrics.sequence_starts.inc()
        self.inference.send(item.frame, item.flags, lambda out, error: self._answered(item, out, error))

    def _next_of_camera(self, item: Item) -> Item | None:
        """A tier that tracks: `item` has its event, so its camera's next frame goes (call with the lock held)."""
        if self.at_server.get(item.camera) is not item:
            return None  # never sent: a bad entry, a dead letter
        del self.at_server[item.camera]
        following = next((i for i in self.order[item.camera] if i.state is State.QUEUED), None)
        if following is not None:
            self.at_server[item.camera] = following
        return following

    def _answered(self, item: Item, out: dict[str, np.ndarray] | None, error: Exception | None) -> None:
        if error is None:
            assert out is not None
            self.outages["Triton"].recovered()
            self._built(item, found=event.persons(out))
            return
        code, message = code_of(error), message_of(error)
        outcome = classify(error)
        if item.flags is not None:
            self.sequences[item.camera].refused(item.flags, message)
            if outcome is Outcome.RESTART and item.flags.start:
                outcome = Outcome.FAIL  # it did start the sequence: asking again explains nothing
        if outcome is Outcome.RESTART:
            self.metrics.errors.labels("sequence_restart").inc()
            log.info("%s: %s; its camera's sequence starts again", item.entry.event_id, message[:200])
            self._send(item)
        elif outcome is Outcome.BAD:
            self.metrics.errors.labels("invalid_argument").inc()
            self._built(item, error=(code, message))
        elif outcome is Outcome.RETRY:
            self.metrics.errors.labels("triton_unavailable").inc()
            self.metrics.retries.labels("triton").inc()
            self.outages["Triton"].failed(f"{code}: {message[:200]}")
            if code in ("UNAVAILABLE", "CANCELLED"):
                self.inference.reconnect()
            self._retry(item, self._send)
        else:
            self.metrics.errors.labels("triton_failed").inc()
            item.failures += 1
            log.warning("%s failed (%d): %s: %s", item.entry.event_id, item.failures, code, message[:200])
            if item.entry.deliveries + item.failures > self.options.max_deliveries:
                self._dead(item, f"failed {item.failures} times, last: {code}: {message}")
            else:
                self.metrics.retries.labels("triton").inc()
                self._retry(item, self._send)

    def _dead(self, item: Item, reason: str) -> None:
        """An error event now; the entry goes to the dead-letter stream once Kafka confirmed it."""
        item.dead_reason = reason
        self._built(item, error=(DEAD_LETTER, reason))

    def _built(self, item: Item, found: list[dict] | None = None, error: tuple[str, str] | None = None) -> None:
        sequence = None if item.flags is None else str(item.flags.sequence)
        value = event.build(item.entry, item.camera, item.ts, self.options.tier, found, error, sequence)
        with self.lock:
            item.event = event.encode(value)
            item.outcome = "ok" if error is None else "error"
            item.state = State.READY
            following = self._next_of_camera(item) if self.tracks else None
            self._release(item.camera)
        if following is not None:
            self._send(following)

    def _release(self, camera: str) -> None:
        """Produce a camera's ready events in read order: one still in the works holds back the later ones."""
        queue = self.order[camera]
        while queue and queue[0].state is State.READY:
            self._produce(queue.popleft())
        if not queue:
            del self.order[camera]

    def _produce(self, item: Item) -> None:
        if self.finished.is_set():
            return
        assert item.event is not None
        item.state = State.PRODUCING
        try:
            self.kafka.produce(item.camera, item.event, lambda error: self._delivered(item, error))
        except (BufferError, KafkaException) as e:
            self._delivered(item, e)

    def _delivered(self, item: Item, error: KafkaError | Exception | None) -> None:
        if error is not None:
            why = error.str() if isinstance(error, KafkaError) else str(error)
            self.metrics.errors.labels("kafka_delivery").inc()
            self.metrics.retries.labels("kafka").inc()
            self.outages["Kafka"].failed(why)
            self._retry(item, self._produce)
            return
        self.outages["Kafka"].recovered()
        with self.lock:
            item.state = State.DELIVERED
            self.to_ack.append(item)
        self.metrics.produced.labels(item.outcome).inc()
        start = item.entry.added_s if item.ts is None else item.ts
        self.metrics.latency.observe(max(time.time() - start, 0))

    def _retry(self, item: Item, action: Callable[[Item], None]) -> None:
        first, longest = self.options.backoff_s
        with self.lock:
            item.state = State.WAITING
            item.backoff_s = min(max(item.backoff_s * 2, first), longest)
            self.waiting += 1
            heapq.heappush(self.timers, (time.monotonic() + item.backoff_s, next(self._tick),
                                         lambda: self._resume(item, action)))  # fmt: skip

    def _resume(self, item: Item, action: Callable[[Item], None]) -> None:
        with self.lock:
            self.waiting -= 1
            self.lock.notify_all()
        action(item)

    # --- the poller thread -----------------------------------------------------------------

    def _poll(self) -> None:
        """Kafka's delivery reports, due retries and acknowledgements, until the run is over."""
        ack_after = 0.0
        while not self.finished.is_set():
            with self.lock:
                next_due = self.timers[0][0] if self.timers else float("inf")
            try:
                self.kafka.poll(min(max(next_due - time.monotonic(), 0), 0.05))
            except KafkaException as e:
                log.error("Kafka: %s", e)
            for action in self._due():
                action()
            if self.to_ack and time.monotonic() >= ack_after:
                try:
                    self._acknowledge()
                    self.outages["Redis"].recovered()
                except redis.RedisError as e:
                    self._redis_failed(e)
                    ack_after = time.monotonic() + self.options.backoff_s[0]

    def _due(self) -> list[Callable[[], None]]:
        now, due = time.monotonic(), []
        with self.lock:
            while self.timers and self.timers[0][0] <= now:
                due.append(heapq.heappop(self.timers)[2])
        return due

    def _acknowledge(self) -> None:
        """XACK delivered entries (dead letters: XADD to their stream and XACK at once); then free their slots."""
        with self.lock:
            batch, self.to_ack = self.to_ack, []
        done: list[Item] = []
        try:
            plain = [i for i in batch if i.dead_reason is None]
            self.redis.ack(i.entry for i in plain)
            done += plain
            for i in batch:
                if i.dead_reason is not None:
                    target = self.redis.dead_letter(i.entry, i.dead_reason)
                    self.metrics.dead_letters.labels(i.entry.stream).inc()
                    log.warning("%s moved to %s: %s", i.entry.event_id, target, i.dead_reason)
                    done.append(i)
        finally:
            with self.lock:
                self.to_ack = [i for i in batch if i not in done] + self.to_ack
                for i in done:
                    self.held.pop(i.entry.event_id, None)
                self.metrics.acked.inc(len(done))
                self.metrics.held(len(self.held))
                self.lock.notify_all()

    # --- Redis trouble -----------------------------------------------------------------------

    def _redis_failed(self, error: redis.RedisError) -> None:
        self.metrics.errors.labels("redis").inc()
        self.metrics.retries.labels("redis").inc()
        self.outages["Redis"].failed(str(error))

    def _redis_retrying(self, call: Callable[[], None]) -> None:
        while not self.stop.asked.is_set():
            try:
                call()
                return
            except redis.RedisError as e:
                self._redis_failed(e)
                self.stop.asked.wait(self.options.backoff_s[1])

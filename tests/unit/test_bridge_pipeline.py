"""The bridge's loop with stand-ins for Redis, Kafka and the server: what it promises, each forced to happen.

The server tests see these on the real components; here the order of answers, failed deliveries and
failed requests are chosen by the test, so each guarantee is exercised in its hardest case.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError
from tritonclient.utils import InferenceServerException

from tests.unit.test_bridge_options import outputs
from tools.bridge.entry import Entry, Frame
from tools.bridge.options import Options
from tools.bridge.pipeline import Bridge
from tools.client.sequence import Flags


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g}s waiting for {what}"
        time.sleep(0.005)


class FakeRedis:
    """Entries to hand out; records acks and dead letters."""

    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self.acked: list[str] = []
        self.dead: list[tuple[str, str]] = []
        self.trimmed = 0
        self.asked: list[int] = []

    def ensure_groups(self) -> None: ...

    def read(self, count: int, block_ms: int) -> list[Entry]:
        self.asked.append(count)
        taken, self.entries = self.entries[:count], self.entries[count:]
        if not taken:
            threading.Event().wait(block_ms / 1000)
        return taken

    def claim(self, count: int) -> list[Entry]:
        return []

    def refresh(self, entries: Any) -> None: ...

    def lag(self) -> dict[str, tuple[int | None, int]]:
        return {}

    def ack(self, entries: Any) -> None:
        self.acked += [e.event_id for e in entries]

    def dead_letter(self, entry: Entry, reason: str) -> str:
        self.dead.append((entry.event_id, reason))
        self.acked.append(entry.event_id)
        return "frames:dead"

    def close(self) -> None: ...


class FakeKafka:
    """Confirms (or fails, `failures` times) each produced event at the next poll."""

    def __init__(self, failures: int = 0):
        self.produced: list[tuple[str, dict[str, Any]]] = []
        self.reports: list[Callable[[KafkaError | None], None]] = []
        self.failures = failures
        self.lock = threading.Lock()

    def produce(self, key: str, value: bytes, delivered: Callable[[KafkaError | None], None]) -> None:
        with self.lock:
            self.produced.append((key, json.loads(value)))
            self.reports.append(delivered)

    def poll(self, timeout_s: float) -> None:
        with self.lock:
            reports, self.reports = self.reports, []
        for report in reports:
            if self.failures:
                self.failures -= 1
                report(KafkaError(KafkaError._MSG_TIMED_OUT))
            else:
                report(None)
        threading.Event().wait(timeout_s)

    def flush(self, timeout_s: float) -> int:
        return 0


class FakeInference:
    """Holds every request until the test answers it; `flags` are every request's sequence flags, in sent order."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Frame, Callable[[Any, Exception | None], None]]] = []
        self.flags: list[Flags | None] = []
        self.lock = threading.Lock()

    def send(self, frame: Frame, flags: Flags | None, done: Callable[[Any, Exception | None], None]) -> None:
        with self.lock:
            self.waiting.append((frame, done))
            self.flags.append(flags)

    def take(self) -> list[tuple[Frame, Callable[[Any, Exception | None], None]]]:
        with self.lock:
            taken, self.waiting = self.waiting, []
        return taken

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


def entries(n: int, cameras: int = 2) -> list[Entry]:
    return [Entry("frames", f"{1000 + i}-0", {b"jpeg": b"\xff\xd8\xff", b"camera": f"cam-{i % cameras}".encode()})
            for i in range(n)]  # fmt: skip


OK = outputs([[1, 2, 3, 4]], [[0, 0, 0, 0]])
FAST = Options(max_inflight=4, backoff_s=(0.01, 0.02), block_ms=10, stop_timeout_s=10, metrics_port=0,
               claim_interval_s=0.05, lag_interval_s=0.05)  # fmt: skip


@pytest.fixture
def running() -> Iterator[Callable[..., tuple[Bridge, FakeRedis, FakeKafka, FakeInference]]]:
    threads: list[tuple[Bridge, threading.Thread]] = []

    def start(n: int, failures: int = 0, options: Options = FAST, cameras: int = 2
              ) -> tuple[Bridge, FakeRedis, FakeKafka, FakeInference]:  # fmt: skip
        r, k, i = FakeRedis(entries(n, cameras)), FakeKafka(failures), FakeInference()
        bridge = Bridge(options, redis_in=r, kafka=k, inference=i)  # type: ignore[arg-type]
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        threads.append((bridge, thread))
        return bridge, r, k, i

    yield start
    for bridge, thread in threads:
        bridge.stop.now.set()
        bridge.stop.asked.set()
        thread.join(10)


def test_events_leave_in_camera_order_whatever_the_answer_order(running: Any) -> None:
    bridge, r, k, i = running(8)
    for _ in range(2):
        wait_until(lambda: len(i.waiting) == 4, 10, "four requests (the slots)")
        for _, done in reversed(i.take()):  # newest answered first
            done(OK, None)
    wait_until(lambda: len(r.acked) == 8, 10, "eight acks")
    for camera in ("cam-0", "cam-1"):
        ids = [e["id"] for key, e in k.produced if key == camera]
        assert ids == sorted(ids) and len(ids) == 4, ids
    assert max(r.asked) <= 4 and bridge.metrics.registry.get_sample_value("bridge_inflight_peak") == 4


def test_acknowledged_only_after_delivery_and_retried_until_then(running: Any) -> None:
    bridge, r, k, i = running(2, failures=3)
    wait_until(lambda: len(i.waiting) == 2, 10, "two requests")
    for _, done in i.take():
        done(OK, None)
    wait_until(lambda: len(r.acked) == 2, 10, "two acks")
    assert len(k.produced) == 5, "three failed deliveries produced again"
    assert bridge.metrics.registry.get_sample_value("bridge_retries_total", {"target": "kafka"}) == 3


def test_an_unavailable_server_is_retried_without_limit_and_pauses_reading(running: Any) -> None:
    _, r, _, i = running(6)
    unavailable = InferenceServerException("down", status="StatusCode.UNAVAILABLE")
    for _ in range(10):  # more failures than --max-deliveries: not the entry's fault
        wait_until(lambda: len(i.waiting) == 4, 10, "four requests")
        assert len(r.entries) == 2, "no read while entries wait for a retry"
        for _, done in i.take():
            done(None, unavailable)
    wait_until(lambda: len(i.waiting) == 4, 10, "four requests again")
    assert not r.acked and not r.dead
    for _, done in i.take():
        done(OK, None)
    wait_until(lambda: len(r.acked) == 4, 10, "acks after the outage")
    wait_until(lambda: len(i.waiting) == 2, 10, "then the rest is read")


def test_an_entry_failing_past_max_deliveries_is_dead_lettered(running: Any) -> None:
    _, r, k, i = running(1, options=Options(**{**FAST.__dict__, "max_deliveries": 3}))
    internal = InferenceServerException("stub crashed", status="StatusCode.INTERNAL")
    for _ in range(3):
        wait_until(lambda: len(i.waiting) == 1, 10, "the request")
        (_, done), = i.take()
        done(None, internal)
    wait_until(lambda: r.dead, 10, "the dead letter")
    assert "failed 3 times" in r.dead[0][1] and "stub crashed" in r.dead[0][1]
    ((_, e),) = k.produced
    assert e["error"]["code"] == "DEAD_LETTER"
    assert not i.waiting, "never loops"


def test_second_stop_leaves_held_entries(running: Any) -> None:
    bridge, r, _, i = running(3)
    wait_until(lambda: len(i.waiting) == 3, 10, "three requests")
    bridge.stop.asked.set()
    bridge.stop.now.set()
    wait_until(bridge.finished.is_set, 10, "the stop")
    assert not r.acked and len(bridge.held) == 3


# --- A tier that tracks: each camera a sequence, its frames one at a time -------------------------------

TRACKED = Options(**{**FAST.__dict__, "tier": "track"})
TRACKED_OK = outputs([[1, 2, 3, 4]], [[0, 0, 0, 0]], track_ids=[7])


def test_a_tracked_camera_sends_one_frame_at_a_time_in_read_order(running: Any) -> None:
    """Eight entries of two cameras, four slots: one frame per camera at the server, the next sent only once
    the one before has its event, answers in any order; each camera's first frame starts its sequence, and
    every event names that sequence and carries the track fields."""
    bridge, r, k, i = running(8, options=TRACKED)
    wait_until(lambda: len(bridge.held) == 4 and len(i.waiting) == 2, 10, "four held, two sent")
    for _ in range(4):
        wait_until(lambda: len(i.waiting) == 2, 10, "one request per camera")
        taken = i.take()
        assert sorted(f.camera for f, _ in taken) == ["cam-0", "cam-1"]
        for _, done in reversed(taken):
            done(TRACKED_OK, None)
    wait_until(lambda: len(r.acked) == 8, 10, "eight acks")
    assert len(i.flags) == 8, "each frame sent once"
    for camera in ("cam-0", "cam-1"):
        events = [e for key, e in k.produced if key == camera]
        flags = [f for f in i.flags if f is not None and f.camera == camera]
        assert [f.start for f in flags] == [True, False, False, False] and not any(f.end for f in flags)
        ids = [e["id"] for e in events]
        assert ids == sorted(ids) and [f.sequence for f in flags] == [ids[0]] * 4
        assert all(e["sequence"] == ids[0] and e["persons"][0]["track_id"] == 7 for e in events)
    assert bridge.metrics.registry.get_sample_value("bridge_sequence_starts_total") == 2


def test_a_tracked_camera_starts_again_after_a_refusal_that_needs_it(running: Any) -> None:
    """The frame that started the sequence is refused (the server is full): it is retried, starting it again.
    A later frame is refused because the server lost the sequence: it is sent again at once, starting a new
    one, and its event is an answer, not an error."""
    bridge, r, k, i = running(3, options=TRACKED, cameras=1)
    full = InferenceServerException("all 16 camera slots are in use", status="StatusCode.UNAVAILABLE")
    lost = InferenceServerException("camera 'cam-0' has no tracks yet: ...; start its sequence again",
                                    status="StatusCode.INVALID_ARGUMENT")  # fmt: skip

    def answer(result: Any, error: Exception | None) -> Flags | None:
        wait_until(lambda: len(i.waiting) == 1, 10, "one request")
        ((_, done),) = i.take()
        flags = i.flags[-1]
        done(result, error)
        return flags

    first = answer(None, full)
    again = answer(TRACKED_OK, None)
    second = answer(None, lost)
    restarted = answer(TRACKED_OK, None)
    third = answer(TRACKED_OK, None)
    wait_until(lambda: len(r.acked) == 3, 10, "three acks")
    ids = [e["id"] for _, e in k.produced]
    assert [f.start for f in (first, again, second, restarted, third)] == [True, True, False, True, False]
    assert [f.sequence for f in (again, restarted, third)] == [ids[0], ids[1], ids[1]]
    assert [e["error"] for _, e in k.produced] == [None] * 3
    assert [e["sequence"] for _, e in k.produced] == [ids[0], ids[1], ids[1]]
    sample = bridge.metrics.registry.get_sample_value
    assert sample("bridge_sequence_starts_total") == 3
    assert sample("bridge_errors_total", {"kind": "sequence_restart"}) == 1

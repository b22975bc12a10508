"""`make bench`'s camera-fleet row: Redis -> bridge -> tier -> Kafka beside the same tier driven directly.

Both at the same concurrency C, closed loop: directly, C threads each send a frame and wait for its
answer; through the bridge (`--max-inflight C`), C cameras each publish a frame to the stream and wait
for its event on the topic. Latency is what the sender waits for (XADD to the event consumed, for the
bridge); frames per second over the same window. Redis and a Tansu broker run locally
(`python -m tools.bridge.local`), the bridge as its own process (`python -m tools.bridge`), as deployed.
Targets (the issue's): at least 0.95x the frames per second, at most 5 ms added to the p50 latency.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import psutil
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tools.client.people import PeopleClient
from tools.evaluate.report import met, table
from tools.server.triton import ROOT

log = logging.getLogger("bench.bridge")

TIER = "streaming"
CONCURRENCY = 4
TARGET_FPS_RATIO = 0.95
TARGET_ADDED_P50_MS = 5.0
STREAM, TOPIC = "bench", "bench.events"
ROUNDS = 3


@dataclass
class Run:
    frames: int
    seconds: float
    latencies_ms: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU time of the processes around the tier

    def __add__(self, other: Run) -> Run:
        cpu = {k: self.cpu_s.get(k, 0.0) + other.cpu_s.get(k, 0.0) for k in {*self.cpu_s, *other.cpu_s}}
        return Run(self.frames + other.frames, self.seconds + other.seconds, self.latencies_ms + other.latencies_ms,
                   cpu)  # fmt: skip

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def closed_loop(senders: int, seconds: float, send: Callable[[int, int], None]) -> Run:
    """`senders` threads call `send(sender, n)` back to back for `seconds`; each call is one frame."""
    latencies: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def sender(k: int) -> None:
        n = 0
        while time.monotonic() < end:
            start = time.perf_counter()
            send(k, n)
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)
            n += 1

    began = time.monotonic()
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Run(len(latencies), time.monotonic() - began, latencies)


def direct(url: str, jpegs: list[bytes], seconds: float) -> Run:
    clients = [PeopleClient(url, "grpc") for _ in range(CONCURRENCY)]
    try:
        return closed_loop(CONCURRENCY, seconds, lambda k, n: clients[k].detect([jpegs[(k + n) % len(jpegs)]], TIER))
    finally:
        for c in clients:
            c.close()


class Child:
    """A child process of ours, its output in a log, stopped with SIGTERM (SIGKILL after 30 s)."""

    def __init__(self, args: list[str], log_path: Path, stdout: int | IO[bytes] | None = None):
        self.log = log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=stdout or self.log,
                                        stderr=self.log)  # fmt: skip

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        return self.process.wait()


class Events:
    """Waits for events by id, read from every partition of the topic."""

    def __init__(self, kafka: str):
        self.arrived: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": kafka, "group.id": "bench", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 5})  # fmt: skip
        self.thread: threading.Thread | None = None

    def start(self, timeout_s: float = 60) -> None:
        """Once the topic exists (the bridge's first event creates it), read all its partitions."""
        deadline = time.monotonic() + timeout_s
        while not (partitions := self.consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {TOPIC} not created within {timeout_s:g} s: see bridge.log")
            time.sleep(0.2)
        self.consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in partitions])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _event(self, event_id: str) -> threading.Event:
        with self.lock:
            return self.arrived.setdefault(event_id, threading.Event())

    def _run(self) -> None:
        while not self.done.is_set():
            m = self.consumer.poll(0.05)
            if m is not None and not m.error():
                self._event(json.loads(m.value())["id"]).set()

    def wait(self, event_id: str, timeout_s: float = 120) -> None:
        if not self._event(event_id).wait(timeout_s):
            raise TimeoutError(f"no event {event_id} within {timeout_s:g} s")

    def close(self) -> None:
        self.done.set()
        if self.thread:
            self.thread.join(5)
        self.consumer.close()


@contextmanager
def bridge_path(url: str, jpegs: list[bytes], out: Path) -> Iterator[Callable[[float], Run]]:
    """Redis, Tansu and a bridge, warmed up; yields a function that runs the closed loop for some seconds."""
    services = Child(["tools.bridge.local", "--dir", str(out / "bridge-services")], out / "bridge-services.log",
                     stdout=subprocess.PIPE)  # fmt: skip
    assert services.process.stdout is not None
    addresses = json.loads(services.process.stdout.readline() or "{}")
    if not addresses:
        services.stop()
        raise RuntimeError(f"Redis and Tansu did not start: see {out / 'bridge-services.log'}")
    bridge = Child(["tools.bridge", "--redis", addresses["redis"], "--kafka", addresses["kafka"], "--stream", STREAM,
                    "--topic", TOPIC, "--url", url, "--tier", TIER, "--max-inflight", str(CONCURRENCY),
                    "--metrics-port", "0"], out / "bridge.log")  # fmt: skip
    client = redis.Redis.from_url(addresses["redis"])
    events = Events(addresses["kafka"])

    def publish(k: int, n: int) -> str:
        entry = {"jpeg": jpegs[(k + n) % len(jpegs)], "camera": f"camera-{k}", "ts": f"{time.time():.6f}"}
        return client.xadd(STREAM, entry).decode()

    def run(seconds: float) -> Run:
        processes = {"bridge": psutil.Process(bridge.process.pid), **_services(services.process.pid)}
        before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
        result = closed_loop(CONCURRENCY, seconds, lambda k, n: events.wait(f"{STREAM}/{publish(k, n)}"))
        for name, p in processes.items():
            result.cpu_s[name] = sum(p.cpu_times()[:2]) - before[name]
        return result

    try:
        warm = [publish(k, 0) for k in range(CONCURRENCY)]
        events.start()
        for event_id in warm:
            events.wait(f"{STREAM}/{event_id}")
        yield run
    finally:
        events.close()
        client.close()
        if bridge.stop() != 0:
            log.warning("the bridge did not stop cleanly: see %s", out / "bridge.log")
        services.stop()


def _services(pid: int) -> dict[str, psutil.Process]:
    """redis-server and tansu, children of `python -m tools.bridge.local`."""
    children = psutil.Process(pid).children()
    return {name: next(c for c in children if name in c.name()) for name in ("redis", "tansu")}


def section(direct_run: Run, bridge_run: Run, load: str) -> list[str]:
    ratio = bridge_run.fps / direct_run.fps
    added = bridge_run.p(50) - direct_run.p(50)
    rows = [(f"{TIER} tier, {CONCURRENCY} gRPC clients (PeopleClient.detect)", direct_run),
            (f"Redis -> bridge (--max-inflight {CONCURRENCY}) -> {TIER} tier -> Kafka, {CONCURRENCY} cameras",
             bridge_run)]  # fmt: skip
    targets = [("bridge / direct (frames per second)", f"{ratio:.3f}x", f">= {TARGET_FPS_RATIO}x",
                met(ratio >= TARGET_FPS_RATIO)),
               ("p50 added by the bridge", f"{added:.1f} ms", f"<= {TARGET_ADDED_P50_MS:g} ms",
                met(added <= TARGET_ADDED_P50_MS))]  # fmt: skip
    lines = [
        "## Camera fleets: Redis Streams in, Kafka out (tools/evaluate/bench_bridge.py)",
        "",
        f"Closed loop at concurrency {CONCURRENCY}, the same JPEGs. Directly: each client waits for its answer. "
        "Through the bridge: each camera publishes one frame (XADD) and waits for its event on the topic; "
        f"Redis and a Tansu broker on this machine. The two take turns ({ROUNDS} rounds, the same time each). "
        f"1-minute load average after the runs: {load}.",
        "",
        *table(
            ("path", "frames", "frames/s", "p50 ms", "p95 ms"),
            ((name, r.frames, f"{r.fps:.2f}", f"{r.p(50):.1f}", f"{r.p(95):.1f}") for name, r in rows),
        ),
        "",
        *table(("measure", "value", "target", "met"), targets),
        "",
        "CPU time per frame around the tier (it competes with the tier for the same cores here): "
        + ", ".join(f"{name} {t * 1000 / bridge_run.frames:.1f} ms" for name, t in sorted(bridge_run.cpu_s.items()))
        + ".",
    ]
    return lines


def append(report: Path, url: str, jpegs: list[bytes], smoke: bool = False, seconds: float | None = None) -> None:
    """Run both paths and append their section to the report (the hook in bench.py)."""
    seconds = seconds or (3.0 if smoke else 30.0)
    log.info("camera fleets: the %s tier directly and through Redis, the bridge and Kafka, in turns (%g s each)",
             TIER, seconds)  # fmt: skip
    direct_run, bridge_run = Run(0, 0.0, []), Run(0, 0.0, [])
    with bridge_path(url, jpegs, report.parent) as through_bridge:
        for _ in range(ROUNDS):  # in turns, so a change in the machine's load falls on both
            direct_run += direct(url, jpegs, seconds / ROUNDS)
            bridge_run += through_bridge(seconds / ROUNDS)
    lines = section(direct_run, bridge_run, f"{os.getloadavg()[0]:.1f}")
    with report.open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Only this comparison, against a running server: `python -m tools.evaluate.bench_bridge --url HOST:PORT`."""
    import argparse

    from tools.evaluate.corpus import ASSETS

    parser = argparse.ArgumentParser(prog="python -m tools.evaluate.bench_bridge", description=__doc__)
    parser.add_argument("--url", required=True, help="a running server's gRPC address")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="writes BRIDGE.md there")
    parser.add_argument("--smoke", action="store_true", help="3 s per path: proves it runs")
    parser.add_argument("--seconds", type=float, help="per path (default 30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "BRIDGE.md"
    report.write_text("")
    append(report, args.url, [(ASSETS / n).read_bytes() for n in ("bus.jpg", "zidane.jpg")], args.smoke, args.seconds)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

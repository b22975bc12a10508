"""What the bridge's server tests share: a bridge as a child process, frames in, events out, the group's state.

The bridge runs as `python -m tools.bridge`, as in production, so signals (SIGKILL, SIGTERM) are real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import wait_until
from tools.bridge.events import consumer
from tools.bridge.publish import fields
from tools.server.endpoints import free_port
from tools.server.triton import ROOT


class BridgeProcess:
    """One `python -m tools.bridge` with its own metrics port; its output in `log`."""

    def __init__(self, log: Path, *args: str):
        self.metrics_port = free_port()
        self.log = log
        command = [sys.executable, "-m", "tools.bridge", "--metrics-port", str(self.metrics_port), *args]
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def metrics(self) -> dict[str, float]:
        """Samples summed over labels except those named in the key: `bridge_errors_total{kind=redis}`."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[s.name] = values.get(s.name, 0.0) + s.value
                for label, value in s.labels.items():
                    key = f"{s.name}{{{label}={value}}}"
                    values[key] = values.get(key, 0.0) + s.value
        return values

    def metric(self, name: str) -> float:
        try:
            return self.metrics().get(name, 0.0)
        except OSError:  # not serving yet
            return 0.0

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def publish(client: redis.Redis, stream: str, jpegs: Iterable[bytes | None], camera: str | None = None,
            **extra: str) -> list[str]:  # fmt: skip
    """One entry per item (None: an entry without `jpeg`); returns the entry ids."""
    ids = []
    for jpeg in jpegs:
        entry: dict[str, Any] = fields(jpeg, camera, {}) if jpeg is not None else {"note": "no image here"}
        entry["camera"] = camera
        if camera is None:
            entry.pop("camera")
        entry.update(extra)
        ids.append(client.xadd(stream, entry).decode())
    return ids


class Events:
    """Every event on a topic, collected by a thread from the beginning of each partition, in offset order."""

    def __init__(self, kafka: str, topic: str, timeout_s: float = 120):
        self.consumer = consumer(kafka, topic, timeout_s=timeout_s)
        self.items: list[tuple[str, int, dict[str, Any]]] = []  # (key, partition, event)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import json

        while not self.done.is_set():
            m = self.consumer.poll(0.2)
            if m is None or m.error():
                continue
            with self.lock:
                self.items.append(((m.key() or b"").decode(), m.partition(), json.loads(m.value())))

    def ids(self) -> set[str]:
        with self.lock:
            return {e["id"] for _, _, e in self.items}

    def wait_for(self, ids: Iterable[str], timeout_s: float, what: str = "every id on the topic") -> None:
        wanted = set(ids)
        wait_until(lambda: wanted <= self.ids(), timeout_s, f"{what} (missing {len(wanted - self.ids())})", 0.2)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.consumer.close()


def group_state(client: redis.Redis, stream: str, group: str = "people") -> dict[str, Any]:
    """The group as Redis sees it: lag, pending, and pending per consumer."""
    info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == group)
    summary = client.xpending(stream, group)
    per_consumer = {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}
    return {"lag": info.get("lag"), "pending": int(info["pending"]), "consumers": per_consumer,
            "entries_read": info.get("entries-read")}  # fmt: skip


def stop_all(processes: Iterable[BridgeProcess]) -> None:
    for p in processes:
        if p.process.poll() is None:
            p.signal(signal.SIGKILL)
        p.close()

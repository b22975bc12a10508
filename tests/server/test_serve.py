"""`make serve` as a user runs it in a terminal: the banner, answers, and Ctrl-C.

Ctrl-C is typed into a pseudo-terminal whose foreground process group is `make`'s: the terminal
sends SIGINT to make, the launcher and anything else in that group, exactly as in a shell.
Triton runs in its own session, so only the launcher's orderly stop reaches it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import subprocess
import termios
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from pipelines import spec
from pipelines.paths import ROOT
from tests.server.conftest import SAMPLES, tier_repository, wait_until
from tools.client.people import PeopleClient
from tools.server.endpoints import Endpoints

CTRL_C = b"\x03"


@dataclass
class Terminal:
    """`make serve` on a pseudo-terminal; everything it prints is collected."""

    process: subprocess.Popen[bytes]
    master: int
    endpoints: Endpoints
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)


def _read(terminal: Terminal) -> None:
    while True:
        try:
            chunk = os.read(terminal.master, 4096)
        except OSError:  # the terminal closed: every process on it has exited
            return
        if not chunk:
            return
        terminal.output.append(chunk.decode(errors="replace"))


@pytest.fixture()
def terminal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Terminal]:
    """`make serve` in a terminal; on model_repository/, or on a repository of the tiers given as the
    parameter (a server that loads fewer models starts sooner)."""
    e = Endpoints.free()
    tiers = getattr(request, "param", ())
    repository = [f"REPOSITORY={tier_repository(tmp_path / 'repository', *tiers)}"] if tiers else []
    master, slave = pty.openpty()

    def controlling_terminal() -> None:  # a new session whose controlling terminal is the pty, as a shell's job
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        ["make", "--no-print-directory", "serve", f"HTTP_PORT={e.http}", f"GRPC_PORT={e.grpc}",
         f"METRICS_PORT={e.metrics}", "VARIANT=cpu", *repository],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal,
    )  # fmt: skip
    os.close(slave)
    t = Terminal(process, master, e)
    reader = threading.Thread(target=_read, args=(t,), daemon=True)
    reader.start()
    try:
        wait_until(lambda: "serve: try:" in t.text() or process.poll() is not None, 600, "the ready banner")
        assert process.poll() is None, "make serve exited before it was ready:\n" + t.text()[-3000:]
        yield t
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        for p in _tritonservers(e):
            p.kill()
        process.wait(timeout=60)
        os.close(master)


def _tritonservers(e: Endpoints) -> list[psutil.Process]:
    """tritonserver processes serving these endpoints (by their command line)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if p.info["name"] == "tritonserver" and f"--http-port={e.http}" in cmdline:
            found.append(p)
    return found


def _metric(e: Endpoints, metric: str, tier: str) -> float:
    """A metric of the tier's first step, read from Triton's metrics endpoint."""
    with urllib.request.urlopen(f"http://{e.host}:{e.metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    model = spec.tier(tier).model(spec.Step.PREPROCESS)
    pattern = re.compile(rf'^{metric}{{model="{model}"[^}}]*}} (\S+)$', re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def _admitted(e: Endpoints, tier: str) -> float:
    return _metric(e, spec.ADMITTED_METRIC, tier)


def _inside(e: Endpoints, tier: str, admitted_before: float) -> float:
    """Requests the tier holds: queued at its first step, or passed on by it since `admitted_before`."""
    return _metric(e, "nv_inference_pending_request_count", tier) + _admitted(e, tier) - admitted_before


def test_banner_names_the_endpoints(terminal: Terminal) -> None:
    banner = "".join(line for line in terminal.text().splitlines(keepends=True) if line.startswith("serve:"))
    e = terminal.endpoints
    assert f"gRPC {e.grpc_url}" in banner and f"http://{e.http_url}" in banner, banner
    assert all(tier.model(spec.Step.ENSEMBLE) in banner for tier in spec.TIERS), banner
    (persons,) = PeopleClient(e.grpc_url).detect([SAMPLES["bus.jpg"].read_bytes()])
    assert persons
    terminal.type(CTRL_C)
    terminal.process.wait(timeout=120)  # make ends (its status after an interrupt is make's own affair)
    assert "stopped: every accepted request was answered" in terminal.text(), terminal.text()[-2000:]
    assert not _tritonservers(terminal.endpoints)


@pytest.mark.parametrize("terminal", [("batch",)], indirect=True)
def test_ctrl_c_finishes_requests_in_flight_then_stops(terminal: Terminal) -> None:
    """Ctrl-C with single- and multi-image requests in every step: all answered, nothing restarted, all gone."""
    e = terminal.endpoints
    served = [tier.name for tier in spec.TIERS if tier.model(spec.Step.ENSEMBLE) in terminal.text()]
    assert served == ["batch"], f"the banner lists the tiers of the repository served: {served}"
    client = PeopleClient(e.grpc_url)
    bus, zidane = SAMPLES["bus.jpg"].read_bytes(), SAMPLES["zidane.jpg"].read_bytes()
    requests = [[zidane]] * 6 + [[bus, zidane, bus, zidane]] * 3
    expected = {len(r): client.detect(r, "batch") for r in (requests[0], requests[-1])}
    before = _admitted(e, "batch")
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(client.detect, r, "batch") for r in requests]
        # Every request inside the server (a busy machine's client threads may still be sending), and one
        # past the first step: those arriving after Ctrl-C are refused, by design.
        wait_until(lambda: _inside(e, "batch", before) == len(requests) and _admitted(e, "batch") > before, 120,
                   "every request inside the server, one past preprocess")  # fmt: skip
        terminal.type(CTRL_C)
        results = [f.result(timeout=120) for f in futures]
    terminal.process.wait(timeout=120)
    text = terminal.text()
    assert [r == expected[len(q)] for r, q in zip(results, requests, strict=True)] == [True] * len(requests)
    assert "restart" not in text, text[-3000:]
    assert "stopped: every accepted request was answered" in text, text[-3000:]
    assert not _tritonservers(e), "tritonserver outlived make serve"


@pytest.mark.parametrize("terminal", [("batch",)], indirect=True)
def test_second_ctrl_c_stops_without_waiting(terminal: Terminal) -> None:
    e = terminal.endpoints
    client = PeopleClient(e.grpc_url)
    bus = SAMPLES["bus.jpg"].read_bytes()
    before = _admitted(e, "batch")
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.detect, [bus] * 4, "batch") for _ in range(4)]
        wait_until(lambda: _admitted(e, "batch") > before, 120, "a request past preprocess")
        terminal.type(CTRL_C)
        wait_until(lambda: "again to stop at once" in terminal.text(), 30, "the launcher to start draining")
        terminal.type(CTRL_C)
        terminal.process.wait(timeout=120)
        for f in futures:
            f.exception(timeout=120)  # answered or failed, never left hanging
    assert "stopping without waiting" in terminal.text(), terminal.text()[-2000:]
    assert not _tritonservers(e), "tritonserver outlived make serve"

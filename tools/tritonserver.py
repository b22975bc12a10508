"""Run a real Triton server from the nvidia-pytriton wheel, without Docker.

The wheel carries Triton 2.51 with the python backend. `make tritonserver`
unpacks it into build/tritonserver (see the Makefile). The python backend's
stub takes its interpreter from the `python3` first on PATH and needs the
interpreter's libpython on LD_LIBRARY_PATH, so both point at this project's
virtualenv. Used by `make serve` and by the server tests.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import spec
from tools.health import dead_stubs, expected_stubs, triton_ready

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "build" / "tritonserver"
BINARY = INSTALL / "bin" / "tritonserver"
BACKENDS = INSTALL / "backends"
LIBS = INSTALL / "lib"

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((spec.HOST, 0))
        return s.getsockname()[1]


@dataclass
class Endpoints:
    host: str = spec.HOST
    http: int = spec.HTTP_PORT
    grpc: int = spec.GRPC_PORT
    metrics: int = spec.METRICS_PORT

    @classmethod
    def free(cls) -> Endpoints:
        return cls(http=free_port(), grpc=free_port(), metrics=free_port())

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc}"


@dataclass
class ServerOptions:
    repository: Path = ROOT / "model_repository"
    config_name: str | None = "cpu"  # None: the default (GPU) config.pbtxt
    endpoints: Endpoints = field(default_factory=Endpoints)
    api_key: str | None = None  # restricts inference and admin protocols to this key
    extra_args: tuple[str, ...] = ()
    log_verbose: int = 0


def environment() -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH that make the stub run this virtualenv's Python."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    libpython_dir = sysconfig.get_config_var("LIBDIR")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(LIBS), libpython_dir, env.get("LD_LIBRARY_PATH")) if p)
    return env


def endpoint_args(options: ServerOptions) -> list[str]:
    """Addresses, ports, config variant, logging and access control: what differs per deployment.

    The serving image's ENTRYPOINT holds the rest (see Dockerfile.triton) and takes these.
    """
    e = options.endpoints
    args = [
        f"--http-address={e.host}",
        f"--http-port={e.http}",
        f"--grpc-address={e.host}",
        f"--grpc-port={e.grpc}",
        f"--metrics-address={e.host}",
        f"--metrics-port={e.metrics}",
        f"--log-verbose={options.log_verbose}",
    ]
    if options.config_name:
        args.append(f"--model-config-name={options.config_name}")
    if options.api_key:
        restricted = "inference,model-repository,model-config,shared-memory,statistics,trace,logging"
        args += [
            f"--grpc-restricted-protocol={restricted}:x-api-key={options.api_key}",
            f"--http-restricted-api={restricted}:x-api-key={options.api_key}",
        ]
    return args + list(options.extra_args)


def command(options: ServerOptions) -> list[str]:
    """The local server's full command line (the same fixed flags as the image's ENTRYPOINT)."""
    return [
        str(BINARY),
        f"--model-repository={options.repository}",
        f"--backend-directory={BACKENDS}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--exit-timeout-secs=30",
        *endpoint_args(options),
    ]


class Server:
    """A tritonserver child process; `with Server(options) as s:` waits for readiness."""

    def __init__(self, options: ServerOptions, log_path: Path | None = None, ready_timeout_s: float = 300):
        if not BINARY.is_file():
            raise FileNotFoundError(f"{BINARY} is missing: run `make tritonserver` (or `make setup`)")
        self.options = options
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = False  # set by stop(): an exit that follows was asked for

    def start(self) -> Server:
        self.stopping = False
        out = self.log_path.open("ab") if self.log_path else None
        self.process = subprocess.Popen(
            command(self.options), env=environment(), stdout=out, stderr=subprocess.STDOUT if out else None
        )
        self.wait_ready()
        return self

    def ready(self) -> bool:
        return triton_ready(self.options.endpoints.http_url)

    def dead_stubs(self) -> list[str]:
        """Python models whose stub processes died (Triton itself keeps calling them ready)."""
        if self.process is None:
            return []
        expected = expected_stubs(self.options.repository, self.options.config_name)
        return dead_stubs(self.process.pid, expected)

    def healthy(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.ready() and not self.dead_stubs()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.process.returncode}; see {self.log_path or 'its output'}"
                )
            if self.ready():
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"tritonserver not ready after {self.ready_timeout_s:.0f}s; see {self.log_path or 'its output'}"
        )

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM: Triton stops taking requests and finishes those in flight (up to its exit timeout)."""
        self.stopping = True
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop in %.0fs; killing it", timeout_s)
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
import re
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import spec
from tools.server.health import dead_stubs, expected_stubs, triton_ready

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "build" / "tritonserver"
BINARY = INSTALL / "bin" / "tritonserver"
BACKENDS = INSTALL / "backends"
LIBS = INSTALL / "lib"

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30  # as Triton's --exit-timeout-secs
# With an API key, everything but health and metadata needs it (probes stay open).
RESTRICTED_APIS = ("inference", "model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")


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
    variant: spec.Variant = spec.Variant.CPU  # the local server has no GPU, DALI or TensorRT backend
    endpoints: Endpoints = field(default_factory=Endpoints)
    api_key: str | None = None  # restricts inference and admin protocols to this key
    extra_args: tuple[str, ...] = ()
    log_verbose: int = 0


def environment(drain_file: Path | None = None) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH that make the stub run this virtualenv's Python; where drain() signals."""
    env = dict(os.environ)
    if drain_file is not None:
        env[spec.DRAIN_FILE_ENV] = str(drain_file)
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
    if options.variant.config_name:
        args.append(f"--model-config-name={options.variant.config_name}")
    # Clients never need shared-memory registration here; without an API key it is locked with a
    # secret nobody knows (this Triton has no switch to turn it off).
    key = options.api_key or secrets.token_hex(16)
    restricted = RESTRICTED_APIS if options.api_key else ("shared-memory",)
    args += [
        f"--grpc-restricted-protocol={','.join(restricted)}:{spec.API_KEY_HEADER}={key}",
        f"--http-restricted-api={','.join(restricted)}:{spec.API_KEY_HEADER}={key}",
    ]
    return args + list(options.extra_args)


def command(options: ServerOptions) -> list[str]:
    """The local server's full command line (the same fixed flags as the image's ENTRYPOINT)."""
    return [
        str(BINARY),
        f"--model-repository={options.repository}",
        f"--backend-directory={BACKENDS}",
        *spec.SERVER_FLAGS,
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
        self.drain_file = Path(tempfile.gettempdir()) / f"people-drain-{os.getpid()}-{id(self)}"

    def start(self) -> Server:
        self.stopping = False
        self.drain_file.unlink(missing_ok=True)
        out = self.log_path.open("ab") if self.log_path else None
        self.process = subprocess.Popen(
            command(self.options),
            env=environment(self.drain_file),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        self.wait_ready()
        return self

    def ready(self) -> bool:
        return triton_ready(self.options.endpoints.http_url)

    def dead_stubs(self) -> list[str]:
        """Python models whose stub processes died (Triton itself keeps calling them ready)."""
        if self.process is None:
            return []
        expected = expected_stubs(self.options.repository, self.options.variant.config_name)
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

    def metrics(self) -> dict[tuple[str, str], float]:
        """Triton's metrics endpoint as {(metric, model): value}, summed over other labels."""
        url = f"http://{self.options.endpoints.host}:{self.options.endpoints.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        values: dict[tuple[str, str], float] = {}
        for metric, model, value in re.findall(r'^(\w+)\{model="(\w+)"[^}]*\} (\S+)$', text, re.MULTILINE):
            values[metric, model] = values.get((metric, model), 0.0) + float(value)
        return values

    def in_flight(self) -> int:
        """Requests the server holds: queued at any step, or passed on by preprocess and not yet answered.

        Triton's pending count covers queued requests only; the executing ones come from the
        counters the python models publish (spec.ADMITTED_METRIC, ANSWERED_METRIC), less the
        requests Triton's schedulers refused between the steps.
        """
        values = self.metrics()
        total = sum(v for (metric, _), v in values.items() if metric == "nv_inference_pending_request_count")
        for tier in spec.TIERS:
            admitted = values.get((spec.ADMITTED_METRIC, tier.model(spec.Step.PREPROCESS)), 0.0)
            answered = values.get((spec.ANSWERED_METRIC, tier.model(spec.Step.POSTPROCESS)), 0.0)
            refused = sum(
                values.get(("nv_inference_request_failure", tier.model(step)), 0.0)
                for step in (spec.Step.DETECTOR, spec.Step.POSTPROCESS)
            )
            total += max(admitted - answered - refused, 0.0)
        return int(total)

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> int:
        """Refuse new requests (UNAVAILABLE, "draining") and wait for those in flight; returns how many remain.

        Needed because on SIGTERM Triton 2.51 refuses the next step of an ensemble request already
        in flight ("Server is stopping") instead of finishing it (seen here). cpu variant: the
        preprocess step reads the flag; on the GPU variant the orchestrator stops traffic first.
        """
        self.drain_file.touch()
        deadline = time.monotonic() + timeout_s
        remaining = self.in_flight()
        while remaining > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            remaining = self.in_flight()
        return remaining

    def stop(self, timeout_s: float = 60, drain: bool = True) -> int | None:
        """Drain (see drain()), then SIGTERM: Triton finishes what is still executing and exits."""
        self.stopping = True
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        if drain and self.ready():
            left = self.drain()
            if left:
                log.warning("%d requests still in flight after draining %.0fs; stopping anyway", left, DRAIN_TIMEOUT_S)
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

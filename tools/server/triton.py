"""Run a real Triton server from the nvidia-pytriton wheel, without Docker.

The wheel carries Triton 2.51 with the python backend. `make tritonserver`
unpacks it into build/tritonserver (see the Makefile). The python backend's
stub takes its interpreter from the `python3` first on PATH and needs the
interpreter's libpython on LD_LIBRARY_PATH, so both point at this project's
virtualenv. Used by `make serve` and by the server tests.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import spec
from pipelines.paths import REPOSITORY, ROOT
from tools.server.drain import Drain
from tools.server.endpoints import Endpoints
from tools.server.health import dead_stubs, expected_stubs, triton_ready
from tools.server.stats import Stats

INSTALL = ROOT / "build" / "tritonserver"
BINARY = INSTALL / "bin" / "tritonserver"
BACKENDS = INSTALL / "backends"
LIBS = INSTALL / "lib"

log = logging.getLogger(__name__)

# With an API key, everything but health and metadata needs it (probes stay open).
RESTRICTED_APIS = ("inference", "model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")


@dataclass
class ServerOptions:
    repository: Path = REPOSITORY
    variant: spec.Variant = spec.Variant.CPU  # the local server has no GPU, DALI or TensorRT backend
    endpoints: Endpoints = field(default_factory=Endpoints)
    api_key: str | None = None  # restricts inference and admin protocols to this key
    gpus: int = 1  # GPUs the server sees (GPU variant: one CUDA memory pool each)
    log_verbose: int = 0


def environment(drain_token: str | None = None) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH that make the stub run this virtualenv's Python; the drain's secret."""
    env = dict(os.environ)
    if drain_token is not None:
        env[spec.DRAIN_TOKEN_ENV] = drain_token
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
    if options.variant is spec.Variant.GPU:
        args += [spec.cuda_pool_flag(gpu) for gpu in range(options.gpus)]
    # Clients never need shared-memory registration here; without an API key it is locked with a
    # secret nobody knows (this Triton has no switch to turn it off).
    key = options.api_key or secrets.token_hex(16)
    restricted = RESTRICTED_APIS if options.api_key else ("shared-memory",)
    args += [
        f"--grpc-restricted-protocol={','.join(restricted)}:{spec.API_KEY_HEADER}={key}",
        f"--http-restricted-api={','.join(restricted)}:{spec.API_KEY_HEADER}={key}",
    ]
    return args


def command(options: ServerOptions) -> list[str]:
    """The local server's full command line (the same fixed flags as the image's ENTRYPOINT)."""
    return [
        str(BINARY),
        f"--model-repository={options.repository}",
        f"--backend-directory={BACKENDS}",
        *spec.SERVER_FLAGS,
        *endpoint_args(options),
    ]


@dataclass(frozen=True)
class Stopped:
    """How a stop went: Triton's exit status and the requests a drain could not finish."""

    returncode: int | None
    unfinished: int = 0

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and self.unfinished == 0


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _own_session_dying_with_parent() -> None:
    """In the child before exec: out of the terminal's process group, SIGTERM when the launcher dies.

    A terminal's Ctrl-C reaches its whole foreground process group; Triton and its python stubs
    must get the launcher's orderly stop instead. PR_SET_PDEATHSIG fires when the *thread* that
    started the child ends, so it is only set from the main thread (see Server.start).
    """
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _own_session() -> None:
    os.setsid()


class Server:
    """A tritonserver child process; `with Server(options) as s:` waits for readiness.

    Triton runs in its own session: signals for the launcher (a terminal's Ctrl-C) never reach it
    or its stubs; the launcher stops it with stop(), which drains first.
    """

    def __init__(self, options: ServerOptions, log_path: Path | None = None, ready_timeout_s: float = 300):
        if not BINARY.is_file():
            raise FileNotFoundError(f"{BINARY} is missing: run `make tritonserver` (or `make setup`)")
        self.options = options
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = False  # set by stop(): an exit that follows was asked for
        self.drain_token = secrets.token_hex(16)  # only this launcher can make the server drain
        self.stats = Stats(options.endpoints, options.api_key)

    def start(self, abort: threading.Event | None = None) -> Server:
        """Start and wait until ready, or until `abort` is set (then the caller stops it)."""
        self.stopping = False
        self.drain_token = secrets.token_hex(16)
        out = self.log_path.open("ab") if self.log_path else None
        main_thread = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            command(self.options),
            env=environment(self.drain_token),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            preexec_fn=_own_session_dying_with_parent if main_thread else _own_session,
        )
        self.wait_ready(abort)
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

    def wait_ready(self, abort: threading.Event | None = None) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline and not (abort and abort.is_set()):
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.process.returncode}; see {self.log_path or 'its output'}"
                )
            if self.ready():
                return
            time.sleep(0.5)
        if abort and abort.is_set():
            return
        self.stop(drain=False)
        raise TimeoutError(
            f"tritonserver not ready after {self.ready_timeout_s:.0f}s; see {self.log_path or 'its output'}"
        )

    def stop(self, timeout_s: float = 60, drain: bool = True, abort: threading.Event | None = None) -> Stopped:
        """Drain (tools/server/drain.py; `abort` cuts the wait short), then SIGTERM and wait for Triton to exit."""
        self.stopping = True
        if self.process is None or self.process.poll() is not None:
            return Stopped(self.process.returncode if self.process else None)
        unfinished = 0
        if drain and self.ready():
            unfinished = Drain(self.stats, self.drain_token)(abort=abort)
            if unfinished:
                log.warning("%d request(s) unfinished after draining; stopping anyway", unfinished)
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop in %.0fs; killing it", timeout_s)
            self.process.kill()
            code = self.process.wait()
        return Stopped(code, unfinished)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Run a real Triton server from the nvidia-pytriton wheel, without Docker.

The wheel carries Triton 2.51 with the python backend. `make tritonserver`
unpacks it into build/tritonserver (see the Makefile). The python backend's
stub takes its interpreter from the `python3` first on PATH and needs the
interpreter's libpython on LD_LIBRARY_PATH, so both point at this project's
virtualenv. Used by `make serve` and by the server tests.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from pipelines import spec
from pipelines.render import REPOSITORY, ROOT
from tools.server.health import dead_stubs, expected_stubs, triton_ready

INSTALL = ROOT / "build" / "tritonserver"
BINARY = INSTALL / "bin" / "tritonserver"
BACKENDS = INSTALL / "backends"
LIBS = INSTALL / "lib"

log = logging.getLogger(__name__)

# With an API key, everything but health and metadata needs it (probes stay open).
RESTRICTED_APIS = ("inference", "model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports (Linux; a common default elsewhere)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A port nothing listens on, outside the ephemeral range.

    A port the kernel handed out (bind to port 0) is free only until Triton binds it; meanwhile any
    outgoing connection may take it as its local port. Ports below the ephemeral range are never
    given to outgoing connections, so only another listener could take it.
    """
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral]
    for port in secrets.SystemRandom().sample(candidates, 64):
        with socket.socket() as s:
            try:
                s.bind((spec.HOST, port))
            except OSError:
                continue
            return port
    raise OSError("no free port found between 20000 and 32767")


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
    repository: Path = REPOSITORY
    variant: spec.Variant = spec.Variant.CPU  # the local server has no GPU, DALI or TensorRT backend
    endpoints: Endpoints = field(default_factory=Endpoints)
    api_key: str | None = None  # restricts inference and admin protocols to this key
    gpus: int = 1  # GPUs the server sees (GPU variant: one CUDA memory pool each)
    extra_args: tuple[str, ...] = ()
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


class Progress:
    """Whether a draining server still gets work done: its tiers' admitted and answered counters move.

    Read at most twice a second, whoever asks (the drain's threads poll it)."""

    def __init__(self, server: Server, stall_s: float):
        self.server = server
        self.stall_s = stall_s
        self.lock = threading.Lock()
        self.seen: float | None = None
        self.moved = self.checked = time.monotonic()

    def _work_done(self) -> float:
        metrics = self.server.metrics()
        return sum(v for (metric, _), v in metrics.items() if metric in (spec.ADMITTED_METRIC, spec.ANSWERED_METRIC))

    def stalled(self) -> bool:
        with self.lock:
            now = time.monotonic()
            if now - self.checked >= 0.5:
                self.checked = now
                try:
                    done = self._work_done()
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    done = self.seen
                if done != self.seen:
                    self.seen, self.moved = done, now
            return now - self.moved > self.stall_s


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

    def metrics(self) -> dict[tuple[str, str], float]:
        """Triton's metrics endpoint as {(metric, model): value}, summed over other labels."""
        url = f"http://{self.options.endpoints.host}:{self.options.endpoints.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        values: dict[tuple[str, str], float] = {}
        for metric, model, value in re.findall(r'^(\w+)\{model="(\w+)"[^}]*\} (\S+)$', text, re.MULTILINE):
            values[metric, model] = values.get((metric, model), 0.0) + float(value)
        return values

    def statistics(self, model: str) -> dict[str, Any]:
        """One model's entry of Triton's inference statistics (its JSON form), read over gRPC."""
        key = self.options.api_key
        headers = {spec.GRPC_API_KEY_HEADER: key} if key else None  # statistics is restricted when keyed
        with grpcclient.InferenceServerClient(self.options.endpoints.grpc_url) as c:
            return c.get_inference_statistics(model, headers=headers, as_json=True)["model_stats"][0]

    def counts(self, model: str) -> tuple[int, int]:
        """(inferences, executions) the model ran so far: fewer executions than inferences means batches."""
        s = self.statistics(model)
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))

    def batch_sizes(self, model: str) -> Counter[int]:
        """How many executions the model ran at each batch size so far (Triton's per-model batch statistics)."""
        batches = self.statistics(model).get("batch_stats", [])
        return Counter({int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in batches})

    def admitted_in_flight(self) -> int:
        """Requests preprocess passed on and the tier has not yet answered.

        From the counters the python models publish (spec.ADMITTED_METRIC, ANSWERED_METRIC, which
        count error responses too) less the requests that failed at the detector or postprocess
        without an answer from postprocess (nv_inference_request_failure of those steps: a request
        its client cancelled is dropped from the step's queue and counted there with reason
        CANCELED, core src/dynamic_batch_scheduler.cc). Exact because those steps never refuse what
        the tier admitted (pipelines.admission): a refusal at a full inner queue would be counted on
        the ensemble only, and could never be told apart from a request still in flight.
        """
        values = self.metrics()
        total = 0.0
        for tier in spec.TIERS:
            admitted = values.get((spec.ADMITTED_METRIC, tier.model(spec.Step.PREPROCESS)), 0.0)
            answered = values.get((spec.ANSWERED_METRIC, tier.model(spec.Step.POSTPROCESS)), 0.0)
            refused = sum(
                values.get(("nv_inference_request_failure", tier.model(step)), 0.0)
                for step in (spec.Step.DETECTOR, spec.Step.POSTPROCESS)
            )
            total += max(admitted - answered - refused, 0.0)
        return int(total)

    def _mark(self, tier: spec.Tier, progress: Progress, abort: threading.Event) -> bool:
        """Queue the drain marker at the tier's preprocess; True once preprocess has seen it.

        Retried while Triton refuses it for a full queue or a queue timeout (503) and the server still
        makes progress; every request queued before it is admitted, every one after it refused.
        """
        e = self.options.endpoints
        body = {
            "inputs": [{"name": spec.IMAGE.name, "shape": [1, 1], "datatype": spec.IMAGE.dtype.value, "data": [0]}],
            "parameters": {spec.DRAIN_PARAMETER: self.drain_token},
        }
        headers = {"Content-Type": "application/json"}
        if self.options.api_key:
            headers[spec.API_KEY_HEADER] = self.options.api_key
        url = f"http://{e.http_url}/v2/models/{tier.model(spec.Step.PREPROCESS)}/infer"
        while not progress.stalled() and not abort.is_set():
            request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=progress.stall_s) as r:
                    message, status = r.read().decode(), r.status
            except urllib.error.HTTPError as error:
                message, status = error.read().decode(errors="replace"), error.code
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                log.warning("drain of %s: %s", tier.name, error)
                return False
            if spec.DRAINING_MESSAGE in message or status == 404:  # cut now, or a tier this server does not load
                return True
            if status != 503:  # not a queue refusal: the step is broken; waiting will not help
                log.warning("drain of %s: preprocess answered %s %s", tier.name, status, message[:200])
                return False
            time.sleep(0.05)
        return False

    def drain(self, stall_s: float = spec.EXIT_TIMEOUT_S, abort: threading.Event | None = None) -> int:
        """Cut every tier (spec.DRAIN_PARAMETER) and wait for what was admitted; returns how many remain.

        Needed because on SIGTERM Triton refuses the next step of an ensemble request already in
        flight ("Server is stopping", seen here on 2.51; the same code path in later releases per
        triton-inference-server/core src/dynamic_batch_scheduler.cc). Requests that reached a tier
        before its cut finish, whatever step they are in; later ones get UNAVAILABLE. It waits as long
        as the server makes progress (a full tier on a busy machine takes a while) and gives up after
        `stall_s` without any. cpu variant only: on the GPU variant the orchestrator stops sending
        traffic first.
        """
        abort = abort or threading.Event()
        progress = Progress(self, stall_s)
        with ThreadPoolExecutor(len(spec.TIERS)) as pool:
            cut = list(pool.map(lambda t: self._mark(t, progress, abort), spec.TIERS))
        uncut = [t.name for t, ok in zip(spec.TIERS, cut, strict=True) if not ok]
        if uncut:
            log.warning("could not cut tier(s) %s before stopping", ", ".join(uncut))
        remaining = self.admitted_in_flight()
        while remaining > 0 and not progress.stalled() and not abort.is_set():
            time.sleep(0.1)
            remaining = self.admitted_in_flight()
        return remaining + len(uncut)

    def stop(self, timeout_s: float = 60, drain: bool = True, abort: threading.Event | None = None) -> Stopped:
        """Drain (see drain(); `abort` cuts the wait short), then SIGTERM and wait for Triton to exit."""
        self.stopping = True
        if self.process is None or self.process.poll() is not None:
            return Stopped(self.process.returncode if self.process else None)
        unfinished = 0
        if drain and self.ready():
            unfinished = self.drain(abort=abort)
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

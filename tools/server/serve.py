"""`make serve`: start Triton on the model repository, print the endpoints, supervise it, stop it cleanly.

With Docker and an NVIDIA GPU it runs the serving image (tools/server/docker.py)
on the default GPU configs. Otherwise it runs the Triton from the
nvidia-pytriton wheel on the cpu variant and supervises it: a python stub that
died (Triton keeps it "ready") or an unasked exit restarts the server. Binds to
127.0.0.1 unless --host says otherwise.

Ctrl-C or SIGTERM: the requests already inside a tier finish, new ones get
UNAVAILABLE, then Triton stops (tools/server/drain.py). A second
Ctrl-C stops without waiting. Exit status 0 only when every accepted request
was answered and Triton exited cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType

from pipelines import spec
from tools.server import docker
from tools.server.endpoints import Endpoints
from tools.server.triton import REPOSITORY, Server, ServerOptions

log = logging.getLogger("serve")


class StopRequest:
    """SIGINT and SIGTERM as requests the main loop acts on: the first drains and stops, the second stops now."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.now = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.asked.is_set():
            self.now.set()
            log.warning("%s again: stopping without waiting for requests in flight", name)
            return
        self.asked.set()
        log.info("%s: finishing the requests in flight, then stopping (%s again to stop at once)", name, name)

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self)


def supervise(server: Server, interval_s: float, stop: StopRequest) -> None:
    """Until a stop is asked: restart the server when it exits unasked or a python stub dies."""
    while not stop.asked.wait(interval_s):
        assert server.process is not None
        code = server.process.poll()
        if code is None:
            dead = server.dead_stubs()
            if not dead:
                continue
            log.error("python stub(s) died for %s; Triton keeps them 'ready' but fails their requests: restarting",
                      ", ".join(dead))  # fmt: skip
            server.stop(drain=False)  # its requests fail anyway
        else:
            log.error("tritonserver exited with %s; restarting", code)
        if stop.asked.is_set():
            return
        server.start(abort=stop.asked)
        if not stop.asked.is_set():
            log.info("restarted and ready")


def serve_cpu(args: argparse.Namespace, endpoints: Endpoints, stop: StopRequest) -> int:
    server = Server(ServerOptions(repository=args.repository, endpoints=endpoints, api_key=args.api_key))
    try:
        server.start(abort=stop.asked)
    except (RuntimeError, TimeoutError) as e:
        log.error("%s", e)
        server.stop(drain=False)
        return 1
    if not stop.asked.is_set():
        log.info(
            "ready: HTTP http://%s  gRPC %s  metrics http://%s:%d/metrics",
            endpoints.http_url, endpoints.grpc_url, endpoints.host, endpoints.metrics,
        )  # fmt: skip
        for tier in (t for t in spec.TIERS if (args.repository / t.model(spec.Step.ENSEMBLE)).is_dir()):
            log.info("  %-12s %s", tier.model(spec.Step.ENSEMBLE), tier.purpose)
        log.info("try: .venv/bin/python -m tools.client <image.jpg> --tier %s   (Ctrl-C stops)", spec.DEFAULT_TIER)
        try:
            supervise(server, args.check_interval, stop)
        except (RuntimeError, TimeoutError) as e:
            log.error("restart failed: %s", e)
    stopped = server.stop(abort=stop.now)
    if stopped.clean:
        log.info("stopped: every accepted request was answered")
        return 0
    log.error("stopped: %d request(s) unfinished, tritonserver exit status %s", stopped.unfinished, stopped.returncode)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", default=spec.HOST, help=f"address to bind (default {spec.HOST}: loopback only)")
    parser.add_argument("--http-port", type=int, default=spec.HTTP_PORT)
    parser.add_argument("--grpc-port", type=int, default=spec.GRPC_PORT)
    parser.add_argument("--metrics-port", type=int, default=spec.METRICS_PORT)
    parser.add_argument("--api-key", help=f"require header {spec.API_KEY_HEADER} on inference and admin APIs")
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument(
        "--variant",
        choices=("auto", *(v.value for v in spec.VARIANTS)),
        default="auto",
        help="gpu: the Docker image on a GPU; cpu: local Triton, cpu configs; auto: gpu when possible",
    )
    parser.add_argument("--image", default="triton-people:latest", help="serving image for the gpu variant")
    parser.add_argument("--check-interval", type=float, default=2.0,
                        help="seconds between health checks of the python stubs (cpu variant)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    endpoints = Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port)

    why_not_gpu = docker.gpu_docker_available() if args.variant != spec.Variant.CPU.value else "--variant cpu"
    if args.variant == spec.Variant.GPU.value and why_not_gpu:
        log.error("cannot serve the gpu variant: %s", why_not_gpu)
        return 2
    if not why_not_gpu:
        problems = docker.plan_problems(args.image, args.repository)
        if problems:
            log.error(
                "the gpu variant needs TensorRT plans built by the image's TensorRT on this GPU:\n  %s\n"
                "Build them with: %s   (or serve the cpu variant: make serve VARIANT=cpu)",
                "\n  ".join(problems),
                " ".join(docker.plan_build_command(args.image, args.repository)),
            )
            return 2
        cmd = docker.docker_command(args.image, endpoints, args.repository, args.api_key)
        log.info("gpu variant: %s", " ".join(cmd))
        return subprocess.call(cmd)

    log.info("cpu variant on the local Triton (%s)", why_not_gpu)
    stop = StopRequest()
    stop.install()
    return serve_cpu(args, endpoints, stop)

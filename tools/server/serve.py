"""`make serve`: start Triton on the model repository and print the endpoints.

With Docker and an NVIDIA GPU it runs the serving image (Dockerfile.triton)
on the default GPU configs. Otherwise it runs the Triton from the
nvidia-pytriton wheel on the cpu variant (`--model-config-name=cpu`). Binds
to 127.0.0.1 unless --host says otherwise; Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from pipelines import manifest, spec
from tools.server.triton import ROOT, Endpoints, Server, ServerOptions, endpoint_args

log = logging.getLogger("serve")


def gpu_docker_available() -> str | None:
    """None when the GPU image can run here, else why not."""
    if not shutil.which("docker"):
        return "no docker command"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine is reachable"
    if not shutil.which("nvidia-smi") or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0:
        return "no NVIDIA GPU is visible"
    return None


def missing_plans(repository: Path) -> list[Path]:
    """TensorRT plans the GPU configs need and the repository lacks."""
    plans = [repository / t.model(spec.Step.DETECTOR) / "1" / "model.plan" for t in spec.TIERS]
    return [p for p in plans if not p.is_file()]


def plan_build_command(image: str, repository: Path) -> list[str]:
    """Build the plans inside the serving image from the ONNX `make export` staged, same person classes."""
    record = manifest.read(repository / spec.TIERS[0].model(spec.Step.DETECTOR) / "1", manifest.Detector)
    classes = ",".join(map(str, record.person_class_ids))
    return [
        "docker", "run", "--rm", "--gpus", "all", "--user", f"{os.getuid()}:{os.getgid()}",
        "-v", f"{ROOT}:/work", "-w", "/work", "--entrypoint", "python3", image,
        "-m", "export", "--detector", ".cache/export/detector.onnx", "--person-classes", classes, "--plans", "yes",
    ]  # fmt: skip


def docker_command(image: str, endpoints: Endpoints, repository: Path, api_key: str | None) -> list[str]:
    """The GPU path: the serving image, model repository read-only, ports published on --host only."""
    e = endpoints
    inner = Endpoints(host="0.0.0.0", http=spec.HTTP_PORT, grpc=spec.GRPC_PORT, metrics=spec.METRICS_PORT)
    server = endpoint_args(ServerOptions(variant=spec.Variant.GPU, endpoints=inner, api_key=api_key))
    return [
        "docker", "run", "--rm", "--init", "--gpus", "all", "--shm-size", "2g",
        "-p", f"{e.host}:{e.http}:{spec.HTTP_PORT}",
        "-p", f"{e.host}:{e.grpc}:{spec.GRPC_PORT}",
        "-p", f"{e.host}:{e.metrics}:{spec.METRICS_PORT}",
        "-v", f"{repository.resolve()}:/models:ro",
        image, *server,
    ]  # fmt: skip


def supervise(server: Server, interval_s: float) -> int:
    """Wait on the server; restart it when it exits unasked or a python stub dies."""
    while True:
        assert server.process is not None
        try:
            code = server.process.wait(timeout=interval_s)
        except subprocess.TimeoutExpired:
            dead = server.dead_stubs()
            if not dead:
                continue
            log.error("python stub(s) died for %s; Triton keeps them 'ready' but fails their requests: restarting",
                      ", ".join(dead))  # fmt: skip
            server.stop(drain=False)  # its requests fail anyway
        else:
            if server.stopping:
                return code
            log.error("tritonserver exited with %s; restarting", code)
        server.start()
        log.info("restarted and ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.serve", description=__doc__)
    parser.add_argument("--host", default=spec.HOST, help="address to bind (default loopback only)")
    parser.add_argument("--http-port", type=int, default=spec.HTTP_PORT)
    parser.add_argument("--grpc-port", type=int, default=spec.GRPC_PORT)
    parser.add_argument("--metrics-port", type=int, default=spec.METRICS_PORT)
    parser.add_argument("--api-key", help="require header x-api-key on inference and admin APIs")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument(
        "--variant",
        choices=("auto", "gpu", "cpu"),
        default="auto",
        help="gpu: the Docker image on a GPU; cpu: local Triton, cpu configs; auto: gpu when possible",
    )
    parser.add_argument("--image", default="triton-people:latest", help="serving image for the gpu variant")
    parser.add_argument("--check-interval", type=float, default=2.0,
                        help="seconds between health checks of the python stubs (cpu variant)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    endpoints = Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port)

    why_not_gpu = gpu_docker_available() if args.variant != "cpu" else "--variant cpu"
    if args.variant == "gpu" and why_not_gpu:
        log.error("cannot serve the gpu variant: %s", why_not_gpu)
        return 2
    if not why_not_gpu and missing_plans(args.repository):
        log.error(
            "the gpu variant needs TensorRT plans built by the image's TensorRT on this GPU; missing: %s. "
            "Build them with: %s   (or serve the cpu variant: make serve VARIANT=cpu)",
            ", ".join(map(str, missing_plans(args.repository))),
            " ".join(plan_build_command(args.image, args.repository)),
        )
        return 2
    if not why_not_gpu:
        cmd = docker_command(args.image, endpoints, args.repository, args.api_key)
        log.info("gpu variant: %s", " ".join(cmd))
        return subprocess.call(cmd)

    log.info("cpu variant on the local Triton (%s)", why_not_gpu)
    server = Server(ServerOptions(repository=args.repository, endpoints=endpoints, api_key=args.api_key))
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.start()
        log.info(
            "ready: HTTP http://%s  gRPC %s  metrics http://%s:%d/metrics",
            endpoints.http_url,
            endpoints.grpc_url,
            endpoints.host,
            endpoints.metrics,
        )
        for tier in spec.TIERS:
            log.info("  %-12s %s", tier.model(spec.Step.ENSEMBLE), tier.purpose)
        log.info("try: .venv/bin/python tools/client.py <image.jpg> --tier %s   (Ctrl-C stops)", spec.DEFAULT_TIER)
        return supervise(server, args.check_interval)
    except KeyboardInterrupt:
        log.info("stopping")
        return server.stop() or 0
    except (RuntimeError, TimeoutError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""The gpu variant of `make serve`: the serving image (Dockerfile.triton) under Docker on an NVIDIA GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from export import tensorrt_plan
from pipelines import spec
from pipelines.paths import ROOT
from tools.server import health
from tools.server.endpoints import Endpoints
from tools.server.triton import ServerOptions, endpoint_args


def gpu_docker_available() -> str | None:
    """None when the GPU image can run here, else why not."""
    if not shutil.which("docker"):
        return "no docker command"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine is reachable"
    if not shutil.which("nvidia-smi") or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0:
        return "no NVIDIA GPU is visible"
    return None


def plan_build_command(image: str, repository: Path) -> list[str]:
    """Build every plan with the image's trtexec on this GPU, from the ONNX `make export` left in the repository."""
    return [
        "docker", "run", "--rm", "--gpus", "all", "--user", f"{os.getuid()}:{os.getgid()}",
        "-v", f"{repository.resolve()}:/models", "-v", f"{ROOT / '.cache' / 'export'}:/cache",
        "--entrypoint", "python3", image,
        "-m", "export.tensorrt_plan", "--repository", "/models", "--cache", "/cache", "build",
    ]  # fmt: skip


def plan_problems(image: str, repository: Path) -> list[str]:
    """Why the repository's plans cannot be served by `image` on this machine's GPUs; empty when they can.

    The image reports its TensorRT version and the GPUs it sees; each plan's manifest must match them
    (a plan only loads with the TensorRT and on the GPU type it was built with).
    """
    asked = subprocess.run(
        ["docker", "run", "--rm", "--gpus", "all", "--entrypoint", "python3", image, "-m", "export.tensorrt_plan",
         "target"], capture_output=True, text=True,
    )  # fmt: skip
    if asked.returncode != 0:
        return [f"cannot read the image's TensorRT and GPUs ({image}): {asked.stderr.strip()[-500:]}"]
    return tensorrt_plan.mismatches(repository, tensorrt_plan.Target.from_json(asked.stdout))


def docker_command(image: str, endpoints: Endpoints, repository: Path, api_key: str | None) -> list[str]:
    """The GPU path: the serving image, model repository read-only, ports published on --host only."""
    e = endpoints
    inner = Endpoints(host="0.0.0.0", http=spec.HTTP_PORT, grpc=spec.GRPC_PORT, metrics=spec.METRICS_PORT)
    gpus = max(health.gpu_count(), 1)  # what `docker run --gpus all` hands the container; at least one
    options = ServerOptions(variant=spec.Variant.GPU, endpoints=inner, api_key=api_key, gpus=gpus)
    server = endpoint_args(options)
    return [
        "docker", "run", "--rm", "--init", "--gpus", "all", "--shm-size", "2g",
        "-p", f"{e.host}:{e.http}:{spec.HTTP_PORT}",
        "-p", f"{e.host}:{e.grpc}:{spec.GRPC_PORT}",
        "-p", f"{e.host}:{e.metrics}:{spec.METRICS_PORT}",
        "-v", f"{repository.resolve()}:/models:ro",
        image, *server,
    ]  # fmt: skip

"""The gpu variant of `make serve`: the serving image (Dockerfile.triton) under Docker on an NVIDIA GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pipelines import manifest, spec
from tools.server.triton import ROOT, Endpoints, ServerOptions, endpoint_args


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

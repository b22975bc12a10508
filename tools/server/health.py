"""Deep readiness: Triton ready *and* every python-backend stub process alive.

Triton 2.51 keeps reporting a model ready after its python stub died (seen
here: requests then fail with "Stub process ... is not healthy" and the stub is
not restarted). This check counts the live stubs of each python model against
the instances its config asks for, so `make serve` can restart the server and
a container orchestrator can take the pod out of service
(`python -m tools.server.health`, exit 0 healthy, 1 not).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from pipelines import spec

STUB = "triton_python_backend_stub"


def gpu_count() -> int:
    """GPUs nvidia-smi lists on this machine; 0 without nvidia-smi or when it fails."""
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return len(out.stdout.splitlines()) if out.returncode == 0 else 0


def expected_stubs(repository: Path, config_name: str | None) -> Counter[str]:
    """Python-backend instances per model, as the served configs ask for."""
    expected: Counter[str] = Counter()
    gpus = None
    for model in sorted(p for p in repository.iterdir() if p.is_dir()):
        path = model / "configs" / f"{config_name}.pbtxt" if config_name else model / "config.pbtxt"
        if not path.is_file():
            path = model / "config.pbtxt"
        if not path.is_file():
            continue
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        if config.backend != "python":
            continue
        count = 0
        for group in config.instance_group or [mc.ModelInstanceGroup(count=1)]:
            per_device = group.count or 1
            if group.kind == mc.ModelInstanceGroup.KIND_GPU:
                gpus = gpu_count() if gpus is None else gpus
                per_device *= len(group.gpus) or max(gpus, 1)
            count += per_device
        expected[model.name] = count
    return expected


@dataclass(frozen=True)
class Stub:
    """A live python stub under the server: its process, model and command line (stub, model.py, region, ...)."""

    process: psutil.Process
    model: str
    cmdline: list[str]


def stubs(server: psutil.Process) -> list[Stub]:
    """The server's live python stubs (the model read from the stub's .../<model>/<version>/model.py path)."""
    try:
        children = server.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            cmdline = child.cmdline()
            if child.status() == psutil.STATUS_ZOMBIE or len(cmdline) < 2 or not cmdline[0].endswith(STUB):
                continue
        except psutil.Error:
            continue
        model_py = Path(cmdline[1])
        if len(model_py.parts) >= 3:
            found.append(Stub(child, model_py.parent.parent.name, cmdline))
    return found


def live_stubs(server_pid: int) -> Counter[str]:
    """Live stub processes under the server, per model."""
    try:
        return Counter(stub.model for stub in stubs(psutil.Process(server_pid)))
    except psutil.NoSuchProcess:
        return Counter()


def dead_stubs(server_pid: int, expected: Counter[str]) -> list[str]:
    """Models with fewer live stubs than configured."""
    live = live_stubs(server_pid)
    return sorted(m for m, n in expected.items() if live[m] < n)


def triton_ready(http_url: str, timeout_s: float = 10.0) -> bool:
    """Triton's readiness. A busy machine can take seconds to answer: a slow answer is not a "no"."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=timeout_s) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _server_pid() -> int | None:
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and Path(cmdline[0]).name == "tritonserver":
            return process.pid
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.server.health", description=__doc__)
    parser.add_argument("--url", default=f"{spec.HOST}:{spec.HTTP_PORT}", help="Triton's HTTP address")
    parser.add_argument("--repository", type=Path, default=Path("/models"))
    parser.add_argument("--model-config-name", default=None, help="cpu for the cpu variant")
    args = parser.parse_args(argv)
    if not triton_ready(args.url):
        print("not ready: Triton's /v2/health/ready failed", file=sys.stderr)
        return 1
    pid = _server_pid()
    if pid is None:
        print("not ready: no tritonserver process", file=sys.stderr)
        return 1
    dead = dead_stubs(pid, expected_stubs(args.repository, args.model_config_name))
    if dead:
        print(f"not ready: python stub(s) dead for {', '.join(dead)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

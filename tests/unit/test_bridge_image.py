"""The bridge's image (Dockerfile.bridge) installs requirements-bridge.txt only: enough for every module the bridge
imports, at requirements.txt's versions. Docker does not run here; this checks what the build depends on."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from export.serving_image import pinned_version, pins
from pipelines import paths
from tests.unit.test_k8s import TOOLS, tool

ROOT = paths.ROOT
OURS = ("pipelines", "export", "tools")
ENTRY_POINTS = ("tools.bridge.__main__", "tools.bridge.publish", "tools.bridge.events")
# The import name of each distribution the bridge needs (where it differs from the distribution's name).
IMPORTS = {"opencv-python-headless": "cv2", "tritonclient": "tritonclient", "protobuf": "google",
           "prometheus-client": "prometheus_client", "confluent-kafka": "confluent_kafka"}  # fmt: skip


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    return Path(spec.origin)


def closure() -> tuple[set[str], set[str]]:
    """(our modules, third-party top-level packages) the entry points import, transitively, at module level."""
    ours, third, todo = set(), set(), list(ENTRY_POINTS)
    while todo:
        module = todo.pop()
        if module in ours:
            continue
        ours.add(module)
        for node in ast.walk(ast.parse(_source(module).read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in OURS:
                    if importlib.util.find_spec(name.rsplit(".", 1)[0] if name.count(".") else name) is None:
                        continue
                    candidate = name if _is_module(name) else name.rsplit(".", 1)[0]
                    todo.append(candidate)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third.add(top)
    return ours, third


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_the_bridge_imports_only_what_its_image_installs() -> None:
    ours, third = closure()
    assert "tools.bridge.pipeline" in ours, "the closure missed the bridge itself"
    installed = {IMPORTS.get(name, name.replace("-", "_")) for name in pins(ROOT / "requirements-bridge.txt")}
    assert third <= installed, f"imported by the bridge but not in requirements-bridge.txt: {third - installed}"
    assert not {"torch", "ultralytics", "onnxruntime", "nvidia"} & third, "the server's stack leaked into the bridge"


def test_the_bridge_image_runs_the_tests_versions() -> None:
    local, bridge = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-bridge.txt")
    for name, requirement in bridge.items():
        assert pinned_version(requirement), f"requirements-bridge.txt must pin {name} exactly"
        ours = local.get("opencv-python" if name == "opencv-python-headless" else name)
        if ours is not None:
            assert Requirement(str(ours)).specifier.contains(pinned_version(requirement) or ""), (name, str(ours))
    text = (ROOT / "Dockerfile.bridge").read_text()
    assert "-r requirements-bridge.txt" in text and 'ENTRYPOINT ["python3", "-m", "tools.bridge"]' in text


def test_checkov_finds_nothing_in_the_bridge_dockerfile() -> None:
    checkov = tool(TOOLS / "checkov", "checkov")
    cmd = [checkov, "--framework", "dockerfile", "--skip-download", "--output", "json", "--file",
           str(ROOT / "Dockerfile.bridge")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LOG_LEVEL": "ERROR"})
    report = json.loads(out.stdout)
    failed = [c["check_id"] for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 0 and not failed, failed

"""deploy/bridge: the bridge's Deployment runs the CLI with options it accepts, KEDA scales it on the group's lag;
built by kustomize, valid offline, scanned by checkov (the tools and their skips as in test_k8s.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import spec
from tests.unit.test_k8s import APP, K8S_VERSION, TOOLS, container, kustomize, only, pod, tool, waivers
from tools import k8s
from tools.bridge.options import parse

BRIDGE = k8s.DEPLOY / "bridge"
CRDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    return kustomize(BRIDGE)


def cli_args(c: dict[str, Any], secret_dir: Path) -> list[str]:
    """The container's args with Kubernetes' $(VAR) expansion applied and the Secret's files under `secret_dir`."""
    values = {e["name"]: e["value"] for e in c["env"]}
    (mount,) = (m["mountPath"] for m in c["volumeMounts"] if m["name"] == "secret")
    secret = yaml.safe_load((BRIDGE / "secret.example.yaml").read_text())["stringData"]
    for key, value in secret.items():
        (secret_dir / key).write_text(value)
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in c["args"]]
    return [a.replace(mount, str(secret_dir)) for a in args]


def test_the_deployment_runs_the_bridge_with_options_it_accepts(built: list[dict[str, Any]], tmp_path: Path) -> None:
    c = container(built, "bridge")
    assert c["command"] == ["python", "-m", "tools.bridge"]
    options, _ = parse(cli_args(c, tmp_path))  # exits (fails the test) on an option the CLI does not have
    assert options.redis == "redis://:change-me@redis:6379/0", "the URL comes from the Secret's file"
    assert not any("change-me" in a for a in c["args"]), "no password on the command line"
    assert options.url == f"{APP}:{spec.GRPC_PORT}", "the server's Service and gRPC port"
    assert options.metrics_address == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": options.metrics_port}
    volume = next(v for v in pod(built)["volumes"] if v["name"] == "secret")
    assert volume["secret"]["secretName"] == "people-bridge"
    assert pod(built)["terminationGracePeriodSeconds"] > options.stop_timeout_s, "SIGTERM finishes before SIGKILL"
    assert "replicas" not in only(built, "Deployment")["spec"], "the ScaledObject's HPA owns the replica count"
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/metrics", "port": "metrics"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert pod(built)["automountServiceAccountToken"] is False


def test_keda_scales_on_the_groups_lag(built: list[dict[str, Any]], tmp_path: Path) -> None:
    """A redis-streams trigger in lag mode (Redis 7's XINFO GROUPS lag) on the stream and group the bridges read."""
    options, _ = parse(cli_args(container(built, "bridge"), tmp_path))
    scaled = only(built, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {"name": only(built, "Deployment")["metadata"]["name"]}
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"], "at least one bridge keeps draining"
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis-streams"
    assert (meta["stream"], meta["consumerGroup"]) == (options.streams[0], options.group)
    assert int(meta["lagCount"]) > 0 and not {"pendingEntriesCount", "streamLength"} & set(meta), "lag mode"
    auth = only(built, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {s["name"] for s in auth["spec"]["secretTargetRef"]} == {"people-bridge"}
    secret = yaml.safe_load((BRIDGE / "secret.example.yaml").read_text())
    assert {s["key"] for s in auth["spec"]["secretTargetRef"]} | {"REDIS_URL"} == set(secret["stringData"])


def test_builtin_kinds_validate_strictly(built: list[dict[str, Any]], tmp_path: Path) -> None:
    validate = tool(TOOLS / "kubernetes-validate", "kubernetes-validate")
    kinds = {(d["apiVersion"], d["kind"]) for d in built}
    assert {k for k in kinds if k[0] in {a for a, _ in CRDS}} == CRDS, "KEDA's kinds are checked above"
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump_all([d for d in built if (d["apiVersion"], d["kind"]) not in CRDS]))
    cmd = [validate, "--kubernetes-version", K8S_VERSION, "--strict", "--quiet", str(path),
           str(BRIDGE / "secret.example.yaml")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, f"kubernetes-validate failed:\n{out.stdout}{out.stderr}"


def test_checkov_finds_nothing_unwaived(built: list[dict[str, Any]], tmp_path: Path) -> None:
    checkov = tool(TOOLS / "checkov", "checkov")
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump_all(built, sort_keys=False))
    cmd = [checkov, "--framework", "kubernetes", "--skip-download", "--output", "json", "--file", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LOG_LEVEL": "ERROR"})
    report = json.loads(out.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert not failed, f"checkov findings to fix or waive (annotations in deploy/bridge/deployment.yaml): {failed}"
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == set(waivers(built)), "a waiver checkov did not need is stale"

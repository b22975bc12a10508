"""The Kubernetes manifests (deploy/): rendered from the spec, built by kustomize, valid offline, scanned by checkov.

No cluster runs here. kustomize is `kubectl kustomize` (kubectl 1.32 on these machines);
kubernetes-validate and checkov live in .venv-deploy (`make test` installs it). Where a tool is
absent the tests that need it skip, except in CI (CI set), where they fail: `make test` must run them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import render, spec
from pipelines.spec import Step
from tools import k8s
from tools.server import triton as tritonserver

ROOT = k8s.ROOT
TOOLS = ROOT / ".venv-deploy" / "bin"
BUILT_IN_GROUPS = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1")
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
S3_URI = "s3://example-bucket/people/l4-trt/v3"


def tool(path: Path | str | None, what: str) -> str:
    """The tool's path; a skip naming what is missing, or a failure in CI where `make test` installs it."""
    if path and Path(path).is_file():
        return str(path)
    reason = f"{what} is not installed here ({path or 'not on PATH'})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; `make test` must provide it")
    pytest.skip(f"{reason}; `make test` installs it (make .venv-deploy/.installed)")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = tool(shutil.which("kubectl"), "kubectl (with kustomize)")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    assert out.returncode == 0, f"kustomize failed for {directory}:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def params() -> k8s.Params:
    return k8s.Params.resolve()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, params: k8s.Params) -> dict[str, list[dict[str, Any]]]:
    """Each overlay as kustomize builds it, plus the gpu overlay rendered for an s3:// model repository."""
    s3 = tmp_path_factory.mktemp("deploy-s3")
    assert k8s.main(["--deploy", str(s3), "--model-repo-uri", S3_URI]) == 0
    out = {v.name: kustomize(k8s.DEPLOY / "overlays" / v.name) for v in k8s.VARIANTS}
    out["gpu-s3"] = kustomize(s3 / "overlays" / "gpu")
    return out


@pytest.fixture(scope="module")
def built_files(tmp_path_factory: pytest.TempPathFactory, built: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("built")
    paths = {}
    for name, docs in built.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return paths


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]], name: str, init: bool = False) -> dict[str, Any]:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["initContainers" if init else "containers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def gib(quantity: str) -> str:
    return quantity.removesuffix("Gi")


def each_variant(test: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.parametrize("variant", k8s.VARIANTS, ids=[v.name for v in k8s.VARIANTS])(test)


# --- Rendering ----------------------------------------------------------------------------


def test_committed_deploy_equals_a_fresh_render(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="k8s"):
        assert k8s.main(["--check"]) == 0, f"deploy/ differs from a fresh render:\n{caplog.text}"


def test_check_reports_drift(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--check fails on an edited, a missing and a stray file, and a render repairs all three."""
    args = ["--deploy", str(tmp_path)]
    assert k8s.main(args) == 0
    assert k8s.main([*args, "--check"]) == 0, "a fresh render does not check clean"
    hpa = tmp_path / "overlays" / "cpu" / "hpa.yaml"
    hpa.write_text(hpa.read_text().replace("maxReplicas:", "maxReplicas: 99 #"))
    (tmp_path / "base" / "service.yaml").unlink()
    (tmp_path / "base" / "stray.yaml").write_text("kind: ConfigMap\n")
    (tmp_path / "overlays" / "prod").mkdir()
    (tmp_path / "overlays" / "prod" / "kustomization.yaml").write_text("resources: [../gpu]\n")
    with caplog.at_level(logging.INFO, logger="k8s"):
        assert k8s.main([*args, "--check"]) == 1, "--check missed the drift"
    for name in ("overlays/cpu/hpa.yaml", "base/service.yaml", "base/stray.yaml"):
        assert name in caplog.text, f"--check did not name {name}:\n{caplog.text}"
    assert "prod" not in caplog.text, "a user's own overlay is not the renderer's business"
    assert k8s.main(args) == 0 and k8s.main([*args, "--check"]) == 0
    assert (tmp_path / "overlays" / "prod" / "kustomization.yaml").is_file(), "render deleted a user's overlay"


def test_readme_documents_the_rendered_thresholds() -> None:
    readme = k8s.README.read_text()
    assert f"{k8s.TABLE_BEGIN}\n{k8s.threshold_table()}{k8s.TABLE_END}" in readme


def test_readme_prose_numbers_are_the_rendered_ones() -> None:
    """The README's Kubernetes section repeats a few numbers in prose; they must be the manifests' own."""
    text = k8s.README.read_text()
    assert k8s.queue_promql(spec.tier("streaming"), matchers="", group_by="pod") in text
    readme = " ".join(text.split())
    exit_timeout = int(k8s.Dockerfile.read().flag("exit-timeout-secs"))
    gpu, cpu = k8s.VARIANTS
    for phrase in (
        f"({k8s.MIN_REPLICAS} to {k8s.MAX_REPLICAS} pods)",
        f"for up to {k8s.STARTUP_BUDGET_S // 60} minutes",
        f"a {k8s.PRESTOP_SLEEP_S} s preStop sleep",
        f"within its {exit_timeout} s exit timeout",
        f"the grace period is {k8s.PRESTOP_SLEEP_S + exit_timeout + k8s.SHUTDOWN_MARGIN_S} s",
        f"memory-backed emptyDir of {gib(k8s.shm_size())} GiB",
        f"gpu {gpu.cpu} CPU / {gib(gpu.memory)} GiB, cpu {cpu.cpu} CPU / {gib(cpu.memory)} GiB",
        f"1/{round(1 / k8s.SCALE_OUT_FRACTION)} of its queue timeout",
        f"against Kubernetes {k8s.K8S_VERSION}",
        f"--exit-timeout-secs={exit_timeout}",
    ):
        assert phrase in readme, f"README's Kubernetes section does not say {phrase!r}"


def test_makefile_variables_resolve_as_make_does(monkeypatch: pytest.MonkeyPatch, params: k8s.Params) -> None:
    """The image comes from the Makefile's IMAGE (built on TRITON_IMAGE_TAG); environment overrides win, as in make."""
    tag = k8s.makefile_variables(("TRITON_IMAGE_TAG",))["TRITON_IMAGE_TAG"]
    assert params.image.endswith(f":{tag}"), f"IMAGE={params.image} is not tagged with TRITON_IMAGE_TAG={tag}"
    monkeypatch.setenv("K8S_NAMESPACE", "elsewhere")
    monkeypatch.setenv("TRITON_IMAGE_TAG", "99.01-py3")
    resolved = k8s.Params.resolve()
    assert resolved.namespace == "elsewhere" and resolved.image.endswith(":99.01-py3")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("triton-people:25.10-py3", k8s.ImageRef("triton-people", "25.10-py3")),
        ("registry:5000/ml/triton-people", k8s.ImageRef("registry:5000/ml/triton-people")),
        ("registry:5000/ml/tp:1@sha256:abc", k8s.ImageRef("registry:5000/ml/tp", "1", "sha256:abc")),
        ("reg.io/tp@sha256:abc", k8s.ImageRef("reg.io/tp", None, "sha256:abc")),
    ],
)
def test_image_refs_split_for_kustomize(ref: str, expected: k8s.ImageRef) -> None:
    assert k8s.ImageRef.parse(ref) == expected


def test_model_repository_uri() -> None:
    assert k8s.ModelSource.parse("pvc://models/l4/v3") == k8s.ModelSource("pvc", "models", "l4/v3")
    assert k8s.ModelSource.parse("pvc://models") == k8s.ModelSource("pvc", "models", "")
    assert k8s.ModelSource.parse(S3_URI) == k8s.ModelSource("s3", S3_URI)
    for bad in ("http://host/models", "pvc://", "s3://", "/models", "models"):
        with pytest.raises(ValueError, match="MODEL_REPO_URI"):
            k8s.ModelSource.parse(bad)


# --- One source of truth: ports, flags, paths, image ----------------------------------------


def test_image_entrypoint_matches_the_local_server() -> None:
    """Dockerfile.triton's ENTRYPOINT has the same fixed flags as tools/tritonserver.command, and the spec's ports."""
    docker = k8s.Dockerfile.read()
    options = tritonserver.ServerOptions(repository=Path(docker.flag("model-repository")))
    per_deployment = {a.partition("=")[0] for a in tritonserver.endpoint_args(options)} | {"--backend-directory"}
    fixed = [a for a in tritonserver.command(options)[1:] if a.partition("=")[0] not in per_deployment]
    assert list(docker.entrypoint) == ["tritonserver", *fixed]
    assert set(docker.exposed) == {spec.HTTP_PORT, spec.GRPC_PORT, spec.METRICS_PORT}


@each_variant
def test_deployment_matches_spec_makefile_and_image(
    variant: k8s.Variant, built: dict[str, list[dict[str, Any]]], params: k8s.Params
) -> None:
    docs = built[variant.name]
    docker = k8s.Dockerfile.read()
    server = container(docs, k8s.CONTAINER)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert server["image"] == params.image
    assert container(docs, k8s.INIT_CONTAINER, init=True)["image"] == params.image  # pvc:// copies with the image
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == k8s.PORT_NAMES
    assert k8s.PORT_NAMES == {"http": spec.HTTP_PORT, "grpc": spec.GRPC_PORT, "metrics": spec.METRICS_PORT}

    args, command = server["args"], server["command"]
    binary = command[-1] if command[:2] == ["/bin/sh", "-c"] else command[0]  # a wrapper draws the pod's key
    assert [binary, *args[: len(docker.entrypoint) - 1]] == list(docker.entrypoint)
    assert not re.search(r'x-api-key=(?!"\$key")', "\n".join([*command, *args])), "a key written in the manifest"
    local = tritonserver.endpoint_args(tritonserver.ServerOptions(variant=spec.Variant.GPU))
    for flag in (a.rpartition("=")[0] for a in local if a.startswith(k8s.KEYED_FLAGS)):
        assert f'{flag}="$key"' in command[2] and 'exec tritonserver "$@"' in command[2]
    for flag in ("--model-control-mode=none", "--strict-readiness=true", "--exit-on-error=true"):
        assert flag in args
    for name, port in (("http", spec.HTTP_PORT), ("grpc", spec.GRPC_PORT), ("metrics", spec.METRICS_PORT)):
        assert f"--{name}-port={port}" in args and f"--{name}-address=0.0.0.0" in args
    config_flags = [a for a in args if a.startswith("--model-config-name")]
    assert config_flags == ([f"--model-config-name={variant.config_name}"] if variant.config_name else [])
    assert variant.config_name in (None, spec.Variant.CPU.value)
    assert render.CONFIG_PATHS[spec.Variant.CPU].stem == spec.Variant.CPU.config_name

    # The model repository: written by the init container into a pod-local volume, read-only for Triton.
    models = docker.flag("model-repository")
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts[models].get("readOnly") is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[models]["name"]]
    init = container(docs, k8s.INIT_CONTAINER, init=True)
    source = k8s.ModelSource.parse(params.model_repo_uri)
    assert env(init)["MODEL_REPO_URI"] == params.model_repo_uri
    assert volumes["model-source"]["persistentVolumeClaim"] == {"claimName": source.location, "readOnly": True}
    required = env(init)["REQUIRED_FILES"].split()
    for tier in spec.TIERS:
        assert f"{tier.model(Step.DETECTOR)}/1/{variant.engine_file}" in required
        assert (ROOT / "model_repository" / tier.model(Step.ENSEMBLE) / "config.pbtxt").is_file()
    if variant.name == spec.Variant.GPU.value:  # the GPU configs name the engine file the init container checks
        config = (ROOT / "model_repository" / spec.TIERS[0].model(Step.DETECTOR) / "config.pbtxt").read_text()
        assert f'default_model_filename: "{variant.engine_file}"' in config

    # Python backend shared memory: a memory-backed /dev/shm of the size `make serve` gives the container.
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": k8s.shm_size()} and k8s.shm_size() == "2Gi"


@each_variant
def test_probes_and_shutdown(variant: k8s.Variant, built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built[variant.name]
    server = container(docs, k8s.CONTAINER)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    for probe in ("startupProbe", "readinessProbe"):
        assert server[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "engine loads take minutes"
    assert "initialDelaySeconds" not in server["livenessProbe"], "the startup probe gates liveness"
    sleep = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    exit_timeout = int(k8s.Dockerfile.read().flag("exit-timeout-secs"))
    assert sleep > 0 and pod["terminationGracePeriodSeconds"] > sleep + exit_timeout


@each_variant
def test_pod_security_and_resources(variant: k8s.Variant, built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built[variant.name]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    uid = k8s.Dockerfile.read().uid
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    assert pod["automountServiceAccountToken"] is False
    for c in (*pod["initContainers"], *pod["containers"]):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsUser"] == uid
        assert c["resources"]["requests"] and c["resources"]["limits"]
    server = container(docs, k8s.CONTAINER)
    limits = server["resources"]["limits"]
    assert limits == server["resources"]["requests"], "Guaranteed QoS"
    if variant.gpus:
        assert limits["nvidia.com/gpu"] == "1" and pod["nodeSelector"] and pod["tolerations"]
    else:
        assert "nvidia.com/gpu" not in limits and "nodeSelector" not in pod
        assert limits["cpu"] == str(spec.CPU_THREADS), "the cpu configs are sized for spec.CPU_THREADS cores"
    namespace = only(docs, "Namespace")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace")


def test_services_pdb_and_servicemonitor(built: dict[str, list[dict[str, Any]]]) -> None:
    """Service ports are the spec's; the ServiceMonitor (a CRD: checked here) scrapes the metrics port once per pod."""
    docs = built["gpu"]
    service = only(docs, "Service", k8s.APP)
    headless = only(docs, "Service", f"{k8s.APP}-headless")
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {name: (port, name) for name, port in k8s.PORT_NAMES.items()}
    assert headless["spec"]["clusterIP"] == "None" and "metrics" not in {p["name"] for p in headless["spec"]["ports"]}
    for s in (service, headless):
        assert s["spec"]["selector"].items() <= pod_labels.items()
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items() and pdb["spec"]["maxUnavailable"] == 1

    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert not selector.items() <= headless["metadata"]["labels"].items(), "two Services would scrape each pod twice"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert ports[endpoint["port"]][0] == spec.METRICS_PORT


@each_variant
def test_autoscaling_on_queue_time(variant: k8s.Variant, built: dict[str, list[dict[str, Any]]]) -> None:
    """One HPA, one per-pod queue-time metric per tier served by the adapter rules; streaming scales first."""
    docs = built[variant.name]
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": k8s.APP}
    assert "replicas" not in only(docs, "Deployment")["spec"], "the HPA owns the replica count"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    targets = {m["pods"]["metric"]["name"]: int(m["pods"]["target"]["averageValue"]) for m in hpa["spec"]["metrics"]}
    assert targets == {k8s.metric_name(t): k8s.queue_target_us(t, variant) for t in spec.TIERS}
    ordered = [targets[k8s.metric_name(spec.tier(name))] for name in ("streaming", "balanced", "batch")]
    assert ordered == sorted(ordered) and len(set(ordered)) == 3, f"streaming must scale before batch: {ordered}"
    for t in spec.TIERS:
        assert 0 < targets[k8s.metric_name(t)] < k8s.batching(t, variant).queue_timeout_us


def test_prometheus_adapter_examples_serve_the_hpa_metrics() -> None:
    configmap = yaml.safe_load((k8s.DEPLOY / "examples" / "prometheus-adapter-configmap.yaml").read_text())
    rules = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    values = yaml.safe_load((k8s.DEPLOY / "examples" / "prometheus-adapter-values.yaml").read_text())
    assert values["rules"]["custom"] == rules
    assert [r["name"]["as"] for r in rules] == [k8s.metric_name(t) for t in spec.TIERS]
    repository = ROOT / "model_repository"
    for rule, tier in zip(rules, spec.TIERS, strict=True):
        query = rule["metricsQuery"]
        assert "nv_inference_queue_duration_us{<<.LabelMatchers>>" in query and "by (<<.GroupBy>>)" in query
        assert f'nv_inference_request_success{{<<.LabelMatchers>>,model="{tier.model(Step.ENSEMBLE)}"}}' in query
        assert f'model=~"({"|".join(s.value for s in spec.MODELS)})_{tier.name}"' in query
        for step in (*spec.MODELS, Step.ENSEMBLE):  # every model the query names is served
            assert (repository / tier.model(step) / "config.pbtxt").is_file()
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


# --- Offline validation and static analysis -------------------------------------------------


def test_builtin_kinds_validate_strictly(built: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """kubernetes-validate --strict against the pinned Kubernetes version; CRDs are checked by the tests above."""
    validate = tool(TOOLS / "kubernetes-validate", "kubernetes-validate")
    files = []
    for name, docs in built.items():
        kinds = {(d["apiVersion"], d["kind"]) for d in docs}
        assert {k for k in kinds if k[0] not in BUILT_IN_GROUPS} == CRDS, f"{name}: a new CRD needs its own checks"
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump_all([d for d in docs if (d["apiVersion"], d["kind"]) not in CRDS]))
    files.append(k8s.DEPLOY / "examples" / "prometheus-adapter-configmap.yaml")
    cmd = [validate, "--kubernetes-version", k8s.K8S_VERSION, "--strict", "--quiet", *map(str, files)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, f"kubernetes-validate failed:\n{out.stdout}{out.stderr}"
    # Strict means strict: an unknown field fails (so the pass above means something).
    bad = tmp_path / "bad.yaml"
    deployment = only(built["gpu"], "Deployment")
    bad.write_text(yaml.safe_dump({**deployment, "spec": {**deployment["spec"], "replica": 2}}))
    out = subprocess.run([*cmd[:-len(files)], str(bad)], capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0 and "replica" in out.stdout + out.stderr


def test_checkov_finds_nothing_unwaived(built_files: dict[str, Path]) -> None:
    """checkov on every built overlay and Dockerfile.triton: no failed check; each waiver has its written reason."""
    checkov = tool(TOOLS / "checkov", "checkov")
    files = [*built_files.values(), k8s.DOCKERFILE]
    cmd = [checkov, "--framework", "kubernetes", "dockerfile", "--skip-download", "--output", "json"]
    cmd += [arg for f in files for arg in ("--file", str(f))]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "LOG_LEVEL": "ERROR"})
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, out.stderr[-2000:]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, f"checkov findings to fix or waive (tools/k8s.py WAIVERS): {failed}"
    assert all(r["summary"]["passed"] > 0 for r in reports)
    reasons = {check: reason for waivers in k8s.WAIVERS.values() for check, reason in waivers.items()}
    for r in reports:
        for c in r["results"]["skipped_checks"]:
            assert c["check_result"]["suppress_comment"] == reasons[c["check_id"]]
    assert out.returncode == 0, out.stderr[-2000:]


def test_waivers_are_written_so_checkov_reads_them() -> None:
    """checkov splits `ID=reason` at every '='; a reason containing one would break the scan."""
    for waivers in k8s.WAIVERS.values():
        for check, reason in waivers.items():
            assert check.startswith("CKV") and len(reason) > 20 and "=" not in reason


def test_s3_model_repository(built: dict[str, list[dict[str, Any]]], params: k8s.Params) -> None:
    docs = built["gpu-s3"]
    init = container(docs, k8s.INIT_CONTAINER, init=True)
    assert init["image"] == params.sync_image and ":" in params.sync_image.rsplit("/", 1)[-1], "pin the sync image"
    assert "aws s3 sync" in init["command"][-1] and env(init)["MODEL_REPO_URI"] == S3_URI
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert "model-source" not in {v["name"] for v in pod["volumes"]}
    assert container(docs, k8s.CONTAINER)["image"] == params.image

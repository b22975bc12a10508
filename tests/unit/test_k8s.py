"""The Kubernetes manifests (deploy/): static YAML whose facts match the spec, the image and the Makefile;
generated blocks up to date; built by kustomize, valid offline, scanned by checkov.

No cluster runs here. kustomize is `kubectl kustomize` (kubectl 1.32 on these machines);
kubernetes-validate and checkov live in .venv-deploy (`make test` installs it). Where a tool is
absent the tests that need it skip, except in CI (CI set), where they fail: `make test` must run them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from export.tensorrt_plan import Gpu, Target
from pipelines import manifest, spec
from pipelines.spec import Step, Variant
from tests.unit import test_tensorrt_plan as exported_plans
from tools import k8s, render
from tools.server import docker as docker_serve
from tools.server import triton as tritonserver

ROOT = k8s.ROOT
DOCKERFILE = ROOT / "Dockerfile.triton"
TOOLS = ROOT / ".venv-deploy" / "bin"
K8S_VERSION = "1.32.0"  # the schemas the manifests are validated against (kubectl here is 1.32)
BUILT_IN_GROUPS = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1")
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
APP, SERVER, FETCH, CHECK = "triton-people", "tritonserver", "fetch-models", "check-models"
PORTS = {"http": spec.HTTP_PORT, "grpc": spec.GRPC_PORT, "metrics": spec.METRICS_PORT}
# The readiness probe is Triton's /v2/health/ready under --strict-readiness. It fails for a dead
# python stub only from Triton 26.04 (core PR #473, commit 53fc26e, "fix: /v2/health/ready returns
# 200 when Python backend stub is dead", server issue #8604; on core r26.04, absent on r26.03).
# The model-level /v2/models/<m>/ready reflects it from 25.12 (python_backend PR #423, core PR #461),
# which a Kubernetes httpGet probe could only use for one model.
READY_REFLECTS_DEAD_STUB = (26, 4)


def makefile_variable(name: str) -> str:
    """A variable as make resolves it (defaults, `make X=` and environment alike)."""
    rule = "print-%: ; @echo '$($*)'"
    cmd = ["make", "-s", "--no-print-directory", "-C", str(ROOT), f"--eval={rule}", f"print-{name}"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


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


@dataclass(frozen=True)
class Dockerfile:
    """What the serving image fixes: its ENTRYPOINT, its non-root uid and its ports."""

    entrypoint: tuple[str, ...]
    uid: int
    exposed: tuple[int, ...]

    @classmethod
    def read(cls) -> Dockerfile:
        text = DOCKERFILE.read_text().replace("\\\n", " ")
        entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
        uid = re.search(r"useradd\b.*--uid\s+(\d+)", text)
        exposed = re.search(r"^EXPOSE\s+(.+)$", text, re.M)
        assert entrypoint and uid and exposed, "expected an exec-form ENTRYPOINT, `useradd --uid N` and EXPOSE"
        ports = tuple(int(p.split("/")[0]) for p in exposed.group(1).split())
        return cls(tuple(json.loads(entrypoint.group(1))), int(uid.group(1)), ports)

    def flag(self, name: str) -> str:
        return next(a.partition("=")[2] for a in self.entrypoint if a.startswith(f"--{name}="))


@pytest.fixture(scope="module")
def image() -> str:
    return makefile_variable("IMAGE")


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    """Each overlay as kustomize builds it, and the example of an s3:// model repository."""
    out = {v.value: kustomize(k8s.DEPLOY / "overlays" / v.value) for v in spec.VARIANTS}
    out["gpu-s3"] = kustomize(k8s.DEPLOY / "examples" / "s3")
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


def pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "Deployment")["spec"]["template"]["spec"]


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in (*pod(docs).get("initContainers", []), *pod(docs)["containers"]) if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def waivers(docs: list[dict[str, Any]]) -> dict[str, str]:
    """checkov's waivers on the Deployment: `checkov.io/skipN: ID=reason` annotations."""
    annotations = only(docs, "Deployment")["metadata"].get("annotations", {})
    return dict(v.split("=", 1) for k, v in annotations.items() if k.startswith("checkov.io/skip"))


def gib(quantity: str) -> str:
    return quantity.removesuffix("Gi")


def each_variant(test: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.parametrize("variant", spec.VARIANTS, ids=[v.value for v in spec.VARIANTS])(test)


# --- Generated blocks ----------------------------------------------------------------------


def test_committed_deploy_equals_a_fresh_render(image: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert k8s.main(["--check", "--image", image]) == 0, f"deploy/ differs from a fresh render:\n{capsys.readouterr()}"


def test_check_reports_drift(tmp_path: Path, image: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--check names an edited block and a missing generated file; a render repairs both and keeps the
    static lines (hand edits outside the blocks) and a user's own overlay."""
    deploy = tmp_path / "deploy"
    shutil.copytree(k8s.DEPLOY, deploy)
    args = ["--deploy", str(deploy), "--image", image]
    assert k8s.main([*args, "--check"]) == 0, "a copy of deploy/ does not check clean"
    hpa = deploy / "overlays" / "cpu" / "hpa-patch.yaml"
    hpa.write_text(hpa.read_text().replace('averageValue: "', 'averageValue: "9'))
    (deploy / "examples" / "prometheus-adapter-values.yaml").unlink()
    base_hpa = deploy / "base" / "hpa.yaml"
    base_hpa.write_text(base_hpa.read_text().replace("maxReplicas: 8", "maxReplicas: 99"))
    (deploy / "overlays" / "prod").mkdir()
    (deploy / "overlays" / "prod" / "kustomization.yaml").write_text("resources: [../gpu]\n")
    capsys.readouterr()
    assert k8s.main([*args, "--check"]) == 1, "--check missed the drift"
    out = capsys.readouterr().out
    for name in ("overlays/cpu/hpa-patch.yaml", "examples/prometheus-adapter-values.yaml"):
        assert name in out, f"--check did not name {name}:\n{out}"
    assert "base/hpa.yaml" not in out and "prod" not in out, "static files are not the generator's business"
    assert k8s.main(args) == 0 and k8s.main([*args, "--check"]) == 0
    assert "maxReplicas: 99" in base_hpa.read_text(), "a render changed a static file"
    assert (deploy / "overlays" / "prod" / "kustomization.yaml").is_file(), "a render deleted a user's overlay"
    # A static file that lost its markers is named, not silently rewritten.
    hpa.write_text(hpa.read_text().replace("# k8s:begin queue-targets", "# queue targets"))
    with pytest.raises(ValueError, match=r"hpa-patch.yaml: no `# k8s:begin queue-targets` line"):
        k8s.main(args)


def test_readme_documents_the_rendered_thresholds() -> None:
    readme = k8s.README.read_text()
    assert f"{k8s.TABLE_BEGIN}\n{k8s.threshold_table()}{k8s.TABLE_END}" in readme


def test_readme_prose_numbers_are_the_manifests(built: dict[str, list[dict[str, Any]]]) -> None:
    """The README's Kubernetes section repeats a few numbers in prose; they must be the manifests' own."""
    text = k8s.README.read_text()
    assert k8s.queue_promql(spec.tier("streaming"), matchers="", group_by="pod") in text
    readme = " ".join(text.split())
    docs = built["gpu"]
    server, hpa = container(docs, SERVER), only(docs, "HorizontalPodAutoscaler")["spec"]
    startup, liveness = server["startupProbe"], server["livenessProbe"]
    sleep = server["lifecycle"]["preStop"]["exec"]["command"][-1]
    exit_timeout = Dockerfile.read().flag("exit-timeout-secs")
    shm = next(v for v in pod(docs)["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
    gpu, cpu = (container(built[v.value], SERVER)["resources"]["limits"] for v in spec.VARIANTS)
    for phrase in (
        f"({hpa['minReplicas']} to {hpa['maxReplicas']} pods)",
        f"for up to {startup['periodSeconds'] * startup['failureThreshold'] // 60} minutes",
        f"after {liveness['periodSeconds'] * liveness['failureThreshold']} s of failed answers",
        f"a {sleep} s preStop sleep",
        f"within its {exit_timeout} s exit timeout",
        f"the grace period is {pod(docs)['terminationGracePeriodSeconds']} s",
        f"memory-backed emptyDir of {gib(shm)} GiB",
        f"gpu {gpu['cpu']} CPU / {gib(gpu['memory'])} GiB, cpu {cpu['cpu']} CPU / {gib(cpu['memory'])} GiB",
        f"1/{round(1 / k8s.SCALE_OUT_FRACTION)} of its queue timeout",
        f"against Kubernetes {K8S_VERSION}",
        f"--exit-timeout-secs={exit_timeout}",
    ):
        assert phrase in readme, f"README's Kubernetes section does not say {phrase!r}"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("triton-people:25.10-py3", {"newName": "triton-people", "newTag": "25.10-py3"}),
        ("registry:5000/ml/triton-people", {"newName": "registry:5000/ml/triton-people"}),
        ("reg:5000/ml/tp:26.05@sha256:abc", {"newName": "reg:5000/ml/tp", "newTag": "26.05", "digest": "sha256:abc"}),
        ("reg.io/tp@sha256:abc", {"newName": "reg.io/tp", "digest": "sha256:abc"}),
    ],
)  # fmt: skip
def test_image_refs_split_for_kustomize(ref: str, expected: dict[str, str]) -> None:
    (entry,) = yaml.safe_load(k8s.image_block(ref))
    assert entry == {"name": k8s.IMAGE_PLACEHOLDER, **expected}


# --- One source of truth: ports, flags, paths, image ---------------------------------------------


def test_image_entrypoint_matches_the_local_server() -> None:
    """Dockerfile.triton's ENTRYPOINT has the spec's fixed flags, as tools.server.triton.command, and its ports."""
    docker = Dockerfile.read()
    assert list(docker.entrypoint) == ["tritonserver", f"--model-repository={docker.flag('model-repository')}",
                                       *spec.SERVER_FLAGS]  # fmt: skip
    assert set(spec.SERVER_FLAGS) <= set(tritonserver.command(tritonserver.ServerOptions()))
    assert set(docker.exposed) == set(PORTS.values())


def test_the_default_image_is_pullable(image: str) -> None:
    """IMAGE names a registry and a tag: without a registry a cluster looks on Docker Hub, where it is not."""
    name = image.partition("@")[0]
    host = name.split("/")[0]
    assert "/" in name and ("." in host or ":" in host or host == "localhost"), f"IMAGE={image} names no registry"
    assert re.search(r":[^/:]+$", name) and not name.endswith(":latest"), f"IMAGE={image} has no fixed tag"


def test_the_image_tag_has_the_readiness_the_probes_need() -> None:
    """The probes rely on /v2/health/ready failing for a dead python stub (see READY_REFLECTS_DEAD_STUB)."""
    tag = makefile_variable("TRITON_IMAGE_TAG")
    found = re.fullmatch(r"(\d+)\.(\d+)-py3", tag)
    assert found, f"TRITON_IMAGE_TAG={tag}: expected YY.MM-py3"
    assert (int(found[1]), int(found[2])) >= READY_REFLECTS_DEAD_STUB, (
        f"TRITON_IMAGE_TAG={tag} predates 26.04: its /v2/health/ready stays 200 with a dead python stub, so the "
        "probes in deploy/base/deployment.yaml would not see one (use an exec probe `python3 -m tools.server.health`)"
    )


@each_variant
def test_deployment_matches_spec_makefile_and_image(
    variant: Variant, built: dict[str, list[dict[str, Any]]], image: str
) -> None:
    docs = built[variant.value]
    docker = Dockerfile.read()
    server = container(docs, SERVER)
    for c in (server, container(docs, FETCH), container(docs, CHECK)):  # pvc:// copies with the serving image
        assert c["image"] == image, f"{c['name']} runs {c['image']}, the Makefile's IMAGE is {image}"
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == PORTS

    # The command: the image's ENTRYPOINT, then what `make serve` passes the image on 0.0.0.0 with the
    # spec's ports; the access-control flags take a key each pod draws (never one in the manifest).
    command, args = server["command"], server["args"]
    assert command[:2] == ["/bin/sh", "-c"] and command[3] == docker.entrypoint[0]
    inner = tritonserver.Endpoints(host="0.0.0.0", http=spec.HTTP_PORT, grpc=spec.GRPC_PORT, metrics=spec.METRICS_PORT)
    local = tritonserver.endpoint_args(tritonserver.ServerOptions(variant=variant, endpoints=inner))
    keyed = [a for a in local if "restricted" in a]
    assert keyed and args == [*docker.entrypoint[1:], *(a for a in local if a not in keyed)]
    for flag in (a.rpartition("=")[0] for a in keyed):
        assert f'{flag}="$key"' in command[2] and f'exec {docker.entrypoint[0]} "$@"' in command[2]
    assert not re.search(rf'{spec.API_KEY_HEADER}=(?!"\$key")', "\n".join([*command, *args])), "a key in the manifest"
    assert render.CONFIG_PATHS[Variant.CPU].stem == Variant.CPU.config_name

    # The model repository: copied by fetch-models into a pod-local volume, checked, read-only for Triton.
    models = docker.flag("model-repository")
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts[models].get("readOnly") is True
    volumes = {v["name"]: v for v in pod(docs)["volumes"]}
    assert "emptyDir" in volumes[mounts[models]["name"]]
    assert [c["name"] for c in pod(docs)["initContainers"]] == [FETCH, CHECK], "check after the copy"
    claim = volumes["model-source"]["persistentVolumeClaim"]
    assert claim["readOnly"] is True and claim["claimName"]
    fetch = container(docs, FETCH)
    source = next(m for m in fetch["volumeMounts"] if m["name"] == "model-source")
    assert source["readOnly"] is True and f"cp -R {source['mountPath']}/. {models}/" in fetch["command"]
    required = env(container(docs, CHECK))["REQUIRED_FILES"].split()
    assert required == k8s.required_files(variant)
    for tier in spec.TIERS:
        for step in (Step.DETECTOR, Step.GENDER):
            assert f"{tier.model(step)}/1/{k8s.ENGINE_FILES[variant]}" in required
        assert f"{tier.model(Step.ENSEMBLE)}/config.pbtxt" in required
        assert (ROOT / "model_repository" / tier.model(Step.ENSEMBLE) / "config.pbtxt").is_file()
    if variant is Variant.GPU:  # the GPU configs name the engine file the init container checks
        config = (ROOT / "model_repository" / spec.TIERS[0].model(Step.DETECTOR) / "config.pbtxt").read_text()
        assert f'default_model_filename: "{k8s.ENGINE_FILES[variant]}"' in config

    # Python backend shared memory: a memory-backed /dev/shm of the size `make serve` gives the container.
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    cmd = docker_serve.docker_command("image", tritonserver.Endpoints(), ROOT / "model_repository", None)
    assert cmd[cmd.index("--shm-size") + 1] == "2g" and shm == {"medium": "Memory", "sizeLimit": "2Gi"}


@each_variant
def test_probes_and_shutdown(variant: Variant, built: dict[str, list[dict[str, Any]]]) -> None:
    """Every probe asks Triton's strict readiness, so a dead stub takes the pod out of the Services and
    then restarts it; liveness waits longer and longer per answer than readiness, after startup."""
    docs = built[variant.value]
    server = container(docs, SERVER)
    assert "--strict-readiness=true" in server["args"]
    probes = {name: server[f"{name}Probe"] for name in ("startup", "readiness", "liveness")}
    for probe in probes.values():
        assert probe["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup, readiness, liveness = probes.values()
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "engine loads take minutes"
    assert "initialDelaySeconds" not in liveness, "the startup probe gates liveness"
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= 10, "a dead stub leaves the Services in 10 s"
    patience = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert patience >= 60 and patience >= 3 * readiness["periodSeconds"] * readiness["failureThreshold"]
    assert liveness["timeoutSeconds"] > readiness["timeoutSeconds"], "a slow answer from a busy pod is not death"
    sleep = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    exit_timeout = int(Dockerfile.read().flag("exit-timeout-secs"))
    assert sleep > 0 and pod(docs)["terminationGracePeriodSeconds"] > sleep + exit_timeout


@each_variant
def test_pod_security_and_resources(variant: Variant, built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built[variant.value]
    spec_ = pod(docs)
    uid = Dockerfile.read().uid
    assert spec_["securityContext"]["runAsNonRoot"] is True and spec_["securityContext"]["runAsUser"] == uid
    assert spec_["automountServiceAccountToken"] is False
    for c in (*spec_["initContainers"], *spec_["containers"]):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsUser"] == uid
        assert c["resources"]["requests"] and c["resources"]["limits"]
        # A tag is pulled once per node; a tag-less or :latest reference would make kubelet pull every time.
        assert c["imagePullPolicy"] == "IfNotPresent" and re.search(r":[^/:@]+(@|$)", c["image"]), c["image"]
    server = container(docs, SERVER)
    limits = server["resources"]["limits"]
    assert limits == server["resources"]["requests"], "Guaranteed QoS"
    if variant is Variant.GPU:
        assert limits["nvidia.com/gpu"] == "1" and spec_["tolerations"]
        assert set(spec_["nodeSelector"]) == {"nvidia.com/gpu.product"}, "pin the GPU type the plans were built for"
    else:
        assert "nvidia.com/gpu" not in limits and "nodeSelector" not in spec_
        assert limits["cpu"] == str(spec.CPU_THREADS), "the cpu configs are sized for spec.CPU_THREADS cores"
    namespace = only(docs, "Namespace")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace")


def test_node_selector_is_the_plans_gpu(tmp_path: Path) -> None:
    """The gpu overlay selects the GPU the plans were built on by its GPU Feature Discovery label: the NVML
    name without characters outside [A-Za-z0-9-_. ], spaces as dashes (NVIDIA/k8s-device-plugin,
    internal/lm/resource.go `sanitise`); the spec's GPU where no plans were built."""
    (tmp_path / "repository").mkdir()
    repository = exported_plans.exported(tmp_path / "repository")
    assert k8s.gpu_product(repository) == spec.GPU_PRODUCT, "no plans: the spec's GPU"
    exported_plans.built(repository, Target("10.16.0.72", (Gpu("NVIDIA H200", "9.0"),)))
    assert k8s.gpu_product(repository) == "NVIDIA-H200"
    deploy = tmp_path / "deploy"
    shutil.copytree(k8s.DEPLOY, deploy)
    texts = dict(k8s.rendered("localhost:5000/triton-people:test", deploy, repository))
    patch = yaml.safe_load(texts[deploy / "overlays" / "gpu" / "deployment-patch.yaml"])
    assert patch["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert k8s.gpu_label("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert k8s.gpu_label("Tesla V100-SXM2-16GB (rev/a)") == "Tesla-V100-SXM2-16GB-reva"
    folder = repository / spec.TIERS[0].model(Step.DETECTOR) / "1"
    record = manifest.read(folder, manifest.Detector)
    plan = replace(record.artifact.plan, gpu_name="NVIDIA L4")
    manifest.write(folder, replace(record, artifact=replace(record.artifact, plan=plan)))
    with pytest.raises(ValueError, match="different GPUs"):
        k8s.gpu_product(repository)


def test_services_pdb_and_servicemonitor(built: dict[str, list[dict[str, Any]]]) -> None:
    """Service ports are the spec's; the ServiceMonitor (a CRD: checked here) scrapes the metrics port once per pod."""
    docs = built["gpu"]
    service = only(docs, "Service", APP)
    headless = only(docs, "Service", f"{APP}-headless")
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {name: (port, name) for name, port in PORTS.items()}
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
    # No namespaceSelector: the Prometheus Operator then looks in the monitor's own namespace, the Service's.
    assert "namespaceSelector" not in monitor["spec"]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert ports[endpoint["port"]][0] == spec.METRICS_PORT


@each_variant
def test_autoscaling_on_queue_time(variant: Variant, built: dict[str, list[dict[str, Any]]]) -> None:
    """One HPA, one per-pod queue-time metric per tier served by the adapter rules; streaming scales first."""
    docs = built[variant.value]
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP}
    assert "replicas" not in only(docs, "Deployment")["spec"], "the HPA owns the replica count"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    targets = {m["pods"]["metric"]["name"]: int(m["pods"]["target"]["averageValue"]) for m in hpa["spec"]["metrics"]}
    assert targets == {k8s.metric_name(t): k8s.queue_target_us(t, variant) for t in spec.TIERS}
    ordered = [targets[k8s.metric_name(spec.tier(name))] for name in ("streaming", "balanced", "batch")]
    assert ordered == sorted(ordered) and len(set(ordered)) == 3, f"streaming must scale before batch: {ordered}"
    for t in spec.TIERS:
        assert 0 < targets[k8s.metric_name(t)] < t.batching(variant).queue_timeout_us


def test_prometheus_adapter_examples_serve_the_hpa_metrics() -> None:
    configmap = yaml.safe_load((k8s.DEPLOY / "examples" / "prometheus-adapter-configmap.yaml").read_text())
    rules = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    values = yaml.safe_load((k8s.DEPLOY / "examples" / "prometheus-adapter-values.yaml").read_text())
    assert values["rules"]["custom"] == rules
    assert [r["name"]["as"] for r in rules] == [k8s.metric_name(t) for t in spec.TIERS]
    repository = ROOT / "model_repository"
    for rule, tier in zip(rules, spec.TIERS, strict=True):
        query = rule["metricsQuery"]
        assert query == k8s.queue_promql(tier)
        assert "nv_inference_queue_duration_us{<<.LabelMatchers>>" in query and "by (<<.GroupBy>>)" in query
        assert f'nv_inference_request_success{{<<.LabelMatchers>>,model="{tier.model(Step.ENSEMBLE)}"}}' in query
        assert f'model=~"({"|".join(s.value for s in tier.models)})_{tier.name}"' in query
        for step in (*spec.MODELS, Step.ENSEMBLE):  # every model the query names is served
            assert (repository / tier.model(step) / "config.pbtxt").is_file()
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_s3_model_repository(built: dict[str, list[dict[str, Any]]], image: str) -> None:
    """deploy/examples/s3: fetch-models syncs from the bucket in a pinned AWS CLI image; no PVC left."""
    docs = built["gpu-s3"]
    fetch = container(docs, FETCH)
    assert fetch["image"].startswith("amazon/aws-cli:") and re.search(r":\d+\.\d+\.\d+$", fetch["image"])
    assert 'aws s3 sync --only-show-errors "$MODEL_REPO_URI" /models' in fetch["command"]
    assert env(fetch)["MODEL_REPO_URI"].startswith("s3://") and env(fetch)["HOME"] == "/tmp"
    assert "model-source" not in {v["name"] for v in pod(docs)["volumes"]}
    assert "model-source" not in {m["name"] for m in fetch["volumeMounts"]}
    assert [c["name"] for c in pod(docs)["initContainers"]] == [FETCH, CHECK]
    assert container(docs, CHECK) == container(built["gpu"], CHECK)
    assert container(docs, SERVER)["image"] == image


# --- Offline validation and static analysis --------------------------------------------------


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
    cmd = [validate, "--kubernetes-version", K8S_VERSION, "--strict", "--quiet", *map(str, files)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, f"kubernetes-validate failed:\n{out.stdout}{out.stderr}"
    # Strict means strict: an unknown field fails (so the pass above means something).
    bad = tmp_path / "bad.yaml"
    deployment = only(built["gpu"], "Deployment")
    bad.write_text(yaml.safe_dump({**deployment, "spec": {**deployment["spec"], "replica": 2}}))
    out = subprocess.run([*cmd[:-len(files)], str(bad)], capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0 and "replica" in out.stdout + out.stderr


def test_checkov_finds_nothing_unwaived(built: dict[str, list[dict[str, Any]]], built_files: dict[str, Path]) -> None:
    """checkov on every built overlay and Dockerfile.triton: no failed check; each waiver has its written reason."""
    checkov = tool(TOOLS / "checkov", "checkov")
    files = [*built_files.values(), DOCKERFILE]
    cmd = [checkov, "--framework", "kubernetes", "dockerfile", "--skip-download", "--output", "json"]
    cmd += [arg for f in files for arg in ("--file", str(f))]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "LOG_LEVEL": "ERROR"})
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, out.stderr[-2000:]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, f"checkov findings to fix or waive (annotations in deploy/base/deployment.yaml): {failed}"
    assert all(r["summary"]["passed"] > 0 for r in reports)
    reasons = waivers(built["gpu"])
    skipped = {c["check_id"] for r in reports for c in r["results"]["skipped_checks"]}
    assert skipped == set(reasons), "a waiver checkov did not need is stale"
    for r in reports:
        for c in r["results"]["skipped_checks"]:
            assert c["check_result"]["suppress_comment"] == reasons[c["check_id"]]
    assert out.returncode == 0, out.stderr[-2000:]


def test_waivers_are_written_so_checkov_reads_them(built: dict[str, list[dict[str, Any]]]) -> None:
    """checkov splits `ID=reason` at every '='; a reason containing one would break the scan."""
    reasons = waivers(built["gpu"])
    assert reasons
    for check, reason in reasons.items():
        assert check.startswith("CKV") and len(reason) > 20 and "=" not in reason

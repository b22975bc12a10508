"""Render `deploy/` (a kustomize tree for Kubernetes) from the spec, the serving image and the Makefile.

`make k8s-manifests` writes it; `python -m tools.k8s --check` only compares and
exits 1 on any difference (the unit tests run it), so the committed manifests
never drift from the numbers they are made of:
- ports, tiers, the cpu variant's threads: `pipelines/spec.py`;
- the server's fixed flags, the model repository path and the non-root uid:
  `Dockerfile.triton` (its ENTRYPOINT and `useradd`), the same flags as
  `tools.server.triton.command`; the per-deployment flags: `tools.server.triton.endpoint_args`;
- /dev/shm: the size `make serve` gives the serving container (`tools/serve.py`);
- image, model repository location, namespace, GPU node selector: Makefile
  variables (IMAGE, MODEL_REPO_URI, MODEL_SYNC_IMAGE, K8S_NAMESPACE,
  GPU_NODE_SELECTOR), read through `make` itself so overrides behave as in make.
The autoscaling thresholds per tier are derived here from each tier's queue
timeout (`queue_target_us`), and the README's table of them is rendered too.
Nothing here needs a cluster; nothing rendered here has been applied to one.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines import spec
from pipelines.spec import Step, Tier
from tools.server import serve
from tools.server.triton import Endpoints, ServerOptions, endpoint_args

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile.triton"
README = ROOT / "README.md"
TABLE_BEGIN, TABLE_END = "<!-- k8s:begin (rendered by `make k8s-manifests`) -->", "<!-- k8s:end -->"
HEADER = (
    "# Rendered by `make k8s-manifests` (tools/k8s.py) from pipelines/spec.py, Dockerfile.triton and the\n"
    "# Makefile; edit those (or add your own overlay on top of this one), not this file.\n"
)
MAKE_VARIABLES = ("IMAGE", "MODEL_REPO_URI", "MODEL_SYNC_IMAGE", "K8S_NAMESPACE", "GPU_NODE_SELECTOR")

K8S_VERSION = "1.32.0"  # the schemas the manifests are validated against (kubectl here is 1.32)
APP = "triton-people"  # name of every object, and the image name kustomize's `images:` rewrites
CONTAINER = "tritonserver"
INIT_CONTAINER = "fetch-models"
SERVICE_ACCOUNT = APP
PORT_NAMES = {"http": spec.HTTP_PORT, "grpc": spec.GRPC_PORT, "metrics": spec.METRICS_PORT}
PVC_MOUNT = "/source"
TMP = "/tmp"

log = logging.getLogger("k8s")

# Probes and shutdown. Loading TensorRT engines, DALI and torch for 3 tiers takes minutes: the
# startup probe allows STARTUP_BUDGET_S before liveness may act; readiness then follows Triton's
# strict readiness (a dead python stub takes the pod out of the Service within ~10 s).
STARTUP_BUDGET_S = 600
PROBE_PERIOD_S = 10
PRESTOP_SLEEP_S = 10  # endpoints and load balancers drop the pod before Triton stops accepting
SHUTDOWN_MARGIN_S = 20

# Autoscaling: scale out when the mean queue wait per request reaches this fraction of the tier's
# queue timeout. If waits were exponential, P(wait > timeout) = exp(-1 / fraction) = exp(-10),
# i.e. pods are added well before requests start timing out. Streaming (short timeout) scales first.
SCALE_OUT_FRACTION = 0.1
MIN_REPLICAS = 2  # two pods so a node drain or a crashed pod does not take the service down
MAX_REPLICAS = 8
RATE_WINDOW = "1m"


@dataclass(frozen=True)
class Variant:
    """What differs between the gpu and cpu overlays; everything else lives in the base."""

    name: str
    config_name: str | None  # tritonserver --model-config-name; None = config.pbtxt (GPU)
    cpu: str
    memory: str
    gpus: int
    engine_file: str  # what `detector_<tier>/1` and `gender_<tier>/1` must hold for this variant
    note: str


VARIANTS = (
    Variant(
        name=spec.Variant.GPU.value,
        config_name=spec.Variant.GPU.config_name,
        cpu="8",
        memory="32Gi",
        gpus=1,
        engine_file="model.plan",
        note="One GPU per pod; TensorRT plans built for the GPU type of the selected nodes.",
    ),
    Variant(
        name=spec.Variant.CPU.value,
        config_name=spec.Variant.CPU.config_name,
        cpu=str(spec.CPU_THREADS),  # the cpu configs are sized for this many cores
        memory="8Gi",
        gpus=0,
        engine_file="model.onnx",
        note="No GPU: the cpu configs (python backend, DALI CPU operators, ONNX Runtime).",
    ),
)


def batching(tier: Tier, variant: Variant) -> spec.Batching:
    return tier.batching(spec.Variant(variant.name))


def queue_target_us(tier: Tier, variant: Variant) -> int:
    """Mean queue wait per request (all steps) at which the HPA adds pods."""
    return round(batching(tier, variant).queue_timeout_us * SCALE_OUT_FRACTION)


def metric_name(tier: Tier) -> str:
    """The per-pod custom metric the Prometheus adapter serves for one tier."""
    return f"{tier.model(Step.ENSEMBLE)}_queue_us_per_request"


def queue_promql(tier: Tier, matchers: str = "<<.LabelMatchers>>", group_by: str = "<<.GroupBy>>") -> str:
    """Mean queue time per request of one tier: queue time of its steps over the ensemble's successes.

    The ensemble itself does not queue; its steps do (the gender classifier's queue counts too: its
    BLS calls wait inside postprocess). The defaults are the adapter's template placeholders.
    """
    steps = "|".join(step.value for step in spec.MODELS)
    sep = "," if matchers else ""
    queue = f'nv_inference_queue_duration_us{{{matchers}{sep}model=~"({steps})_{tier.name}"}}'
    success = f'nv_inference_request_success{{{matchers}{sep}model="{tier.model(Step.ENSEMBLE)}"}}'
    return (
        f"sum by ({group_by}) (rate({queue}[{RATE_WINDOW}]))\n"
        f"  / clamp_min(sum by ({group_by}) (rate({success}[{RATE_WINDOW}])), 0.001)"
    )


# --- Inputs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """The Makefile's deployment variables."""

    image: str
    model_repo_uri: str
    sync_image: str
    namespace: str
    gpu_node_selector: str  # "key=value[,key=value]"

    @classmethod
    def resolve(cls, overrides: dict[str, str] | None = None) -> Params:
        """The Makefile's values, with `overrides` (command-line options) taking precedence."""
        overrides = overrides or {}
        missing = tuple(n for n in MAKE_VARIABLES if n not in overrides)
        v = {**(makefile_variables(missing) if missing else {}), **overrides}
        return cls(v["IMAGE"], v["MODEL_REPO_URI"], v["MODEL_SYNC_IMAGE"], v["K8S_NAMESPACE"], v["GPU_NODE_SELECTOR"])


def makefile_variables(names: tuple[str, ...]) -> dict[str, str]:
    """Values as `make` itself resolves them (defaults, `make X=...` and environment overrides alike)."""
    rule = "print-%: ; @:$(info $*=$($*))"
    cmd = ["make", "-s", "--no-print-directory", "-C", str(ROOT), f"--eval={rule}", *(f"print-{n}" for n in names)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    missing = [n for n in names if not values.get(n)]
    if missing:
        raise ValueError(f"the Makefile defines no value for {', '.join(missing)}")
    return values


@dataclass(frozen=True)
class ImageRef:
    """An image reference split the way kustomize's `images:` wants it."""

    name: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        name, _, digest = ref.partition("@")
        repo, sep, tag = name.rpartition(":")
        if sep and "/" not in tag:
            return cls(repo, tag, digest or None)
        return cls(name, None, digest or None)


@dataclass(frozen=True)
class ModelSource:
    """Where the init container copies the model repository from: `pvc://CLAIM/PATH` or `s3://BUCKET/PREFIX`."""

    scheme: str
    location: str  # claim name, or the whole s3 URI
    path: str = ""  # path inside the claim

    @classmethod
    def parse(cls, uri: str) -> ModelSource:
        scheme, sep, rest = uri.partition("://")
        if sep and scheme == "pvc" and rest.split("/")[0]:
            claim, _, path = rest.partition("/")
            return cls("pvc", claim, path.strip("/"))
        if sep and scheme == "s3" and rest.split("/")[0]:
            return cls("s3", uri)
        raise ValueError(f"MODEL_REPO_URI={uri!r}: use pvc://CLAIM[/PATH] or s3://BUCKET[/PREFIX]")


@dataclass(frozen=True)
class Dockerfile:
    """What the serving image fixes: its ENTRYPOINT, its non-root uid and its ports."""

    entrypoint: tuple[str, ...]
    uid: int
    exposed: tuple[int, ...]

    @classmethod
    def read(cls, path: Path = DOCKERFILE) -> Dockerfile:
        text = path.read_text().replace("\\\n", " ")
        entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
        uid = re.search(r"useradd\b.*--uid\s+(\d+)", text)
        exposed = re.search(r"^EXPOSE\s+(.+)$", text, re.M)
        if not (entrypoint and uid and exposed):
            raise ValueError(f"{path}: expected an exec-form ENTRYPOINT, `useradd --uid N` and EXPOSE")
        ports = tuple(int(p.split("/")[0]) for p in exposed.group(1).split())
        return cls(tuple(json.loads(entrypoint.group(1))), int(uid.group(1)), ports)

    def flag(self, name: str) -> str:
        for arg in self.entrypoint:
            if arg.startswith(f"--{name}="):
                return arg.partition("=")[2]
        raise ValueError(f"Dockerfile.triton's ENTRYPOINT has no --{name}")


KEYED_FLAGS = ("--grpc-restricted-protocol=", "--http-restricted-api=")  # FLAG=APIS:HEADER=KEY


def server_command() -> tuple[list[str], list[str]]:
    """The server container's command and args: the ENTRYPOINT's flags, then the per-deployment ones
    exactly as the Docker path of `make serve` passes them.

    Access-control flags carry a key. Written into the manifest it would be known to everyone who can
    read the manifest (and change at every render), so each pod draws its own at start instead, the
    way `make serve` draws one per run; `exec` keeps tritonserver as the process that gets SIGTERM.
    """
    docker = Dockerfile.read()
    binary = docker.entrypoint[0]
    inner = Endpoints(host="0.0.0.0", http=spec.HTTP_PORT, grpc=spec.GRPC_PORT, metrics=spec.METRICS_PORT)
    args = [*docker.entrypoint[1:], *endpoint_args(ServerOptions(variant=spec.Variant.GPU, endpoints=inner))]
    keyed = [a for a in args if a.startswith(KEYED_FLAGS)]
    plain = [a for a in args if a not in keyed]
    if not keyed:
        return [binary], plain
    flags = " ".join(f'{a.rpartition("=")[0]}="$key"' for a in keyed)
    script = f'key=$(od -An -N16 -tx1 /dev/urandom | tr -d " \\n")\nexec {binary} "$@" {flags}\n'
    return ["/bin/sh", "-c", script, binary], plain


def shm_size() -> str:
    """/dev/shm for the python backend: the size `make serve` gives the serving container."""
    cmd = serve.docker_command("image", Endpoints(), ROOT / "model_repository", None)
    size = cmd[cmd.index("--shm-size") + 1]
    number, unit = re.fullmatch(r"(\d+)([kmg])", size.lower()).groups()  # type: ignore[union-attr]
    return f"{number}{unit.upper()}i"


def required_files(variant: Variant | None) -> list[str]:
    """Files the init container checks after copying, so a wrong repository fails with a clear message."""
    files = [f"{t.model(Step.ENSEMBLE)}/config.pbtxt" for t in spec.TIERS]
    if variant:
        files += [f"{t.model(s)}/1/{variant.engine_file}" for t in spec.TIERS for s in (Step.DETECTOR, Step.GENDER)]
    return files


# --- Objects ---------------------------------------------------------------------


def _labels(component: str = "server") -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def _meta(name: str, p: Params, component: str = "server", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": p.namespace, "labels": _labels(component), **extra}


def _selector() -> dict[str, str]:
    """The pods' labels; the headless Service's own labels differ so the ServiceMonitor picks one Service."""
    return _labels("server")


def _security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


# Waivers of checkov findings, each with the reason; rendered as annotations on the object they concern.
WAIVERS: dict[str, dict[str, str]] = {
    "Deployment": {
        "CKV_K8S_43": "images are pinned by tag in the Makefile (IMAGE, MODEL_SYNC_IMAGE); the serving "
        "image's digest exists only once `make image` pushes it; set them to name@sha256:<digest> to pin digests",
    },
}


def _annotations(kind: str) -> dict[str, str]:
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(WAIVERS[kind].items(), 1)}


def init_container(p: Params, uid: int, models: str) -> dict[str, Any]:
    """Copy the model repository into the pod-local volume, then check it holds what the variant needs."""
    source = ModelSource.parse(p.model_repo_uri)
    check = (
        "missing=0\n"
        "for f in $REQUIRED_FILES; do\n"
        f'  [ -s "{models}/$f" ] || {{ echo "model repository $MODEL_REPO_URI lacks $f" >&2; missing=1; }}\n'
        "done\n"
        'exit "$missing"'
    )
    if source.scheme == "pvc":
        image, copy = APP, f"cp -R {PVC_MOUNT}/. {models}/"
        mounts = [{"name": "model-source", "mountPath": PVC_MOUNT, "readOnly": True}]
        if source.path:
            mounts[0]["subPath"] = source.path
    else:
        image, copy = p.sync_image, f'aws s3 sync --only-show-errors "$MODEL_REPO_URI" {models}'
        mounts = []
    return {
        "name": INIT_CONTAINER,
        "image": image,
        "imagePullPolicy": "Always",
        "command": ["/bin/sh", "-c", f"set -eu\n{copy}\n{check}\n"],
        "env": [
            {"name": "MODEL_REPO_URI", "value": p.model_repo_uri},
            {"name": "REQUIRED_FILES", "value": " ".join(required_files(None))},
            {"name": "HOME", "value": TMP},
        ],
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": _security(uid),
        "volumeMounts": [{"name": "models", "mountPath": models}, {"name": "tmp", "mountPath": TMP}, *mounts],
    }


def deployment(p: Params) -> dict[str, Any]:
    """The serving pods without what differs per variant (resources, GPU, config name: the overlays)."""
    docker = Dockerfile.read()
    models = docker.flag("model-repository")
    exit_timeout = int(docker.flag("exit-timeout-secs"))
    command, args = server_command()
    source = ModelSource.parse(p.model_repo_uri)
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size()}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
    ]
    if source.scheme == "pvc":
        volumes.append(
            {"name": "model-source", "persistentVolumeClaim": {"claimName": source.location, "readOnly": True}}
        )
    server = {
        "name": CONTAINER,
        "image": APP,
        "imagePullPolicy": "Always",
        "command": command,
        "args": args,
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORT_NAMES.items()],
        "env": [
            # Read-only root filesystem: caches (CUDA, torch) and DALI's autoserialized pipeline go to /tmp.
            {"name": "HOME", "value": TMP},
            {"name": "XDG_CACHE_HOME", "value": f"{TMP}/.cache"},
        ],
        "startupProbe": _probe("/v2/health/ready", "http", PROBE_PERIOD_S, STARTUP_BUDGET_S // PROBE_PERIOD_S),
        "readinessProbe": _probe("/v2/health/ready", "http", 5, 2),
        "livenessProbe": _probe("/v2/health/live", "http", PROBE_PERIOD_S, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "securityContext": _security(docker.uid),
        "volumeMounts": [
            {"name": "models", "mountPath": models, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": TMP},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(APP, p, annotations=_annotations("Deployment")),
        "spec": {
            # No `replicas`: the HorizontalPodAutoscaler owns it, so re-applying does not reset it.
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 2 * STARTUP_BUDGET_S,
            "selector": {"matchLabels": _selector()},
            # A new pod must be ready (engines loaded) before an old one goes; needs one spare GPU.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _labels()},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": PRESTOP_SLEEP_S + exit_timeout + SHUTDOWN_MARGIN_S,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": docker.uid,
                        "runAsGroup": docker.uid,
                        "fsGroup": docker.uid,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": _selector()},
                        }
                    ],
                    "initContainers": [init_container(p, docker.uid, models)],
                    "containers": [server],
                    "volumes": volumes,
                },
            },
        },
    }


def services(p: Params) -> list[dict[str, Any]]:
    """The Service clients use, and a headless one for client-side gRPC balancing across pods."""
    ports = [
        {"name": "http", "port": spec.HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {
            "name": "grpc",
            "port": spec.GRPC_PORT,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]
    metrics = {"name": "metrics", "port": spec.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
    main = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(APP, p),
        "spec": {"type": "ClusterIP", "selector": _selector(), "ports": [*ports, metrics]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(f"{APP}-headless", p, component="headless"),
        "spec": {"clusterIP": "None", "selector": _selector(), "ports": ports},
    }
    return [main, headless]


def base_objects(p: Params) -> dict[str, dict[str, Any]]:
    """The base's files: everything both variants share."""
    return {
        "namespace.yaml": {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": p.namespace,
                # The pods meet the "restricted" Pod Security Standard; enforce it.
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        },
        "serviceaccount.yaml": {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(SERVICE_ACCOUNT, p),
            "automountServiceAccountToken": False,
        },
        "deployment.yaml": deployment(p),
        "service.yaml": services(p)[0],
        "service-headless.yaml": services(p)[1],
        "poddisruptionbudget.yaml": {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(APP, p),
            "spec": {
                "maxUnavailable": 1,
                "unhealthyPodEvictionPolicy": "AlwaysAllow",  # a crash-looping pod must not block node drains
                "selector": {"matchLabels": _selector()},
            },
        },
        "networkpolicy.yaml": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(APP, p),
            "spec": {
                "podSelector": {"matchLabels": _selector()},
                "policyTypes": ["Ingress"],
                # Only Triton's three ports; narrow `from` to your clients and Prometheus in your overlay.
                "ingress": [{"ports": [{"port": name, "protocol": "TCP"} for name in PORT_NAMES]}],
            },
        },
        "servicemonitor.yaml": {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _meta(APP, p),
            "spec": {
                "selector": {"matchLabels": _labels()},
                "namespaceSelector": {"matchNames": [p.namespace]},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
            },
        },
    }


def hpa(p: Params, variant: Variant) -> dict[str, Any]:
    """Scale on the mean queue wait of every tier; the HPA follows whichever tier needs the most pods."""
    metrics = [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": metric_name(t)},
                "target": {"type": "AverageValue", "averageValue": str(queue_target_us(t, variant))},
            },
        }
        for t in spec.TIERS
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(APP, p),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "metrics": metrics,
            # New pods take minutes (image, engines): add quickly, remove slowly.
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [_rate(2, 60)]},
                "scaleDown": {"stabilizationWindowSeconds": 600, "policies": [_rate(1, 120)]},
            },
        },
    }


def _rate(pods: int, seconds: int) -> dict[str, Any]:
    return {"type": "Pods", "value": pods, "periodSeconds": seconds}


def deployment_patch(p: Params, variant: Variant) -> dict[str, Any]:
    """The variant's resources, node placement and engine check, merged into the base Deployment."""
    amounts = {"cpu": variant.cpu, "memory": variant.memory}
    if variant.gpus:
        amounts["nvidia.com/gpu"] = str(variant.gpus)
    pod: dict[str, Any] = {
        "initContainers": [
            {"name": INIT_CONTAINER, "env": [{"name": "REQUIRED_FILES", "value": " ".join(required_files(variant))}]}
        ],
        # requests == limits: Guaranteed QoS, so the pod is the last to be evicted under memory pressure.
        "containers": [{"name": CONTAINER, "resources": {"requests": amounts, "limits": dict(amounts)}}],
    }
    if variant.gpus:
        pairs = [kv.partition("=") for kv in p.gpu_node_selector.split(",") if kv.strip()]
        pod["nodeSelector"] = {k.strip(): v.strip() for k, _, v in pairs}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "namespace": p.namespace},
        "spec": {"template": {"spec": pod}},
    }


def adapter_rules() -> list[dict[str, Any]]:
    """prometheus-adapter rules serving one per-pod metric per tier (see queue_promql)."""
    return [
        {
            "seriesQuery": f'nv_inference_request_success{{model="{t.model(Step.ENSEMBLE)}",namespace!="",pod!=""}}',
            "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
            "name": {"matches": "^nv_inference_request_success$", "as": metric_name(t)},
            "metricsQuery": queue_promql(t),
        }
        for t in spec.TIERS
    ]


def adapter_configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "prometheus-adapter", "namespace": "monitoring"},
        "data": {"config.yaml": _dump({"rules": adapter_rules()})},
    }


def kustomization(resources: list[str], **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources, **fields}


def files(p: Params) -> Iterator[tuple[Path, str, str]]:
    """Every rendered file under deploy/, with a one-line note of why it is there, and its YAML."""
    image = ImageRef.parse(p.image)
    entry = {"name": APP, "newName": image.name}
    entry.update({"newTag": image.tag} if image.tag else {})
    entry.update({"digest": image.digest} if image.digest else {})
    base = base_objects(p)
    for name, obj in base.items():
        yield Path("base") / name, f"{obj['kind']} shared by the gpu and cpu overlays.", _dump(obj)
    yield (
        Path("base/kustomization.yaml"),
        "The base: not applied alone (no resources, no autoscaler); apply an overlay.",
        _dump(kustomization(list(base), namespace=p.namespace, images=[entry])),
    )
    for v in VARIANTS:
        patches: list[dict[str, Any]] = [{"path": "deployment-patch.yaml"}]
        if v.config_name:
            op = {
                "op": "add",
                "path": "/spec/template/spec/containers/0/args/-",
                "value": f"--model-config-name={v.config_name}",
            }
            patches.append({"target": {"kind": "Deployment", "name": APP}, "patch": _dump([op])})
        d = Path("overlays") / v.name
        yield (
            d / "kustomization.yaml",
            f"`kubectl apply -k deploy/overlays/{v.name}`. {v.note}",
            _dump(kustomization(["../../base", "hpa.yaml"], patches=patches)),
        )
        yield (
            d / "deployment-patch.yaml",
            "Resources, node placement and engine files of this variant.",
            _dump(deployment_patch(p, v)),
        )
        yield (
            d / "hpa.yaml",
            "Scales on each tier's mean queue wait (metrics from the Prometheus adapter).",
            _dump(hpa(p, v)),
        )
    yield (
        Path("examples/prometheus-adapter-configmap.yaml"),
        "Example: the prometheus-adapter ConfigMap (merge these rules into yours) serving the HPA's metrics.",
        _dump(adapter_configmap()),
    )
    yield (
        Path("examples/prometheus-adapter-values.yaml"),
        "Example: the same rules as values of the prometheus-adapter Helm chart (`rules.custom`).",
        _dump({"rules": {"custom": adapter_rules()}}),
    )


# --- YAML and the README table ---------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, multi-line strings (scripts, PromQL) as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def _dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def threshold_table() -> str:
    """The README's autoscaling table, so the documented thresholds are the deployed ones."""
    rows = [
        "| tier | adapter metric (per pod) | queue timeout gpu / cpu | HPA target gpu / cpu (mean queue wait) |",
        "|---|---|---|---|",
    ]
    gpu, cpu = VARIANTS
    for t in spec.TIERS:
        rows.append(
            f"| `{t.name}` | `{metric_name(t)}` | {_ms(t.gpu.queue_timeout_us)} / {_ms(t.cpu.queue_timeout_us)}"
            f" | {_ms(queue_target_us(t, gpu))} / {_ms(queue_target_us(t, cpu))} |"
        )
    return "\n".join(rows) + "\n"


def _ms(us: int) -> str:
    return f"{us / 1e6:g} s" if us >= 1_000_000 else f"{us / 1e3:g} ms"


def _with_table(readme: str) -> str:
    head, _, rest = readme.partition(TABLE_BEGIN + "\n")
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_BEGIN}\n{threshold_table()}{TABLE_END}{tail}"


def rendered(p: Params, deploy: Path = DEPLOY) -> dict[Path, str]:
    """Path -> text of every rendered file; the README's table only when rendering the project's own deploy/."""
    out = {deploy / rel: f"{HEADER}# {why}\n{text}" for rel, why, text in files(p)}
    if deploy.resolve() == DEPLOY and README.is_file() and TABLE_BEGIN in README.read_text():
        out[README] = _with_table(README.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.k8s", description=__doc__)
    parser.add_argument("--deploy", type=Path, default=DEPLOY, help="where to write the kustomize tree")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a file differs")
    for name in MAKE_VARIABLES:
        parser.add_argument(f"--{name.lower().replace('_', '-')}", help=f"default: the Makefile's {name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    given = {n: getattr(args, n.lower()) for n in MAKE_VARIABLES}
    p = Params.resolve({n: v for n, v in given.items() if v is not None})
    want = rendered(p, args.deploy)
    # The directories rendered here hold nothing else (your own overlays go elsewhere, e.g. deploy/overlays/prod).
    owned = {path.parent for path in want if path.is_relative_to(args.deploy)}
    extra = sorted(f for d in owned if d.is_dir() for f in d.iterdir() if f.is_file() and f not in want)
    stale = [path for path, text in want.items() if not (path.is_file() and path.read_text() == text)]
    if not args.check:
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(want[path])
        for path in extra:
            path.unlink()
    verb = "differs from a fresh render (run `make k8s-manifests`)" if args.check else "rendered"
    for path in stale:
        log.info("%s: %s", _shown(path), verb)
    for path in extra:
        log.info("%s: %s", _shown(path), "is not rendered (remove it)" if args.check else "removed (not rendered)")
    return 1 if args.check and (stale or extra) else 0


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


if __name__ == "__main__":
    sys.exit(main())

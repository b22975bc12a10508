"""Write the few parts of `deploy/` that derive from the spec; the rest of it is static YAML.

`deploy/` is a kustomize tree written by hand (a base, an overlay per variant, examples). Only
these come from here, each between a `# k8s:begin NAME` and a `# k8s:end` line or, for the
prometheus-adapter examples, as whole files marked at their top:
- `image` (base/kustomization.yaml): the Makefile's IMAGE, which make passes as `--image`;
- `server-args` (base/deployment.yaml): the image's fixed server flags (pipelines/spec.py) and ports;
- `required-files` (overlays/<variant>/deployment-patch.yaml): every ensemble config and each
  tier's engine files, which the init container `check-models` must find;
- `gpu-product` (overlays/gpu/deployment-patch.yaml): the node selector of the GPU the exported plans
  were built on (their manifests), or spec.GPU_PRODUCT where none were built here;
- `queue-targets` (overlays/<variant>/hpa-patch.yaml): each tier's autoscaling target;
- examples/prometheus-adapter-*.yaml: the adapter rules that serve those per-tier metrics;
- docs/kubernetes.md's table of the targets.
`make k8s-manifests` writes them; `make lint` (and the unit tests) run `--check`, which names
what differs and exits 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from export import tensorrt_plan
from pipelines import spec
from pipelines.paths import REPOSITORY, ROOT
from pipelines.spec import Step, Tier, Variant
from tools.render import image_command, splice, write_or_check

DEPLOY = ROOT / "deploy"
DOC = ROOT / "docs" / "kubernetes.md"  # the Kubernetes page, which holds the autoscaling table
README = DOC  # the name tests/unit/test_k8s.py reads
COMMAND = "make k8s-manifests"
TABLE_BEGIN, TABLE_END = f"<!-- k8s:begin (rendered by `{COMMAND}`) -->", "<!-- k8s:end -->"
IMAGE_PLACEHOLDER = "triton-people"  # the image name deploy/base/deployment.yaml uses; kustomize rewrites it
# What `detector_<tier>/1` and `gender_<tier>/1` hold for each variant: the GPU configs name the
# TensorRT plan (tools/render.py), the cpu models load the ONNX (pipelines/triton/onnx_runtime.py).
ENGINE_FILES = {Variant.GPU: "model.plan", Variant.CPU: "model.onnx"}

# Autoscaling: add pods when the mean queue wait per request reaches this fraction of the tier's
# queue timeout. Were waits exponential, P(wait > timeout) = exp(-1 / fraction) = exp(-10): pods
# come well before requests time out, and streaming (the shortest timeout) scales first.
SCALE_OUT_FRACTION = 0.1
RATE_WINDOW = "1m"


def queue_target_us(tier: Tier, variant: Variant) -> int:
    """Mean queue wait per request (all steps) at which the HPA adds pods."""
    return round(tier.batching(variant).queue_timeout_us * SCALE_OUT_FRACTION)


def metric_name(tier: Tier) -> str:
    """The per-pod custom metric prometheus-adapter serves for one tier."""
    return f"{tier.model(Step.ENSEMBLE)}_queue_us_per_request"


def queue_promql(tier: Tier, matchers: str = "<<.LabelMatchers>>", group_by: str = "<<.GroupBy>>") -> str:
    """Mean queue time per request of one tier: queue time of its steps over the ensemble's successes.

    The ensemble itself does not queue; its steps do (the gender classifier's too: its BLS calls
    wait inside postprocess). The defaults are the adapter's template placeholders.
    """
    steps = "|".join(step.value for step in tier.models)
    sep = "," if matchers else ""
    queue = f'nv_inference_queue_duration_us{{{matchers}{sep}model=~"({steps})_{tier.name}"}}'
    success = f'nv_inference_request_success{{{matchers}{sep}model="{tier.model(Step.ENSEMBLE)}"}}'
    return (
        f"sum by ({group_by}) (rate({queue}[{RATE_WINDOW}]))\n"
        f"  / clamp_min(sum by ({group_by}) (rate({success}[{RATE_WINDOW}])), 0.001)"
    )


def required_files(variant: Variant) -> list[str]:
    """What the copied model repository must hold, so a wrong one fails with a clear message."""
    engines = [f"{t.model(s)}/1/{ENGINE_FILES[variant]}" for t in spec.TIERS for s in spec.ENGINES]
    return [*(f"{t.model(Step.ENSEMBLE)}/config.pbtxt" for t in spec.TIERS), *engines]


# --- The generated YAML (written as text: short, commented, in the files' own layout) ---------


def server_args_block() -> str:
    """The pod's tritonserver arguments: the image's command (tools/render.py) and the spec's ports on all
    interfaces; the shared-memory lock is added at start with a key each pod draws."""
    addresses = [f"--{api}-address=0.0.0.0" for api in ("http", "grpc", "metrics")]
    ports = [f"--http-port={spec.HTTP_PORT}", f"--grpc-port={spec.GRPC_PORT}", f"--metrics-port={spec.METRICS_PORT}"]
    flags = [*image_command()[1:], *(f for pair in zip(addresses, ports, strict=True) for f in pair)]
    return "args:\n" + "\n".join(f"  - {flag}" for flag in [*flags, "--log-verbose=0"])


def gpu_label(gpu_name: str) -> str:
    """A GPU's nvidia.com/gpu.product label: its NVML name without characters outside [A-Za-z0-9-_. ],
    spaces as dashes (GPU Feature Discovery: NVIDIA/k8s-device-plugin, internal/lm/resource.go `sanitise`)."""
    return "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", gpu_name).split())


def gpu_product(repository: Path = REPOSITORY) -> str:
    """The label of the GPU the exported plans were built on; spec.GPU_PRODUCT where none were built here."""
    gpus = {plan.gpu_name for plan in tensorrt_plan.recorded_plans(repository)}
    if len(gpus) > 1:
        raise ValueError(f"the plans were built on different GPUs ({', '.join(sorted(gpus))}): build them all on "
                         "the GPU type the pods will run on")  # fmt: skip
    return gpu_label(gpus.pop()) if gpus else spec.GPU_PRODUCT


def gpu_product_block(repository: Path = REPOSITORY) -> str:
    return f"nvidia.com/gpu.product: {gpu_product(repository)}"


def image_block(image: str) -> str:
    """kustomize's `images:` entry for IMAGE: `name[:tag][@digest]`."""
    name, _, digest = image.partition("@")
    repository, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:  # no tag, or the colon belonged to a registry's port
        repository, tag = name, ""
    lines = [f"- name: {IMAGE_PLACEHOLDER}", f"  newName: {repository}"]
    lines += [f'  newTag: "{tag}"'] if tag else []
    lines += [f"  digest: {digest}"] if digest else []
    return "\n".join(lines)


def cuda_pool_block() -> str:
    """The gpu pod's one GPU gets the spec's CUDA memory pool (what `make serve` passes per GPU)."""
    return f"value: {spec.cuda_pool_flag(0)}"


def required_files_block(variant: Variant) -> str:
    return "value: >-\n" + "\n".join(f"  {f}" for f in required_files(variant))


def queue_targets_block(variant: Variant) -> str:
    return "\n".join(
        f"- type: Pods\n"
        f"  pods:\n"
        f"    metric:\n"
        f"      name: {metric_name(t)}\n"
        f"    target:\n"
        f"      type: AverageValue\n"
        f'      averageValue: "{queue_target_us(t, variant)}"  # us; {_timeout_name(t)} is '
        f"{_duration(t.batching(variant).queue_timeout_us)}"
        for t in spec.TIERS
    )


def adapter_rules() -> str:
    """prometheus-adapter rules serving one per-pod metric per tier (see queue_promql)."""
    series = 'nv_inference_request_success{{model="{}",namespace!="",pod!=""}}'
    return "\n".join(
        f"- seriesQuery: '{series.format(t.model(Step.ENSEMBLE))}'\n"
        f"  resources:\n"
        f"    overrides:\n"
        f"      namespace: {{resource: namespace}}\n"
        f"      pod: {{resource: pod}}\n"
        f"  name:\n"
        f"    matches: ^nv_inference_request_success$\n"
        f"    as: {metric_name(t)}\n"
        f"  metricsQuery: |-\n" + _indent(queue_promql(t), "    ")
        for t in spec.TIERS
    )


def adapter_files() -> dict[str, str]:
    """The two ways of giving the adapter its rules: its ConfigMap, or its Helm chart's values."""
    head = f"# Generated by `{COMMAND}` (tools/k8s.py) from pipelines/spec.py: do not edit.\n"
    configmap = (
        f"{head}# Example: the prometheus-adapter ConfigMap serving the HPA's metrics (merge these rules into yours).\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: prometheus-adapter\n  namespace: monitoring\n"
        "data:\n  config.yaml: |\n    rules:\n" + _indent(adapter_rules(), "      ") + "\n"
    )
    values = (
        f"{head}# Example: the same rules as values of the prometheus-adapter Helm chart (`rules.custom`).\n"
        "rules:\n  custom:\n" + _indent(adapter_rules(), "    ") + "\n"
    )
    return {"prometheus-adapter-configmap.yaml": configmap, "prometheus-adapter-values.yaml": values}


def threshold_table() -> str:
    """docs/kubernetes.md's autoscaling table, so the documented targets are the deployed ones."""
    rows = [
        "| tier | adapter metric (per pod) | queue timeout gpu / cpu | HPA target gpu / cpu (mean queue wait) |",
        "|---|---|---|---|",
    ]
    for t in spec.TIERS:
        timeouts = " / ".join(_duration(t.batching(v).queue_timeout_us) for v in (Variant.GPU, Variant.CPU))
        timeouts = f"none; {_timeout_name(t)}: {timeouts}" if t.tracks else timeouts
        targets = " / ".join(_duration(queue_target_us(t, v)) for v in (Variant.GPU, Variant.CPU))
        rows.append(f"| `{t.name}` | `{metric_name(t)}` | {timeouts} | {targets} |")
    return "\n".join(rows) + "\n"


def _timeout_name(tier: Tier) -> str:
    """A tier that tracks queues without a timeout (Triton's sequence batcher): its target comes from the
    queue timeout its batching declares (the one its stateless steps' sizes come from)."""
    return "its batching's queue timeout" if tier.tracks else "the queue timeout"


def _duration(us: int) -> str:
    return f"{us / 1e6:g} s" if us >= 1_000_000 else f"{us / 1e3:g} ms"


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


# --- Splicing and the command line ---------------------------------------------------------------


def splice_block(text: str, name: str, body: str) -> str:
    """`text` with the lines between `# k8s:begin NAME ...` and `# k8s:end` replaced by `body`,
    indented as the begin line is (so the static file decides where the block sits)."""
    begin = re.search(rf"^( *)# k8s:begin {re.escape(name)}\b.*$", text, re.M)
    if not begin:
        raise ValueError(f"no `# k8s:begin {name}` line")
    indent = begin.group(1)
    return splice(text, begin.group(0), f"{indent}# k8s:end", _indent(body, indent) + "\n")


def blocks(image: str, repository: Path = REPOSITORY) -> Iterator[tuple[str, str, str]]:
    """(file under deploy/, block name, body) of every generated block."""
    yield "base/kustomization.yaml", "image", image_block(image)
    yield "base/deployment.yaml", "server-args", server_args_block()
    yield "overlays/gpu/kustomization.yaml", "cuda-memory-pool", cuda_pool_block()
    yield "overlays/gpu/deployment-patch.yaml", "gpu-product", gpu_product_block(repository)
    for v in spec.VARIANTS:
        yield f"overlays/{v.value}/deployment-patch.yaml", "required-files", required_files_block(v)
        yield f"overlays/{v.value}/hpa-patch.yaml", "queue-targets", queue_targets_block(v)


def rendered(image: str, deploy: Path = DEPLOY, repository: Path = REPOSITORY) -> Iterator[tuple[Path, str]]:
    """Every generated file (path, text); the docs' table only for the project's own deploy/."""
    texts: dict[Path, str] = {}
    for relative, name, body in blocks(image, repository):
        path = deploy / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the static file that holds the `{name}` block is missing")
        try:
            texts[path] = splice_block(texts.get(path, path.read_text()), name, body)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    yield from texts.items()
    for name, text in adapter_files().items():
        yield deploy / "examples" / name, text
    if deploy.resolve() == DEPLOY:
        yield DOC, splice(DOC.read_text(), TABLE_BEGIN, TABLE_END, threshold_table())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.k8s", description=__doc__)
    parser.add_argument("--image", required=True, help="the serving image (the Makefile's IMAGE)")
    parser.add_argument("--deploy", type=Path, default=DEPLOY, help="the kustomize tree (default: deploy/)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a file differs")
    args = parser.parse_args(argv)
    return write_or_check(rendered(args.image, args.deploy), args.check, COMMAND)


if __name__ == "__main__":
    sys.exit(main())

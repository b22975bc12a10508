"""Render the model repository's configs and thin served files from `pipelines.spec`.

`python -m tools.render` writes them; `--check` only compares and exits 1
on any difference, which `make test` runs so committed configs never drift.
Each model gets `config.pbtxt` (the GPU variant: TensorRT plans, python on
GPU, preprocess running the DALI GPU graph) and `configs/cpu.pbtxt` (python
backend: OpenCV letterbox in preprocess, ONNX Runtime), read by
`tritonserver --model-config-name=cpu`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from pipelines import spec
from pipelines.paths import REPOSITORY, ROOT
from pipelines.spec import Step, Tier, Variant

README = ROOT / "README.md"  # holds the tiers table
SERVING_DOC = ROOT / "docs" / "serving.md"  # holds the defaults-and-limits table
TABLE_BEGIN, TABLE_END = "<!-- tiers:begin (rendered by `make configs`) -->", "<!-- tiers:end -->"
FACTS_BEGIN, FACTS_END = "<!-- facts:begin (rendered by `make configs`) -->", "<!-- facts:end -->"
CONFIG_PATHS = {Variant.GPU: Path("config.pbtxt"), Variant.CPU: Path("configs") / "cpu.pbtxt"}

HEADER = "# Rendered from pipelines/spec.py by `make configs`; edit the spec, not this file.\n"

# What each python-backend model.py imports (postprocess serves both variants).
PYTHON_MODELS = {
    Step.PREPROCESS: "pipelines.triton.preprocess",
    Step.DETECTOR: "pipelines.triton.onnx_runtime",
    Step.POSTPROCESS: "pipelines.triton.postprocess",
    Step.GENDER: "pipelines.triton.onnx_runtime",
    Step.FACE: "pipelines.triton.onnx_runtime",
    Step.TRACKER: "pipelines.triton.tracker",
}
GENDER_LABELS = ",".join(
    [f"{v}={label}" for v, label in enumerate(spec.GENDER_LABELS)] + [f"{spec.UNDETERMINED}=undetermined"]
)


def _tensor(message: mc.ModelInput | mc.ModelOutput, tensor: spec.Tensor) -> None:
    message.name = tensor.name
    message.data_type = mc.DataType.Value(f"TYPE_{tensor.dtype.value}")
    message.dims.extend(tensor.dims)


def _inputs(config: mc.ModelConfig, tensors: tuple[spec.Tensor, ...], ragged: bool = False) -> None:
    for tensor in tensors:
        message = config.input.add()
        _tensor(message, tensor)
        message.optional = tensor.optional
        message.allow_ragged_batch = ragged and tensor is spec.IMAGE


def _outputs(config: mc.ModelConfig, tensors: tuple[spec.Tensor, ...]) -> None:
    for tensor in tensors:
        _tensor(config.output.add(), tensor)


def _batching(config: mc.ModelConfig, b: spec.Batching, admits: bool) -> None:
    """`admits`: the tier's first step, the only one with a queue limit and timeout (pipelines.admission)."""
    d = config.dynamic_batching
    d.preferred_batch_size.extend(b.preferred_batch_sizes)
    d.max_queue_delay_microseconds = b.max_queue_delay_us
    d.preserve_ordering = b.preserve_ordering
    if b.priority_levels:
        d.priority_levels = b.priority_levels
        d.default_priority_level = b.priority_levels
    if admits and (b.max_queue_size or b.queue_timeout_us):
        q = d.default_queue_policy
        q.timeout_action = mc.ModelQueuePolicy.TimeoutAction.Value(b.timeout_action.value)
        q.default_timeout_microseconds = b.queue_wait_us
        q.allow_timeout_override = True
        q.max_queue_size = b.max_queue_size


def _instances(config: mc.ModelConfig, b: spec.Batching, kind: str) -> None:
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.Kind.Value(kind)
    group.count = b.instances


def _parameter(config: mc.ModelConfig, key: str, value: str) -> None:
    config.parameters[key].string_value = value


def _sequences(config: mc.ModelConfig, b: spec.Batching, t: spec.Tracking) -> None:
    """A tracking tier's preprocess: Triton's sequence batcher takes each camera as a sequence (spec.Tracking);
    frames of different cameras batch as the tier's batching says, each camera's in order."""
    sequence = config.sequence_batching
    sequence.max_sequence_idle_microseconds = t.idle_timeout_us
    sequence.oldest.max_candidate_sequences = t.candidate_sequences
    sequence.oldest.preferred_batch_size.extend(b.preferred_batch_sizes)
    sequence.oldest.max_queue_delay_microseconds = b.max_queue_delay_us
    sequence.oldest.preserve_ordering = b.preserve_ordering
    _parameter(config, "max_cameras", str(t.cameras))


def tracker_config(tier: Tier, variant: Variant) -> mc.ModelConfig:
    """The track tier's tracker: one instance (it holds every camera's tracks), in order, never refusing."""
    t = spec.TRACKING[variant]
    config = mc.ModelConfig(name=tier.model(Step.TRACKER), max_batch_size=t.max_batch_size, backend="python")
    _inputs(config, spec.STEP_INPUTS[Step.TRACKER])
    _outputs(config, spec.STEP_OUTPUTS[Step.TRACKER])
    config.dynamic_batching.max_queue_delay_microseconds = t.max_queue_delay_us
    config.dynamic_batching.preserve_ordering = True
    # numpy on the host on both variants: Triton hands it host copies of the GPU variant's outputs.
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    _parameter(config, "idle_timeout_us", str(t.idle_timeout_us))
    return config


def step_config(tier: Tier, step: Step, variant: Variant) -> mc.ModelConfig:
    if step is Step.TRACKER:
        return tracker_config(tier, variant)
    batching = spec.BLS_BATCHING[step][variant] if step in spec.BLS_BATCHING else tier.batching(variant)
    config = mc.ModelConfig(name=tier.model(step), max_batch_size=batching.max_batch_size)
    _inputs(config, spec.STEP_INPUTS[step], ragged=step is Step.PREPROCESS)
    _outputs(config, tier.step_outputs(step))
    if variant is Variant.GPU and step in spec.ENGINES:
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
    else:
        # Python everywhere else; on the GPU variant preprocess runs DALI's GPU graph itself
        # (pipelines/dali/gpu.py): a batch that fails there is retried request by request, which
        # the DALI backend cannot do.
        config.backend = "python"
    if variant is Variant.GPU and step is Step.POSTPROCESS:
        # Hand the python model the detector's output where it already is: on the GPU.
        _parameter(config, "FORCE_CPU_ONLY_INPUT_TENSORS", "no")
    if step is Step.PREPROCESS:
        _parameter(config, "max_in_flight", str(batching.max_in_flight))
        if batching.admission_wait_us is not None:  # absent: hold a batch as long as it takes
            _parameter(config, "admission_wait_us", str(batching.admission_wait_us))
    if step is Step.POSTPROCESS:
        if tier.tracks:  # the tracker also sees the boxes under CONF_THRESHOLD (spec.CANDIDATES)
            _parameter(config, "track_detection_conf", f"{spec.TRACK_DETECTION_CONF:g}")
        _parameter(config, "detector", tier.model(Step.DETECTOR))
        for called, called_batching in spec.BLS_BATCHING.items():  # the model's name and its chunk size
            _parameter(config, called.value, tier.model(called))
            _parameter(config, f"{called.value}_max_batch", str(called_batching[variant].max_batch_size))
    kind = "KIND_GPU" if variant is Variant.GPU else "KIND_CPU"
    _instances(config, batching, kind)
    if step is Step.PREPROCESS and tier.tracks:
        _sequences(config, batching, spec.TRACKING[variant])
    else:
        _batching(config, batching, admits=step is Step.PREPROCESS)
    return config


def ensemble_config(tier: Tier, variant: Variant) -> mc.ModelConfig:
    batching = tier.batching(variant)
    config = mc.ModelConfig(name=tier.model(Step.ENSEMBLE), platform="ensemble", max_batch_size=batching.max_batch_size)
    _inputs(config, spec.ENSEMBLE_INPUTS)
    _outputs(config, tier.outputs)
    _parameter(config, "gender_labels", GENDER_LABELS)
    for step in tier.steps:
        s = config.ensemble_scheduling.step.add(model_name=tier.model(step), model_version=-1)
        for tensor in spec.STEP_INPUTS[step]:
            s.input_map[tensor.name] = tensor.name
        for tensor in tier.step_outputs(step):
            s.output_map[tensor.name] = tensor.name
    return config


def _pbtxt(config: mc.ModelConfig) -> str:
    return HEADER + text_format.MessageToString(config)


def _model_py(step: Step) -> str:
    variants = "the cpu variant" if step in spec.ENGINES else "both variants"
    return (
        f'"""Python-backend model for {variants}; the logic lives in {PYTHON_MODELS[step]}.\n\n'
        'Rendered by `make configs`."""\n\n'
        f"from {PYTHON_MODELS[step]} import TritonPythonModel  # noqa: F401\n"
    )


def tier_table() -> str:
    """The README's table of tiers, so the documented numbers are the served ones."""
    columns = ("tier (ensemble)", "purpose", "variant", "max batch", "preferred", "queue delay", "queue",
               "on timeout", "instances", "images in flight")  # fmt: skip
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for t in spec.TIERS:
        for variant in spec.VARIANTS:
            b = t.batching(variant)
            order = ", in order" if b.preserve_ordering else ""
            priority = f", {b.priority_levels} priorities" if b.priority_levels else ""
            queue = f"{b.max_queue_size}{priority} | {b.timeout_action.value} after {b.queue_timeout_us / 1e6:g} s"
            if t.tracks:  # its first step is Triton's sequence batcher, which has no queue limit or timeout
                queue = "no limit | none (sequence batcher)"
            rows.append(
                f"| `{t.model(Step.ENSEMBLE)}` | {t.purpose} | {variant.value} | {b.max_batch_size} | "
                f"{', '.join(map(str, b.preferred_batch_sizes))} | {b.max_queue_delay_us} us | {queue}"
                f"{order} | {b.instances} | {b.max_in_flight}{' per GPU' if variant is spec.Variant.GPU else ''} |"
            )
    return "\n".join(rows) + "\n"


def splice(text: str, begin: str, end: str, body: str) -> str:
    """`text` with what lies between the marker lines `begin` and `end` replaced by `body`."""
    head, found, rest = text.partition(begin + "\n")
    if not found or end not in rest:
        raise ValueError(f"markers {begin!r} ... {end!r} not found")
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body}{end}{tail}"


def write_or_check(rendered: Iterable[tuple[Path, str]], check: bool, command: str) -> int:
    """Write every file whose text differs from its render, or with `check` only name them and return 1.

    `command` is what regenerates them (said in the message), such as `make configs`.
    """
    stale = []
    for path, text in rendered:
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = f"differ from the spec (run `{command}`)" if check else "rendered"
    for relative in stale:
        print(f"{relative}: {verb}")
    return 1 if check and stale else 0


def files() -> Iterator[tuple[Path, str]]:
    """Every rendered file, relative to the model repository, with its text."""
    for tier in spec.TIERS:
        for variant in spec.VARIANTS:
            for step in tier.models:
                yield Path(tier.model(step)) / CONFIG_PATHS[variant], _pbtxt(step_config(tier, step, variant))
            yield Path(tier.model(Step.ENSEMBLE)) / CONFIG_PATHS[variant], _pbtxt(ensemble_config(tier, variant))
        for step in tier.models:
            yield Path(tier.model(step)) / "1" / "model.py", _model_py(step)
        yield Path(tier.model(Step.ENSEMBLE)) / "1" / ".gitkeep", ""


def facts_table() -> str:
    """docs/serving.md's table of defaults and limits, so the documented numbers are the served ones."""
    mib = spec.MAX_IMAGE_BYTES / (1 << 20)
    rows = [
        ("`CONF_THRESHOLD` default (Ultralytics `predict`'s)", f"{spec.DEFAULT_CONF_THRESHOLD:g}"),
        ("`IOU_THRESHOLD` default (Ultralytics `predict`'s)", f"{spec.DEFAULT_IOU_THRESHOLD:g}"),
        ("`GENDER_THRESHOLD` default", f"{spec.DEFAULT_GENDER_THRESHOLD:g}"),
        ("`MAX_DET`: persons per image, the length of the padded outputs", f"{spec.MAX_DET}"),
        ("detector input (letterbox side, pad value)", f"{spec.IMAGE_SIZE} px, {spec.PAD_VALUE}"),
        ("bytes per image", f"{mib:g} MiB"),
        ("pixels per side", f"{spec.MAX_IMAGE_SIDE}"),
        ("pixels per image", f"{spec.MAX_IMAGE_PIXELS} ({spec.MAX_IMAGE_PIXELS / 1e6:.1f} MP)"),
        ("face: detector input side, smallest face classified, score", f"{spec.FACE_REGION_SIZE} px, "
         f"{spec.MIN_FACE_PX} px, {spec.FACE_THRESHOLD:g}"),
        ("head/person crops: smallest side classified", f"{spec.MIN_CROP_PX} px"),
        ("ports: HTTP, gRPC, metrics (bound to)", f"{spec.HTTP_PORT}, {spec.GRPC_PORT}, {spec.METRICS_PORT} "
         f"({spec.HOST})"),
        ("GPU variant: CUDA memory pool per GPU", f"{spec.CUDA_MEMORY_POOL_BYTES / (1 << 30):.1f} GiB"),
    ]  # fmt: skip
    return "| what | value |\n|---|---|\n" + "".join(f"| {what} | {value} |\n" for what, value in rows)


TRACKING_DOC = ROOT / "docs" / "tracking.md"  # holds the tracking limits table
TRACKING_BEGIN, TRACKING_END = "<!-- tracking:begin (rendered by `make configs`) -->", "<!-- tracking:end -->"


def tracking_table() -> str:
    """docs/tracking.md's limits, so the documented numbers are the served ones."""
    rows = ["| variant | cameras at once | Triton's sequence slots per preprocess instance | idle timeout | "
            "frames per tracker execution |", "|---|---|---|---|---|"]  # fmt: skip
    for variant in spec.VARIANTS:
        t = spec.TRACKING[variant]
        rows.append(f"| {variant.value} | {t.cameras} | {t.candidate_sequences} | {t.idle_timeout_us / 1e6:g} s | "
                    f"{t.max_batch_size} |")  # fmt: skip
    return "\n".join(rows) + "\n"


DOCKERFILE = ROOT / "Dockerfile.triton"
ENTRYPOINT_BEGIN, ENTRYPOINT_END = "# render:begin entrypoint (rendered by `make configs`)", "# render:end"


def image_command() -> list[str]:
    """The serving image's server: the spec's fixed flags on the mounted repository (the pod and the local
    server add their endpoints, tools/server/triton.py endpoint_args)."""
    return ["tritonserver", f"--model-repository={spec.IMAGE_REPOSITORY}", *spec.SERVER_FLAGS]


def entrypoint() -> str:
    return f"ENTRYPOINT {json.dumps(image_command())}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.render", description=__doc__)
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a file differs")
    args = parser.parse_args(argv)
    rendered = [(args.repository / relative, text) for relative, text in files()]
    rendered.append((README, splice(README.read_text(), TABLE_BEGIN, TABLE_END, tier_table())))
    rendered.append((SERVING_DOC, splice(SERVING_DOC.read_text(), FACTS_BEGIN, FACTS_END, facts_table())))
    rendered.append((DOCKERFILE, splice(DOCKERFILE.read_text(), ENTRYPOINT_BEGIN, ENTRYPOINT_END, entrypoint())))
    rendered.append((TRACKING_DOC, splice(TRACKING_DOC.read_text(), TRACKING_BEGIN, TRACKING_END, tracking_table())))
    return write_or_check(rendered, args.check, "make configs")


if __name__ == "__main__":
    sys.exit(main())

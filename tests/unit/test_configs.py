"""The committed model repository: rendered from the spec, parseable, and within the rules Triton enforces at load."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export import tensorrt_plan
from pipelines import paths, spec
from pipelines.spec import Step, Variant
from tools import render

REPOSITORY = paths.REPOSITORY
VARIANTS = spec.VARIANTS
ALL_STEPS = (*spec.MODELS, Step.ENSEMBLE)  # every model of a tier: the ensemble's steps, gender, the ensemble
CASES = [(tier, variant) for tier in spec.TIERS for variant in VARIANTS]
CASE_IDS = [f"{tier.name}-{variant.value}" for tier, variant in CASES]


def load(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def config(tier: spec.Tier, step: Step, variant: Variant) -> mc.ModelConfig:
    return load(REPOSITORY / tier.model(step) / render.CONFIG_PATHS[variant])


def batching(tier: spec.Tier, step: Step, variant: Variant) -> spec.Batching:
    """What the spec says a model batches with: its tier's, or its own when postprocess calls it through BLS."""
    return spec.BLS_BATCHING[step][variant] if step in spec.BLS_BATCHING else tier.batching(variant)


def parameters(c: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in c.parameters.items()}


def test_render_covers_every_tier_step_and_variant() -> None:
    paths = [path for path, _ in render.files()]
    assert len(paths) == len(set(paths)), "render.files() yields a path twice"
    expected = {
        Path(tier.model(step)) / render.CONFIG_PATHS[variant]
        for tier in spec.TIERS
        for step in ALL_STEPS
        for variant in VARIANTS
    }
    expected |= {Path(tier.model(step)) / "1" / "model.py" for tier in spec.TIERS for step in tier.models}
    assert expected <= set(paths), f"not rendered: {sorted(map(str, expected - set(paths)))}"


def test_committed_repository_equals_a_fresh_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert render.main(["--check"]) == 0, f"committed files differ from the spec:\n{capsys.readouterr().out}"


def test_check_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check fails on an edited or missing file (so the committed-repository test can fail)."""
    assert render.main(["--repository", str(tmp_path)]) == 0
    assert render.main(["--repository", str(tmp_path), "--check"]) == 0, "a fresh render does not check clean"
    edited = tmp_path / spec.tier("batch").model(Step.DETECTOR) / render.CONFIG_PATHS[Variant.CPU]
    edited.write_text(edited.read_text().replace("max_batch_size: 16", "max_batch_size: 17"))
    (tmp_path / spec.tier("streaming").model(Step.PREPROCESS) / "1" / "model.py").unlink()
    capsys.readouterr()
    assert render.main(["--repository", str(tmp_path), "--check"]) == 1, "--check missed an edited config"
    out = capsys.readouterr().out
    assert "detector_batch" in out and "preprocess_streaming" in out, f"--check did not name both files:\n{out}"


def test_every_committed_pbtxt_parses() -> None:
    paths = sorted(REPOSITORY.rglob("*.pbtxt"))
    expected = sum(len(tier.models) + 1 for tier in spec.TIERS) * len(VARIANTS)  # + 1: the ensemble
    assert len(paths) == expected, f"{len(paths)} configs, expected {expected}: {[str(p) for p in paths]}"
    for path in paths:
        parsed = load(path)
        assert parsed.name == path.relative_to(REPOSITORY).parts[0], f"{path}: name {parsed.name!r} is not its folder"


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_dynamic_batching_rules(tier: spec.Tier, variant: Variant) -> None:
    """Triton refuses preserve_ordering with priority levels or DELAY, and preferred sizes above the max."""
    for step in spec.MODELS:
        if tier.tracks and step is Step.PREPROCESS:
            continue  # Triton's sequence batcher (test_track_tier_takes_cameras_as_sequences_and_keeps_their_order)
        c = config(tier, step, variant)
        d = c.dynamic_batching
        label = f"{c.name} ({variant.value})"
        assert c.HasField("dynamic_batching"), f"{label}: no dynamic batching"
        assert c.max_batch_size > 0, f"{label}: max_batch_size {c.max_batch_size}"
        if step in spec.PIPELINE:  # the classifier takes whatever chunks postprocess sends
            assert d.preferred_batch_size, f"{label}: no preferred batch sizes"
        too_big = [p for p in d.preferred_batch_size if not 0 < p <= c.max_batch_size]
        assert not too_big, f"{label}: preferred {too_big} > max_batch_size {c.max_batch_size}"
        policies = [d.default_queue_policy, *d.priority_queue_policy.values()]
        delays = any(p.timeout_action == mc.ModelQueuePolicy.DELAY for p in policies)
        if d.preserve_ordering:
            assert d.priority_levels == 0, f"{label}: preserve_ordering with priority_levels {d.priority_levels}"
            assert not delays, f"{label}: preserve_ordering with timeout_action DELAY"
        if d.priority_levels:
            assert 1 <= d.default_priority_level <= d.priority_levels, f"{label}: default priority out of range"
        assert [g.count for g in c.instance_group] and all(g.count >= 1 for g in c.instance_group), label


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_ensemble_batch_fits_every_step(tier: spec.Tier, variant: Variant) -> None:
    ensemble = config(tier, Step.ENSEMBLE, variant)
    assert ensemble.platform == "ensemble", f"{ensemble.name}: platform {ensemble.platform!r}"
    assert not ensemble.HasField("dynamic_batching"), f"{ensemble.name}: ensembles cannot batch dynamically"
    for step in spec.PIPELINE:
        c = config(tier, step, variant)
        assert ensemble.max_batch_size <= c.max_batch_size, (
            f"{ensemble.name} ({variant.value}) max_batch_size {ensemble.max_batch_size} > {c.name} {c.max_batch_size}"
        )


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_postprocess_names_its_models(tier: spec.Tier, variant: Variant) -> None:
    """postprocess reads the detector's, classifier's and face detector's manifests and calls the last two by
    these names, in chunks of at most their max batch."""
    post = config(tier, Step.POSTPROCESS, variant)
    found = parameters(post)
    label = f"{post.name} ({variant.value})"
    for key, step in (("detector", Step.DETECTOR), ("gender", Step.GENDER), ("face", Step.FACE)):
        assert found.get(key) == tier.model(step), f"{label}: parameter {key}={found.get(key)!r}"
        path = REPOSITORY / found[key] / render.CONFIG_PATHS[variant]
        assert path.is_file(), f"{label}: {key}={found[key]!r} names no model of the repository ({path})"
        named = load(path)
        assert named.name == found[key], f"{label}: {path} is model {named.name!r}"
        inputs = [t.name for t in named.input]
        assert inputs == [t.name for t in spec.STEP_INPUTS[step]], f"{label}: {key} model takes {inputs}"

    gender = config(tier, Step.GENDER, variant)
    chunk = int(found.get("gender_max_batch", "0"))
    assert chunk == spec.GENDER_BATCHING[variant].max_batch_size, f"{label}: gender_max_batch {chunk}"
    assert 0 < chunk <= gender.max_batch_size, f"{label}: chunks of {chunk} > {gender.name} max {gender.max_batch_size}"
    face = config(tier, Step.FACE, variant)
    chunk = int(found.get("face_max_batch", "0"))
    assert chunk == spec.FACE_BATCHING[variant].max_batch_size, f"{label}: face_max_batch {chunk}"
    assert 0 < chunk <= face.max_batch_size, f"{label}: chunks of {chunk} > {face.name} max {face.max_batch_size}"


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_gender_model(tier: spec.Tier, variant: Variant) -> None:
    """Called by postprocess through BLS, so not an ensemble step; its own batching; CROPS -> PROBABILITIES."""
    c = config(tier, Step.GENDER, variant)
    label = f"{c.name} ({variant.value})"
    steps = [s.model_name for s in config(tier, Step.ENSEMBLE, variant).ensemble_scheduling.step]
    assert c.name not in steps, f"{label}: is a step of the ensemble {steps}"
    assert c.max_batch_size == spec.GENDER_BATCHING[variant].max_batch_size, f"{label}: max_batch_size"
    assert _contract(c.input) == _spec_contract(spec.STEP_INPUTS[Step.GENDER], True), f"{label}: inputs"
    assert _contract(c.output) == _spec_contract(spec.STEP_OUTPUTS[Step.GENDER], False), f"{label}: outputs"
    assert not c.dynamic_batching.preserve_ordering and not c.dynamic_batching.priority_levels, label


def _contract(tensors: list[mc.ModelInput] | list[mc.ModelOutput]) -> list[tuple]:
    return [(t.name, mc.DataType.Name(t.data_type), tuple(t.dims), getattr(t, "optional", False)) for t in tensors]


def _spec_contract(tensors: tuple[spec.Tensor, ...], with_optional: bool) -> list[tuple]:
    return [(t.name, f"TYPE_{t.dtype.value}", t.dims, t.optional and with_optional) for t in tensors]


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_ensemble_contract_is_the_spec(tier: spec.Tier, variant: Variant) -> None:
    ensemble = config(tier, Step.ENSEMBLE, variant)
    assert _contract(ensemble.input) == _spec_contract(spec.ENSEMBLE_INPUTS, True), f"{ensemble.name}: inputs"
    assert _contract(ensemble.output) == _spec_contract(tier.outputs, False), f"{ensemble.name}: outputs"


def test_ensemble_contract_is_identical_across_tiers() -> None:
    """Every tier answers the same tensors; the track tier adds its TRACK_* outputs and nothing else."""
    contracts = {
        (tier.name, variant): (_contract(c.input), _contract([o for o in c.output if o.name not in tracked]))
        for tier, variant in CASES
        for c in [config(tier, Step.ENSEMBLE, variant)]
        for tracked in [{t.name for t in spec.TRACK_OUTPUTS}]
    }
    first = next(iter(contracts.values()))
    differ = [key for key, value in contracts.items() if value != first]
    assert not differ, f"ensemble inputs/outputs differ for {differ}"


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_ensemble_maps_reference_existing_tensors(tier: spec.Tier, variant: Variant) -> None:
    """input_map keys are the step's inputs, output_map keys its outputs; every value is produced before use."""
    ensemble = config(tier, Step.ENSEMBLE, variant)
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [tier.model(step) for step in tier.steps], f"{ensemble.name}: steps"
    assert Step.GENDER not in spec.PIPELINE, "the gender classifier is called by postprocess, not by the ensemble"
    available = {t.name for t in ensemble.input}
    for s in steps:
        c = load(REPOSITORY / s.model_name / render.CONFIG_PATHS[variant])
        inputs, outputs = {t.name: t for t in c.input}, {t.name for t in c.output}
        label = f"{ensemble.name} ({variant.value}) -> {s.model_name}"
        assert set(s.input_map) <= set(inputs), f"{label}: input_map keys {set(s.input_map) - set(inputs)} unknown"
        assert set(s.output_map) <= outputs, f"{label}: output_map keys {set(s.output_map) - outputs} unknown"
        required = {name for name, t in inputs.items() if not t.optional}
        assert required <= set(s.input_map), f"{label}: required inputs {required - set(s.input_map)} unmapped"
        unproduced = set(s.input_map.values()) - available
        assert not unproduced, f"{label}: reads {unproduced} before any step produces them"
        available |= set(s.output_map.values())
    missing = {t.name for t in ensemble.output} - available
    assert not missing, f"{ensemble.name} ({variant.value}): outputs {missing} are produced by no step"


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_ensemble_hands_original_from_preprocess_to_postprocess(tier: spec.Tier, variant: Variant) -> None:
    """The crops are cut from the decoded image: preprocess's ORIGINAL must reach postprocess unchanged."""
    steps = {s.model_name: s for s in config(tier, Step.ENSEMBLE, variant).ensemble_scheduling.step}
    pre, post = steps[tier.model(Step.PREPROCESS)], steps[tier.model(Step.POSTPROCESS)]
    name = spec.ORIGINAL.name
    assert name in pre.output_map and name in post.input_map, f"{tier.name} ({variant.value}): ORIGINAL is not mapped"
    written, read = pre.output_map[name], post.input_map[name]
    assert written == read, f"{tier.name} ({variant.value}): preprocess writes {written!r}, postprocess reads {read!r}"
    (original,) = [t for t in config(tier, Step.PREPROCESS, variant).output if t.name == name]
    assert mc.DataType.Name(original.data_type) == "TYPE_UINT8" and list(original.dims) == [-1, -1, 3], original


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_tickets_go_from_preprocess_to_postprocess(tier: spec.Tier, variant: Variant) -> None:
    """Admission (pipelines.admission): preprocess's ticket reaches postprocess, which hands it back."""
    steps = {s.model_name: s for s in config(tier, Step.ENSEMBLE, variant).ensemble_scheduling.step}
    pre, post = steps[tier.model(Step.PREPROCESS)], steps[tier.model(Step.POSTPROCESS)]
    name = spec.TICKET.name
    assert pre.output_map.get(name) == post.input_map.get(name) == name, f"{tier.name} ({variant.value})"
    found = parameters(config(tier, Step.PREPROCESS, variant))
    b = tier.batching(variant)
    assert found.get("max_in_flight") == str(b.max_in_flight), f"{tier.name} ({variant.value}): {found}"
    wait = None if b.admission_wait_us is None else str(b.admission_wait_us)
    assert found.get("admission_wait_us") == wait, f"{tier.name} ({variant.value}): {found}"
    if b.timeout_action is spec.TimeoutAction.DELAY:
        assert wait is None, "a DELAY tier holds a batch for room as long as it takes"
    else:  # a request is refused at most the tier's timeout after it came: its queue wait plus the hold
        assert b.queue_wait_us + int(wait or 0) == b.queue_timeout_us and b.queue_wait_us > 0


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_ensemble_documents_gender_labels(tier: spec.Tier, variant: Variant) -> None:
    ensemble = config(tier, Step.ENSEMBLE, variant)
    text = parameters(ensemble).get("gender_labels")
    assert text == "0=female,1=male,-1=undetermined", f"{ensemble.name} ({variant.value}): gender_labels {text!r}"
    pairs = dict(item.split("=") for item in text.split(","))
    expected = {str(v): name for v, name in enumerate(spec.GENDER_LABELS)} | {str(spec.UNDETERMINED): "undetermined"}
    assert pairs == expected, f"{ensemble.name}: gender_labels {pairs} disagree with the spec {expected}"


@pytest.mark.parametrize("tier", spec.TIERS, ids=spec.TIER_NAMES)
def test_backends_and_instance_kinds(tier: spec.Tier) -> None:
    pre, det, post, gender, face = (config(tier, step, Variant.GPU) for step in spec.MODELS)
    # GPU preprocess: the python backend runs DALI's GPU graph (validation first, per-request retry).
    assert pre.backend == "python", f"{pre.name}: GPU backend {pre.backend!r}"
    assert "FORCE_CPU_ONLY_INPUT_TENSORS" not in parameters(pre), "IMAGE bytes belong on the host"
    for c in (det, gender, face):
        assert c.platform == "tensorrt_plan" and c.default_model_filename == "model.plan", f"{c.name}: GPU platform"
    assert post.backend == "python", f"{post.name}: GPU backend {post.backend!r}"
    assert parameters(post).get("FORCE_CPU_ONLY_INPUT_TENSORS") == "no", f"{post.name}: inputs copied to the host"
    for c in (pre, det, post, gender, face):
        kinds = [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in c.instance_group]
        assert kinds == ["KIND_GPU"], f"{c.name} (gpu): instance kinds {kinds}"
    for step in spec.MODELS:
        c = config(tier, step, Variant.CPU)
        kinds = [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in c.instance_group]
        assert c.backend == "python" and not c.platform, (
            f"{c.name} (cpu): backend {c.backend!r} platform {c.platform!r}"
        )
        assert kinds == ["KIND_CPU"], f"{c.name} (cpu): instance kinds {kinds}"


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_preprocess_image_is_ragged(tier: spec.Tier, variant: Variant) -> None:
    c = config(tier, Step.PREPROCESS, variant)
    flags = {t.name: t.allow_ragged_batch for t in c.input}
    assert flags == {spec.IMAGE.name: True}, f"{c.name} ({variant.value}): allow_ragged_batch {flags}"


@pytest.mark.parametrize(("tier", "variant"), CASES, ids=CASE_IDS)
def test_batch_sizes_come_from_the_spec(tier: spec.Tier, variant: Variant) -> None:
    for step in ALL_STEPS:
        b = batching(tier, Step.PREPROCESS if step is Step.ENSEMBLE else step, variant)
        c = config(tier, step, variant)
        assert c.max_batch_size == b.max_batch_size, f"{c.name} ({variant.value}): max_batch_size"
        if step is not Step.ENSEMBLE:
            sequences = tier.tracks and step is Step.PREPROCESS  # Triton's sequence batcher: no queue policy
            d = c.sequence_batching.oldest if sequences else c.dynamic_batching
            preferred = tuple(d.preferred_batch_size)
            assert preferred == b.preferred_batch_sizes, f"{c.name} ({variant.value}): preferred {preferred}"
            assert d.max_queue_delay_microseconds == b.max_queue_delay_us, f"{c.name} ({variant.value}): queue delay"
            if not sequences:
                # The tier refuses only at its first step; the later ones never refuse what it admitted.
                queue = (b.max_queue_size, b.queue_wait_us) if step is Step.PREPROCESS else (0, 0)
                policy = c.dynamic_batching.default_queue_policy
                got = (policy.max_queue_size, policy.default_timeout_microseconds)
                assert got == queue, f"{c.name} ({variant.value}): queue size and timeout {got}"
            assert [g.count for g in c.instance_group] == [b.instances], f"{c.name} ({variant.value}): instances"


@pytest.mark.parametrize("tier", spec.TIERS, ids=spec.TIER_NAMES)
def test_rendered_model_py_imports_its_module(tier: spec.Tier) -> None:
    """Every python-backend model.py is one import of an existing module (gender and detector: ONNX Runtime)."""
    assert render.PYTHON_MODELS[Step.GENDER] == render.PYTHON_MODELS[Step.DETECTOR] == "pipelines.triton.onnx_runtime"
    for step in spec.MODELS:
        module = render.PYTHON_MODELS[step]
        text = (REPOSITORY / tier.model(step) / "1" / "model.py").read_text()
        assert f"from {module} import TritonPythonModel" in text, f"{tier.model(step)}/1/model.py does not use {module}"
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"


@pytest.mark.parametrize("tier", spec.TIERS, ids=spec.TIER_NAMES)
def test_tensorrt_profile(tier: spec.Tier) -> None:
    expected = (1, max(tier.gpu.preferred_batch_sizes), tier.gpu.max_batch_size)
    assert tensorrt_plan.profile(tier.gpu) == expected, f"{tier.name}: profile != (1, max preferred, max batch)"
    lo, opt, hi = tensorrt_plan.profile(tier.gpu)
    assert lo <= opt <= hi, f"{tier.name}: profile {lo, opt, hi} is not ordered"


TRACKED = [(tier, variant) for tier, variant in CASES if tier.tracks]


@pytest.mark.parametrize(("tier", "variant"), TRACKED, ids=[f"{t.name}-{v.value}" for t, v in TRACKED])
def test_track_tier_takes_cameras_as_sequences_and_keeps_their_order(tier: spec.Tier, variant: Variant) -> None:
    """Triton's sequence batcher on preprocess (before any work is admitted), every later step in arrival order
    with one tracker instance: a camera's frames reach the tracker in the order they arrived. Also what keeps
    the order between steps in releases whose ensemble runs its callbacks from a thread pool: it does so
    only for steps with sequence batching or preserve_ordering (triton-inference-server/core PR #438)."""
    t = spec.TRACKING[variant]
    gate = config(tier, Step.PREPROCESS, variant)
    sequence = gate.sequence_batching
    assert not gate.HasField("dynamic_batching"), gate.name
    assert sequence.HasField("oldest") and sequence.oldest.preserve_ordering, gate.name
    assert sequence.oldest.max_candidate_sequences == 2 * t.cameras == 2 * int(parameters(gate)["max_cameras"])
    assert list(sequence.oldest.preferred_batch_size) == list(tier.batching(variant).preferred_batch_sizes)
    assert sequence.max_sequence_idle_microseconds == t.idle_timeout_us
    tracker = config(tier, Step.TRACKER, variant)
    assert parameters(tracker)["idle_timeout_us"] == str(t.idle_timeout_us), "one idle timeout for the two"
    assert [(g.kind, g.count) for g in tracker.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    for step in (Step.DETECTOR, Step.POSTPROCESS, Step.TRACKER):
        c = config(tier, step, variant)
        assert c.dynamic_batching.preserve_ordering, f"{c.name} ({variant.value}) does not keep the frames' order"
    queue = tracker.dynamic_batching.default_queue_policy
    assert queue.max_queue_size == 0 and queue.default_timeout_microseconds == 0, "the tracker never refuses"
    steps = [s.model_name for s in config(tier, Step.ENSEMBLE, variant).ensemble_scheduling.step]
    assert steps == [tier.model(s) for s in (*spec.PIPELINE, Step.TRACKER)]
    post = config(tier, Step.POSTPROCESS, variant)
    assert parameters(post)["track_detection_conf"] == f"{spec.TRACK_DETECTION_CONF:g}"
    assert spec.CANDIDATES.name in {o.name for o in post.output}


def test_only_the_track_tier_tracks() -> None:
    for tier in spec.TIERS:
        post = parameters(config(tier, Step.POSTPROCESS, Variant.CPU))
        assert ("track_detection_conf" in post) is tier.tracks, tier.name
        assert (tier.name in spec.IMAGE_TIER_NAMES) is not tier.tracks, tier.name

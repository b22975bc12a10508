"""The trtexec command lines, rendered from the spec and the manifests, and the refusal of mismatched plans.

TensorRT cannot run here; these tests pin what is handed to trtexec in the serving image (flags as
TensorRT 10's trtexec parses them, NVIDIA/TensorRT samples/common/sampleOptions.cpp) and what is compared
before serving a plan.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from export import tensorrt_plan
from export.tensorrt_plan import Gpu, PlanError, Target
from pipelines import manifest, spec
from pipelines.manifest import Artifact, Classifier, Detector, FaceDetector, Plan, Preprocessing
from pipelines.spec import Step, Variant
from tools import render

H100 = Gpu("NVIDIA H100 80GB HBM3", "9.0")
L4 = Gpu("NVIDIA L4", "8.9")
TARGET = Target("10.16.0.72", (H100,))
GENDER_SIZE = 32
ARTIFACT = Artifact("weights/best.pt", None, "", "CC0-1.0", "", {}, "2026-11-27T12:00:00+00:00", {})


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return exported(tmp_path)


def exported(tmp_path: Path) -> Path:
    """A repository as `make export` leaves it: model.onnx and a manifest in every TensorRT model's folder."""
    for tier in spec.TIERS:
        for step, record in (
            (Step.DETECTOR, Detector(ARTIFACT, {0: "person"}, (0,), spec.IMAGE_SIZE, 17)),
            (Step.GENDER, Classifier(ARTIFACT, Preprocessing(GENDER_SIZE, "RGB", (0, 0, 0), (1, 1, 1), 0.2),
                                     ("female", "male"), (0, 1))),
            (Step.FACE, FaceDetector(ARTIFACT, 96, 4, "RGB", (0, 0, 0), (1, 1, 1))),
        ):  # fmt: skip
            directory = tmp_path / tier.model(step) / "1"
            directory.mkdir(parents=True)
            onnx = directory / tensorrt_plan.ONNX
            onnx.write_bytes(f"onnx of {tier.model(step)}".encode())
            artifact = replace(record.artifact, onnx_sha256=manifest.sha256(onnx), tier=tier.name)
            manifest.write(directory, replace(record, artifact=artifact))
    return tmp_path


def built(repository: Path, target: Target, **changes: str) -> None:
    """Record plans as `build` does (the engine bytes are not TensorRT's: nothing here loads them)."""
    for job in tensorrt_plan.jobs(repository):
        (job.directory / tensorrt_plan.PLAN).write_bytes(b"engine")
        record = manifest.read(job.directory, job.record)
        gpu = target.gpus[0]
        plan = Plan(target.tensorrt_version, gpu.name, gpu.compute_capability, "fp16", job.profile)
        manifest.write(job.directory, replace(record, artifact=replace(record.artifact, plan=replace(plan, **changes))))


def test_every_tensorrt_model_has_a_plan(repository: Path) -> None:
    """Each model whose GPU config is a TensorRT plan gets one, with the config's max batch as profile max."""
    served = {
        render.step_config(tier, step, Variant.GPU).name: render.step_config(tier, step, Variant.GPU)
        for tier in spec.TIERS
        for step in spec.MODELS
        if render.step_config(tier, step, Variant.GPU).platform == "tensorrt_plan"
    }
    jobs = {job.model: job for job in tensorrt_plan.jobs(repository)}
    assert set(jobs) == set(served), "a TensorRT model without a plan recipe (tensorrt_plan.RECIPES), or the reverse"
    for name, config in served.items():
        lo, opt, hi = jobs[name].profile
        assert (lo, hi) == (1, config.max_batch_size), f"{name}: profile {jobs[name].profile} vs config max batch"
        preferred = list(config.dynamic_batching.preferred_batch_size) or [config.max_batch_size]
        assert opt == max(preferred), f"{name}: opt {opt} is not the largest batch the scheduler prefers"
        assert [i.name for i in config.input] == [jobs[name].tensor], f"{name}: the plan's input name"


def test_command_lines_tensorrt_10(repository: Path) -> None:
    """The exact command lines, for the detector of every tier and the gender classifier."""
    cache = Path("/cache/trt.timing-cache")
    lines = {job.model: tensorrt_plan.command(job, 10, cache) for job in tensorrt_plan.jobs(repository)}
    shapes = {"streaming": (1, 4, 8), "balanced": (1, 32, 32), "batch": (1, 128, 128)}  # spec.TIERS' gpu batching
    for tier, (lo, opt, hi) in shapes.items():
        folder = repository / f"detector_{tier}" / "1"
        assert lines[f"detector_{tier}"] == [
            "/usr/src/tensorrt/bin/trtexec",
            f"--onnx={folder}/model.onnx",
            f"--saveEngine={folder}/model.plan",
            f"--minShapes=IMAGES:{lo}x3x640x640",
            f"--optShapes=IMAGES:{opt}x3x640x640",
            f"--maxShapes=IMAGES:{hi}x3x640x640",
            "--fp16",
            "--memPoolSize=workspace:4G",
            "--timingCacheFile=/cache/trt.timing-cache",
            "--skipInference",
        ]
        folder = repository / f"gender_{tier}" / "1"
        assert lines[f"gender_{tier}"][3:6] == [
            f"--minShapes=CROPS:1x3x{GENDER_SIZE}x{GENDER_SIZE}",
            f"--optShapes=CROPS:256x3x{GENDER_SIZE}x{GENDER_SIZE}",
            f"--maxShapes=CROPS:256x3x{GENDER_SIZE}x{GENDER_SIZE}",
        ]


def test_tensorrt_11_has_no_fp16_flag(repository: Path) -> None:
    job = tensorrt_plan.jobs(repository)[0]
    with pytest.raises(PlanError, match="strongly typed"):
        tensorrt_plan.command(job, 11, Path("c"))
    assert "--fp16" not in tensorrt_plan.command(job, 11, Path("c"), fp16=False)
    assert "--fp16" not in tensorrt_plan.command(job, 10, Path("c"), fp16=False)


def test_commands_print_without_tensorrt(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--repository", str(repository), "--cache", "/c", "commands", "--tensorrt-version", "10.16.0.72"]
    assert tensorrt_plan.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(tensorrt_plan.RECIPES) * len(spec.TIERS)
    assert all(line.startswith(str(tensorrt_plan.TRTEXEC)) for line in lines)
    assert all("--timingCacheFile=/c/tensorrt-10.16.0.72-GPU.timing-cache" in line for line in lines)


def test_timing_cache_is_per_tensorrt_and_gpu() -> None:
    caches = {tensorrt_plan.timing_cache(Path("c"), Target(v, (g,))) for v in ("10.16.0", "11.0.0") for g in (H100, L4)}
    assert len(caches) == 4, caches


def test_build_refuses_an_onnx_its_manifest_does_not_describe(repository: Path) -> None:
    job = tensorrt_plan.jobs(repository)[0]
    (job.directory / tensorrt_plan.ONNX).write_bytes(b"another model")
    with pytest.raises(PlanError, match="differs from its manifest: run `make export` again"):
        tensorrt_plan.build(job, TARGET, repository / "cache")
    assert not (job.directory / tensorrt_plan.PLAN).exists()


def test_matching_plans_are_served(repository: Path) -> None:
    built(repository, TARGET)
    assert tensorrt_plan.mismatches(repository, TARGET) == []
    assert tensorrt_plan.mismatches(repository, Target(TARGET.tensorrt_version, (H100, H100))) == []


def test_mismatched_plans_are_refused_one_line_each(repository: Path) -> None:
    jobs = tensorrt_plan.jobs(repository)
    built(repository, TARGET)
    other_tensorrt = tensorrt_plan.mismatches(repository, Target("10.15.1.29", (H100,)))
    assert len(other_tensorrt) == len(jobs), other_tensorrt
    assert all("built with TensorRT 10.16.0.72, this image has 10.15.1.29" in line for line in other_tensorrt)
    second_gpu = tensorrt_plan.mismatches(repository, Target(TARGET.tensorrt_version, (H100, L4)))
    assert len(second_gpu) == len(jobs) and all("this GPU is NVIDIA L4 (compute 8.9)" in p for p in second_gpu)
    built(repository, TARGET, compute_capability="8.0")
    assert len(tensorrt_plan.mismatches(repository, TARGET)) == len(jobs)


def test_missing_or_unrecorded_plans_are_refused(repository: Path) -> None:
    jobs = tensorrt_plan.jobs(repository)
    assert tensorrt_plan.mismatches(repository, TARGET) == [f"{job.model}: no model.plan" for job in jobs]
    for job in jobs:
        (job.directory / tensorrt_plan.PLAN).write_bytes(b"engine")  # a plan, but the export rewrote the manifest
    assert all("records no plan" in line for line in tensorrt_plan.mismatches(repository, TARGET))


def test_target_round_trips_and_reads_trt_version(monkeypatch: pytest.MonkeyPatch) -> None:
    target = Target("10.16.0.72", (H100, L4))
    assert Target.from_json(target.to_json()) == target and target.tensorrt_major == 10
    monkeypatch.setenv("TRT_VERSION", "10.16.0.72")
    assert tensorrt_plan.tensorrt_version() == "10.16.0.72"


def test_trt_version_falls_back_to_the_library_behind_its_soname(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ldconfig lists sonames; the version is in the file the soname links to."""
    (tmp_path / "libnvinfer.so.10.16.0").write_bytes(b"")
    (tmp_path / "libnvinfer.so.10").symlink_to("libnvinfer.so.10.16.0")
    listing = (f"\tlibnvinfer.so.10 (libc6,x86-64) => {tmp_path}/libnvinfer.so.10\n"
               f"\tlibnvinfer_plugin.so.10 (libc6,x86-64) => {tmp_path}/missing.so.10\n")  # fmt: skip
    monkeypatch.delenv("TRT_VERSION", raising=False)
    monkeypatch.setattr(tensorrt_plan.shutil, "which", lambda _: "/sbin/ldconfig")
    monkeypatch.setattr(tensorrt_plan.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=listing, stderr=""))  # fmt: skip
    assert tensorrt_plan.tensorrt_version() == "10.16.0"
    (tmp_path / "libnvinfer.so.10").unlink()
    with pytest.raises(tensorrt_plan.PlanError, match="TRT_VERSION is unset"):
        tensorrt_plan.tensorrt_version()


def test_trtexec_version_from_either_banner() -> None:
    assert tensorrt_plan.trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v101600] # trtexec") == "10.16.0"
    assert tensorrt_plan.trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec") == "8.6.1"
    assert tensorrt_plan.trtexec_version("[I] TensorRT version: 10.3.0") == "10.3.0"
    assert tensorrt_plan.trtexec_version("no banner") is None


def test_every_engine_model_has_a_plan_recipe() -> None:
    """The models the GPU configs serve as TensorRT plans are the ones plans are built for."""
    assert set(tensorrt_plan.RECIPES) == set(spec.ENGINES)

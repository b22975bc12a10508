"""TensorRT plans for every TensorRT model of every tier, built with `trtexec` from the exported ONNX.

A plan only loads with the TensorRT version and on the GPU type it was built with, so plans are built inside
the serving image (its TensorRT; `tritonserver:<tag>-py3` ships `trtexec` but most likely not TensorRT's Python
bindings), on the serving GPU, and each model's manifest records both; `check` (and `make serve`) refuse a
plan whose record differs from the GPU and TensorRT present. The command lines are data rendered from
`pipelines.spec` and the manifests, so they can be printed and tested where TensorRT is absent:

    python -m export.tensorrt_plan commands --tensorrt-version 10.16.0   # anywhere
    python3 -m export.tensorrt_plan build                                 # in the serving image, on the GPU
    python3 -m export.tensorrt_plan check                                 # same image and GPU: plans usable?
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipelines import manifest, paths, spec
from pipelines.spec import Step

log = logging.getLogger(__name__)

# Where TensorRT's images keep trtexec; Triton's own QA runs it from there in images derived from the
# server image (server r26.05 qa/L0_perf_resnet/test.sh, L0_memory_growth/test.sh: TRTEXEC=...).
TRTEXEC = Path("/usr/src/tensorrt/bin/trtexec")
# Builder workspace. trtexec's --memPoolSize takes `workspace:<size>` with a B/K/M/G suffix (MiB without one).
WORKSPACE = "4G"
PLAN = "model.plan"
ONNX = "model.onnx"


class PlanError(RuntimeError):
    """A plan cannot be built or served here; the message says why and what to do."""


@dataclass(frozen=True)
class Gpu:
    name: str  # as nvidia-smi names it, e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "major.minor"


@dataclass(frozen=True)
class Target:
    """Where plans are built or served: the TensorRT version and the GPUs Triton will place instances on."""

    tensorrt_version: str
    gpus: tuple[Gpu, ...]

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt_version.split(".")[0])

    @classmethod
    def detect(cls) -> Target:
        """This machine's (the image's) TensorRT and GPUs, read without TensorRT's Python bindings."""
        return cls(tensorrt_version(), gpus())

    @classmethod
    def from_json(cls, text: str) -> Target:
        d = json.loads(text)
        return cls(str(d["tensorrt_version"]), tuple(Gpu(**g) for g in d["gpus"]))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def tensorrt_version() -> str:
    """The TensorRT version of this image: $TRT_VERSION, else the version in libnvinfer's real file name.

    NGC images set TRT_VERSION (server build.py passes it to cmake and qa/common/reporter.py reports it).
    The fallback asks the dynamic linker where libnvinfer is: `ldconfig -p` lists sonames
    (`libnvinfer.so.10 => /usr/lib/x86_64-linux-gnu/libnvinfer.so.10`), a link whose target carries the
    full version (`libnvinfer.so.10.16.0`).
    """
    version = os.environ.get("TRT_VERSION", "").strip()
    if version:
        return version
    found = _library_versions(_ldconfig_paths("libnvinfer.so."))
    if found:
        return max(found, key=lambda v: tuple(map(int, v.split("."))))
    raise PlanError("cannot tell the TensorRT version: TRT_VERSION is unset and ldconfig knows no libnvinfer.so")


def trtexec_version(log: str) -> str | None:
    """X.Y.Z from trtexec's output: its first line `&&&& RUNNING TensorRT.trtexec [TensorRT v101600]`
    (NV_TENSORRT_VERSION, TensorRT samples/common/logging.h; MAJOR*10000 + MINOR*100 + PATCH from
    TensorRT 10, MAJOR*1000 + ... before), or its log's `TensorRT version: 10.16.0`."""
    if match := re.search(r"TensorRT version: (\d+\.\d+\.\d+)", log):
        return match.group(1)
    if match := re.search(r"\[TensorRT v(\d+)\]", log):
        number = int(match.group(1))
        major, rest = divmod(number, 10000 if number >= 100000 else 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    return None


def _ldconfig_paths(prefix: str) -> list[Path]:
    """The paths `ldconfig -p` lists for libraries whose name starts with `prefix`."""
    if not shutil.which("ldconfig"):
        return []
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    return [Path(m) for m in re.findall(rf"^\s*{re.escape(prefix)}\S*\s.*=>\s*(\S+)\s*$", out, re.MULTILINE)]


def _library_versions(paths: list[Path]) -> list[str]:
    """X.Y.Z from each path's real file (links followed): `libnvinfer.so.10.16.0` -> 10.16.0."""
    versions = []
    for path in paths:
        match = re.search(r"\.so\.(\d+\.\d+\.\d+)$", path.resolve().name)
        if match:
            versions.append(match.group(1))
    return versions


def gpus() -> tuple[Gpu, ...]:
    """Every visible GPU's name and compute capability, from nvidia-smi."""
    query = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise PlanError(f"no NVIDIA GPU is visible ({' '.join(query)}: {e})") from e
    found = tuple(Gpu(*(field.strip() for field in line.rsplit(",", 1))) for line in out.splitlines() if line.strip())
    if not found:
        raise PlanError("nvidia-smi lists no GPU")
    return found


@dataclass(frozen=True)
class Job:
    """One plan to build: a model version folder, its input tensor and the batch profile."""

    model: str  # e.g. "detector_balanced"
    directory: Path  # the version folder, holding model.onnx and manifest.json
    record: type[manifest.Detector] | type[manifest.Classifier] | type[manifest.FaceDetector]
    tensor: str
    item_dims: tuple[int, ...]  # the input's shape without the batch
    profile: tuple[int, int, int]  # min, opt, max batch

    def shape(self, batch: int) -> str:
        return f"{self.tensor}:{'x'.join(map(str, (batch, *self.item_dims)))}"


def profile(batching: spec.Batching) -> tuple[int, int, int]:
    """(min, opt, max) batch of a tier's detector: opt is the tier's largest preferred batch."""
    return 1, max(batching.preferred_batch_sizes), batching.max_batch_size


def bls_profile(batching: dict[spec.Variant, spec.Batching]) -> tuple[int, int, int]:
    """(min, opt, max) batch of a model called by BLS (classifier, face detector): chunks fill its max batch."""
    top = batching[spec.Variant.GPU].max_batch_size
    return 1, top, top


def _detector(tier: spec.Tier, directory: Path) -> Job:
    return Job(tier.model(Step.DETECTOR), directory, manifest.Detector, spec.IMAGES.name, spec.IMAGES.dims,
               profile(tier.gpu))  # fmt: skip


def _gender(tier: spec.Tier, directory: Path) -> Job:
    size = manifest.read(directory, manifest.Classifier).preprocessing.size  # the classifier's own input size
    return Job(tier.model(Step.GENDER), directory, manifest.Classifier, spec.CROPS.name, (3, size, size),
               bls_profile(spec.BLS_BATCHING[Step.GENDER]))  # fmt: skip


def _face(tier: spec.Tier, directory: Path) -> Job:
    size = manifest.read(directory, manifest.FaceDetector).size  # the region size fixed at export
    return Job(tier.model(Step.FACE), directory, manifest.FaceDetector, spec.FACE_REGIONS.name, (3, size, size),
               bls_profile(spec.BLS_BATCHING[Step.FACE]))  # fmt: skip


# Every model whose GPU config is `tensorrt_plan` (tools.render), and how its job is made; a new TensorRT
# model needs a line here (tests/unit/test_tensorrt_plan.py fails until it has one).
RECIPES: dict[Step, Callable[[spec.Tier, Path], Job]] = {
    Step.DETECTOR: _detector,
    Step.GENDER: _gender,
    Step.FACE: _face,
}


def jobs(repository: Path) -> list[Job]:
    """Every plan of every tier, from the manifests `make export` wrote."""
    return [
        recipe(tier, repository / tier.model(step) / "1") for tier in spec.TIERS for step, recipe in RECIPES.items()
    ]


def recorded_plans(repository: Path) -> list[manifest.Plan]:
    """The plans the manifests record; none where nothing was exported or no plan was built."""
    try:
        found = jobs(repository)
    except manifest.ManifestError:
        return []
    return [plan for job in found if (plan := manifest.read(job.directory, job.record).artifact.plan)]


def timing_cache(cache: Path, target: Target) -> Path:
    """One timing cache per TensorRT version and GPU type, so a build never reads another's timings."""
    gpu = re.sub(r"[^A-Za-z0-9.]+", "_", target.gpus[0].name)
    return cache / f"tensorrt-{target.tensorrt_version}-{gpu}.timing-cache"


def command(job: Job, tensorrt_major: int, cache_file: Path, fp16: bool = True, plan: Path | None = None) -> list[str]:
    """The trtexec command line that builds `job` (to `plan`, default the folder's model.plan).

    TensorRT 10's trtexec takes `--fp16` (weakly typed network, FP16 kernels allowed). TensorRT 11 removed
    it with weakly typed networks (NVIDIA/TensorRT v11.1 samples/common/sampleOptions.cpp parses no
    `--fp16`; an unknown option fails the run): there the precision is the ONNX's own, so FP16 needs an
    FP16-typed ONNX, which the export does not make.
    """
    if fp16 and tensorrt_major >= 11:
        raise PlanError(
            f"TensorRT {tensorrt_major} builds strongly typed networks only (trtexec has no --fp16): an FP16 plan "
            "needs an FP16-typed ONNX, which `make export` does not make. Use a TensorRT 10 image "
            "(export/serving_image.py) or build FP32 plans (--fp32)"
        )
    lo, opt, hi = job.profile
    return [
        str(TRTEXEC),
        f"--onnx={job.directory / ONNX}",
        f"--saveEngine={plan or job.directory / PLAN}",
        f"--minShapes={job.shape(lo)}",
        f"--optShapes={job.shape(opt)}",
        f"--maxShapes={job.shape(hi)}",
        *(["--fp16"] if fp16 else []),
        f"--memPoolSize=workspace:{WORKSPACE}",
        f"--timingCacheFile={cache_file}",
        "--skipInference",
    ]


def available() -> str | None:
    """None when plans can be built here, else the reason they cannot."""
    if not TRTEXEC.is_file():
        return f"{TRTEXEC} is missing (it is in the serving image: build plans there, on the serving GPU)"
    try:
        Target.detect()
    except PlanError as e:
        return str(e)
    return None


def build(job: Job, target: Target, cache: Path, fp16: bool = True) -> manifest.Plan:
    """Build one plan with trtexec, then record it in the model's manifest; returns the record's plan."""
    record = manifest.read(job.directory, job.record)
    onnx = job.directory / ONNX
    if not onnx.is_file() or manifest.sha256(onnx) != record.artifact.onnx_sha256:
        raise PlanError(f"{onnx} is missing or differs from its manifest: run `make export` again")
    cache.mkdir(parents=True, exist_ok=True)
    partial = job.directory / f"{PLAN}.partial"
    cmd = command(job, target.tensorrt_major, timing_cache(cache, target), fp16, plan=partial)
    lo, opt, hi = job.profile
    log.info("building %s (batch %d/%d/%d, %s) with trtexec; this takes minutes", job.model, lo, opt, hi,
             "fp16" if fp16 else "fp32")  # fmt: skip
    log.info("%s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    logfile = cache / f"trtexec-{job.model}.log"
    logfile.write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise PlanError(f"trtexec failed for {job.model} (exit {done.returncode}; full log {logfile}):\n{tail}")
    built_with = trtexec_version(done.stdout)
    if built_with and not target.tensorrt_version.startswith(built_with):
        raise PlanError(f"trtexec is TensorRT {built_with}, but this image reports {target.tensorrt_version}")
    partial.replace(job.directory / PLAN)
    gpu = target.gpus[0]  # trtexec builds on device 0
    plan = manifest.Plan(target.tensorrt_version, gpu.name, gpu.compute_capability, "fp16" if fp16 else "fp32",
                         job.profile)  # fmt: skip
    manifest.write(job.directory, replace(record, artifact=replace(record.artifact, plan=plan)))
    return plan


def build_all(repository: Path, cache: Path, fp16: bool = True) -> None:
    """Every plan of every tier, on this machine's TensorRT and GPU 0; stops at the first failure."""
    target = Target.detect()
    log.info("TensorRT %s on %s", target.tensorrt_version, ", ".join(g.name for g in target.gpus))
    for job in jobs(repository):
        build(job, target, cache, fp16)


def mismatches(repository: Path, target: Target) -> list[str]:
    """Why the repository's plans cannot be served with `target`: one line per plan; empty when they can.

    Triton places GPU instances on every visible GPU, so each plan must match each of them.
    """
    problems = []
    for job in jobs(repository):
        if not (job.directory / PLAN).is_file():
            problems.append(f"{job.model}: no {PLAN}")
            continue
        plan = manifest.read(job.directory, job.record).artifact.plan
        if plan is None:
            problems.append(f"{job.model}: its manifest records no plan (exported again after the plan was built)")
            continue
        if plan.tensorrt_version != target.tensorrt_version:
            problems.append(f"{job.model}: built with TensorRT {plan.tensorrt_version}, "
                            f"this image has {target.tensorrt_version}")  # fmt: skip
        for gpu in target.gpus:
            if (plan.gpu_name, plan.compute_capability) != (gpu.name, gpu.compute_capability):
                problems.append(f"{job.model}: built for {plan.gpu_name} (compute {plan.compute_capability}), "
                                f"this GPU is {gpu.name} (compute {gpu.compute_capability})")  # fmt: skip
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.tensorrt_plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--repository", type=Path, default=paths.REPOSITORY)
    parser.add_argument("--cache", type=Path, default=Path(".cache/export"), help="timing caches and trtexec logs")
    parser.add_argument("--fp32", action="store_true", help="FP32 plans instead of FP16")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build", help="build every plan here (the serving image, on the serving GPU)")
    sub.add_parser("check", help="exit 1, naming each plan, when a plan does not match this TensorRT and GPU")
    sub.add_parser("target", help="print this image's TensorRT version and GPUs as JSON")
    show = sub.add_parser("commands", help="print the trtexec command lines (no TensorRT needed)")
    show.add_argument("--tensorrt-version", required=True, help="the image's TensorRT, e.g. 10.16.0")
    show.add_argument("--gpu", default="GPU", help="the GPU's name (names the timing cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.action == "commands":
            target = Target(args.tensorrt_version, (Gpu(args.gpu, "?"),))
            for job in jobs(args.repository):
                print(" ".join(command(job, target.tensorrt_major, timing_cache(args.cache, target), not args.fp32)))
        elif args.action == "target":
            print(Target.detect().to_json())
        elif args.action == "build":
            build_all(args.repository, args.cache, not args.fp32)
        else:
            problems = mismatches(args.repository, Target.detect())
            for problem in problems:
                log.error("%s", problem)
            return 1 if problems else 0
    except (PlanError, manifest.ManifestError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The serving image's Triton release: what each NGC tag ships, in one table, and a check of a built image.

The Makefile's TRITON_IMAGE_TAG picks a row (Dockerfile.triton's default ARG equals it), the local tests run
the DALI of that row (requirements.txt), and `python3 -m export.serving_image <tag>` inside the built image
(run by `make gpu-image-check`) fails on anything in the image that differs from the row or from
requirements-image.txt. Nobody could build the image where this table was written, so each column says
where it comes from; tests/unit/test_image.py keeps the Makefile, Dockerfile and requirements in step with it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from export import tensorrt_plan

# Where the DALI backend keeps the DALI it runs: it pip-installs the wheel with `--target` here
# (dali_backend src/dali_executor/CMakeLists.txt) and server build.py puts this folder first on PYTHONPATH.
DALI_WHEEL_DIR = Path("/opt/tritonserver/backends/dali/wheel/dali")
# Where Dockerfile.triton installs requirements-image.txt and this project's packages, ahead of DALI_WHEEL_DIR
# on PYTHONPATH (that folder also holds DALI's own, unpinned dependencies, numpy among them).
SITE = Path("/opt/people/python")
# The image's Python and C library: Python 3.12 on Ubuntu 24.04 (server build.py r26.05 installs
# python3.12-pip and uses the CUDA `ubuntu2404` apt repositories; Ubuntu 24.04 ships glibc 2.39). Inferred
# from the build script, not stated in the release notes; `check` verifies the Python version in the image.
PYTHON = "3.12"
GLIBC = (2, 39)


@dataclass(frozen=True)
class Release:
    """What one NGC `tritonserver:<tag>` image ships."""

    tag: str  # NGC tag, e.g. "26.05-py3"
    triton: str  # server build.py DEFAULT_TRITON_VERSION_MAP["release_version"] on branch r<yy.mm>
    cuda: str  # release notes rel-<yy>-<mm>.html, "Driver Requirements": "based on CUDA ..."
    dali: str  # dali_backend file DALI_VERSION on branch r<yy.mm>: the DALI its backend downloads and runs
    tensorrt_major: int  # inferred, see RELEASES

    @property
    def container(self) -> str:
        """The container version, e.g. 26.05: NVIDIA_TRITON_SERVER_VERSION in the image (server build.py)."""
        return self.tag.split("-")[0]


# Every release from 26.04, the first whose /v2/health/ready turns false when a python stub dies
# (core PR #473, commit 53fc26e, on core branches r26.04 and later).
# TensorRT is not in the release notes we could read. 26.04 and 26.05 predate TensorRT 11 (11.0 GA 2026-06-02,
# NVIDIA/TensorRT CHANGELOG.md; server tags v2.68.0 2026-04-27, v2.69.0 2026-05-27), and TensorRT 10.16
# (2026-03-24) is the one whose default CUDA is 13.2, as theirs. 26.06 is the release for which the server's
# QA moved to TensorRT 11 (server r26.06 commits d898a0fe6 "prepare server for 26.06 (... TRT 11 QA
# compat ...)" #8828 and d4d7275d5 #8836). `check` reads the real version in the image.
RELEASES = (
    Release("26.04-py3", triton="2.68.0", cuda="13.2.1", dali="2.0.0", tensorrt_major=10),
    Release("26.05-py3", triton="2.69.0", cuda="13.2.1", dali="2.1.0", tensorrt_major=10),
    Release("26.06-py3", triton="2.70.0", cuda="13.3.0", dali="2.1.1", tensorrt_major=11),
)


def release(tag: str) -> Release:
    """The row of `tag`, or a ValueError that lists the known tags."""
    for r in RELEASES:
        if r.tag == tag:
            return r
    raise ValueError(f"no facts recorded for tritonserver:{tag}; known: {', '.join(r.tag for r in RELEASES)}")


def platforms() -> list[str]:
    """pip `--platform` tags of the image (x86_64, glibc GLIBC): every manylinux wheel it can load."""
    major, minor = GLIBC
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def pins(requirements: Path) -> dict[str, Requirement]:
    """The requirements of a pip requirements file by canonical name (comments and blank lines skipped)."""
    found = {}
    for line in requirements.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def pinned_version(requirement: Requirement) -> str | None:
    """The version of an exact `name==version` pin, else None."""
    specs = list(requirement.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
        return specs[0].version
    return None


def check(facts: Release, requirements: Path, site: Path = SITE) -> list[str]:
    """What in the running image differs from `facts` and from the pins of `requirements`; empty when nothing."""
    problems = []

    def expect(what: str, seen: object, wanted: object) -> None:
        if seen != wanted:
            problems.append(f"{what}: {seen!r}, expected {wanted!r}")

    expect("NVIDIA_TRITON_SERVER_VERSION", os.environ.get("NVIDIA_TRITON_SERVER_VERSION"), facts.container)
    expect("TRITON_SERVER_VERSION", os.environ.get("TRITON_SERVER_VERSION"), facts.triton)
    cuda = os.environ.get("CUDA_VERSION", "")
    expect("CUDA_VERSION (major.minor.patch)", ".".join(cuda.split(".")[:3]), facts.cuda)
    expect("Python", f"{sys.version_info.major}.{sys.version_info.minor}", PYTHON)

    try:
        import nvidia.dali  # the DALI backend's own wheel, through PYTHONPATH
    except ImportError as e:
        problems.append(f"nvidia.dali does not import ({e}); PYTHONPATH={os.environ.get('PYTHONPATH')}")
    else:
        expect("DALI version", nvidia.dali.__version__, facts.dali)
        if not Path(nvidia.dali.__file__).is_relative_to(DALI_WHEEL_DIR):
            problems.append(f"nvidia.dali comes from {nvidia.dali.__file__}, not the DALI backend's {DALI_WHEEL_DIR}")
    why_no_plans = tensorrt_plan.available()  # trtexec, the TensorRT version and a GPU
    if why_no_plans:
        problems.append(why_no_plans)
    else:
        expect("TensorRT major version", tensorrt_plan.Target.detect().tensorrt_major, facts.tensorrt_major)

    for name, requirement in pins(requirements).items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{requirement}: not installed")
            continue
        where = Path(str(dist.locate_file("")))
        if dist.version != pinned_version(requirement) or not where.is_relative_to(site):
            problems.append(f"{requirement}: found {name}=={dist.version} in {where}, expected it in {site}")

    try:
        import torch  # postprocess runs on the GPU through torch
    except ImportError as e:
        problems.append(f"torch does not import: {e}")
    else:
        if not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU in the image")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m export.serving_image", description="Inside the built image: compare it with its release."
    )
    parser.add_argument("tag", help="the TRITON_IMAGE_TAG the image was built from")
    parser.add_argument("--requirements", type=Path, default=SITE.parent / "requirements-image.txt")
    args = parser.parse_args(argv)
    facts = release(args.tag)
    problems = check(facts, args.requirements)
    for problem in problems:
        print(f"serving image: {problem}", file=sys.stderr)
    if not problems:
        print(f"serving image matches {facts} and every pin of {args.requirements}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""The serving image's pins agree with each other and with what its Triton release ships.

Nothing here builds the image (no Docker or GPU where these tests run): `make gpu-image-check` builds it and checks
the built image against the same facts (`python3 -m export.serving_image <tag>`). The resolution test asks
the package registry what `pip install -r requirements-image.txt` would install in the image.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import nvidia.dali
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from export import serving_image
from export.serving_image import pinned_version, pins
from pipelines import paths, spec
from tests.unit import makefile
from tools import gpu_host

ROOT = paths.ROOT
DOCKERFILE = ROOT / "Dockerfile.triton"
IMAGE_REQUIREMENTS = ROOT / "requirements-image.txt"
GPU_REQUIREMENTS = ROOT / "requirements-gpu.txt"
INDEX = "https://pypi.org/simple"  # what the image's pip uses: it has no other index configured
# Never in the serving image: what only the export, the training, a desktop or the tests need.
NOT_SERVED = {
    "ultralytics": "training and export (the ONNX is exported on the host)",
    "onnx": "export only",
    "opencv-python": "a GUI build of OpenCV (the image has the headless one preprocess imports)",
    "matplotlib": "plots",
    "pytest": "tests",
    "ruff": "lint",
}


def packages(requirements: Path) -> dict[str, Requirement]:
    """pins(), with builds of one package under one name, so that files that pick different builds compare:
    OpenCV's headless build is opencv-python, and DALI's CUDA builds (nvidia-dali-cuda120 for the local tests,
    cuda130 for the GPU check) are nvidia-dali, whose versions must still agree."""
    found = {}
    for name, requirement in pins(requirements).items():
        name = "opencv-python" if name == "opencv-python-headless" else name
        found["nvidia-dali" if name.startswith("nvidia-dali-cuda") else name] = requirement
    return found


def disagreements(local: dict[str, Requirement], other: dict[str, Requirement]) -> dict[str, tuple[str, str | None]]:
    """Every package both name whose pin in `other` is not one requirements.txt (`local`) allows."""
    return {
        name: (str(local[name].specifier), pinned_version(other[name]))
        for name in sorted(set(local) & set(other))
        if not local[name].specifier.contains(pinned_version(other[name]) or "", prereleases=True)
    }


def test_tag_is_chosen_once_and_its_facts_are_recorded() -> None:
    tag = makefile.variable("TRITON_IMAGE_TAG")
    text = DOCKERFILE.read_text()
    arg = re.search(r"^ARG TRITON_IMAGE_TAG=(\S+)$", text, re.M)
    assert arg and arg.group(1) == tag, f"Dockerfile.triton's default ARG differs from the Makefile's {tag}"
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_IMAGE_TAG}\n" in text, "the image is not built on the ARG"
    release = serving_image.release(tag)  # raises when the table has no row for it
    year, month = map(int, release.container.split("."))
    assert (year, month) >= (26, 4), f"{tag}: before 26.04 a dead python stub leaves /v2/health/ready true"


def test_local_tests_run_the_images_dali() -> None:
    """The DALI backend runs its own DALI; requirements.txt pins the same version, and the venv has it."""
    release = serving_image.release(makefile.variable("TRITON_IMAGE_TAG"))
    local = pins(ROOT / "requirements.txt")
    dali = [name for name in local if name.startswith("nvidia-dali-")]
    assert dali == ["nvidia-dali-cuda120"], f"requirements.txt installs DALI as {dali}"
    assert pinned_version(local["nvidia-dali-cuda120"]) == release.dali, f"{release.tag} runs DALI {release.dali}"
    assert nvidia.dali.__version__ == release.dali, f"the venv has DALI {nvidia.dali.__version__}: run `make setup`"


def test_entrypoint_is_the_spec_flags() -> None:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    assert entrypoint, "Dockerfile.triton has no exec-form ENTRYPOINT"
    assert json.loads(entrypoint.group(1)) == ["tritonserver", "--model-repository=/models", *spec.SERVER_FLAGS]


def test_image_requirements_are_pinned_and_lean() -> None:
    image = pins(IMAGE_REQUIREMENTS)
    loose = [str(r) for r in image.values() if pinned_version(r) is None]
    assert not loose, f"requirements-image.txt must pin exact versions: {loose}"
    assert Version(pinned_version(image["numpy"]) or "0") < Version("2"), "numpy 2 in the serving image"
    unwanted = {name: why for name, why in NOT_SERVED.items() if name in image}
    unwanted |= {name: "the DALI backend runs its own DALI" for name in image if name.startswith("nvidia-dali-")}
    assert not unwanted, f"not for the serving image: {unwanted}"


def test_image_runs_the_versions_the_tests_run() -> None:
    """Every package both files name: the image's pin is one the local requirement allows."""
    local, image = packages(ROOT / "requirements.txt"), packages(IMAGE_REQUIREMENTS)
    shared = sorted(set(local) & set(image))
    assert {"numpy", "torch", "torchvision", "onnxruntime", "opencv-python"} <= set(shared), f"shared: {shared}"
    differ = disagreements(local, image)
    assert not differ, f"requirements.txt vs requirements-image.txt: {differ}"


@pytest.mark.parametrize("dali", [requirements for _, requirements in gpu_host.BUILDS], ids=lambda p: p.name)
def test_gpu_check_runs_the_versions_the_tests_run(dali: Path) -> None:
    """requirements-gpu.txt with either DALI build pins exact versions, the ones requirements.txt allows, and
    leaves torch to the host."""
    local, gpu = packages(ROOT / "requirements.txt"), packages(GPU_REQUIREMENTS) | packages(dali)
    loose = [str(r) for r in gpu.values() if pinned_version(r) is None]
    assert not loose, f"requirements-gpu.txt and {dali.name} must pin exact versions: {loose}"
    assert not {"torch", "torchvision"} & set(gpu), "requirements-gpu*.txt must not pin the host's PyTorch"
    shared = sorted(set(local) & set(gpu))
    expected = {"ultralytics", "opencv-python", "onnx", "onnxruntime", "nvidia-dali"}
    assert expected <= set(shared), f"shared: {shared}"
    differ = disagreements(local, gpu)
    assert not differ, f"requirements.txt vs {dali.name}: {differ}"
    builds = [name for name in pins(dali) if name.startswith("nvidia-dali-cuda")]
    cuda = dali.stem.rsplit("cuda", 1)[1]
    assert builds == [f"nvidia-dali-cuda{cuda}0"], f"{dali.name} installs {builds}"
    suffixes = {name.rsplit("-", 1)[1] for name in pins(dali) if name.endswith(("-cu12", "-cu13"))}
    assert suffixes == {f"cu{cuda}"}, f"{dali.name} mixes CUDA builds of the decoders: {suffixes}"


@pytest.mark.parametrize(
    ("driver", "requirements"),
    [("595.58.03", "requirements-gpu-cuda13.txt"), ("580.65.06", "requirements-gpu-cuda13.txt"),
     ("575.57.08", "requirements-gpu-cuda12.txt"), ("525.60.13", "requirements-gpu-cuda12.txt")],
)  # fmt: skip
def test_the_driver_picks_the_dali_build(driver: str, requirements: str) -> None:
    assert gpu_host.requirements_for(driver).name == requirements


def test_an_old_driver_or_no_gpu_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(gpu_host.NoFit, match="older than DALI's CUDA 12 build needs"):
        gpu_host.requirements_for("470.239.06")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    with pytest.raises(gpu_host.NoFit, match="cannot read the NVIDIA driver's version"):
        gpu_host.driver_version()


def test_resolution_for_the_image_is_exactly_the_pins(tmp_path: Path) -> None:
    """pip resolves requirements-image.txt for the image's Python and platform: nothing unpinned, numpy < 2."""
    try:
        urllib.request.urlopen(f"{INDEX}/numpy/", timeout=20).close()
    except (urllib.error.URLError, OSError) as e:
        pytest.skip(f"package registry {INDEX} unreachable ({e}): requirements-image.txt was not resolved")
    report = tmp_path / "report.json"
    platforms = [arg for tag in serving_image.platforms() for arg in ("--platform", tag)]
    cmd = [
        sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), "--index-url", INDEX, "--only-binary=:all:",
        "--python-version", serving_image.PYTHON, *platforms, "-r", str(IMAGE_REQUIREMENTS),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pip could not resolve requirements-image.txt:\n{done.stderr[-3000:]}"
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert Version(resolved["numpy"]) < Version("2"), f"numpy {resolved['numpy']} resolved"
    image = pins(IMAGE_REQUIREMENTS)
    unpinned = {name: version for name, version in resolved.items() if name not in image}
    assert not unpinned, f"resolved but not pinned in requirements-image.txt: {unpinned}"
    assert set(resolved) == set(image), f"pinned but not resolved: {sorted(set(image) - set(resolved))}"


def test_image_check_names_what_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-image check, run here: what this machine shares with the image passes, the rest is named."""
    import numpy

    release = serving_image.release(makefile.variable("TRITON_IMAGE_TAG"))
    monkeypatch.setenv("NVIDIA_TRITON_SERVER_VERSION", release.container)
    monkeypatch.setenv("TRITON_SERVER_VERSION", release.triton)
    monkeypatch.setenv("CUDA_VERSION", f"{release.cuda}.001")
    site = Path(numpy.__file__).parents[1]
    requirements = tmp_path / "requirements-image.txt"
    requirements.write_text(f"numpy=={numpy.__version__}\npsutil==0.0.1  # not what is installed\n")
    problems = serving_image.check(release, requirements, site)
    assert not [p for p in problems if re.match(r"(NVIDIA_TRITON|TRITON|CUDA)_|numpy==", p)], problems
    assert any(p.startswith("psutil==0.0.1: found psutil==") for p in problems), problems
    assert any("not the DALI backend's /opt/tritonserver" in p for p in problems), problems
    monkeypatch.setenv("TRITON_SERVER_VERSION", "2.51.0")
    assert f"TRITON_SERVER_VERSION: '2.51.0', expected '{release.triton}'" in serving_image.check(
        release, requirements, site
    )

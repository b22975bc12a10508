"""The README names only what exists: files, make targets, modules, command-line options and the spec's numbers.

Numbers that come from the spec and can drift are rendered into the README (`make configs`); the rest of
what the README names is checked here against the files, so a rename or a changed default fails a test.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from export import serving_image
from pipelines import render, spec
from tests.unit import makefile

README = render.README.read_text()
ROOT = render.ROOT
CODE = re.findall(r"`([^`\n]+)`", README)
# The repository's top-level entries: a backticked name under one of them is a path the README promises.
TOP = {line.split("/")[0] for line in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                                                      text=True, check=True).stdout.splitlines()}  # fmt: skip
GENERATED = ("model.onnx", "model.plan", "manifest.json", "GPU_REPORT.md", "GPU_REPORT.cpu.md", "bench/gpu/REPORT.md")
YOURS = ("deploy/overlays/prod/",)  # where the README tells a user to put their own files


def _paths() -> list[str]:
    found = []
    for token in CODE:
        token = token.split()[0].rstrip(":,.")
        if any(c in token for c in "<*$") or token.endswith(GENERATED) or token.startswith(YOURS):
            continue
        if token.split("/")[0] in TOP and ("/" in token or "." in token):
            found.append(token)
    return sorted(set(found))


@pytest.mark.parametrize("path", _paths())
def test_named_files_exist(path: str) -> None:
    assert (ROOT / path).exists(), f"README names {path}, which does not exist"


def _make_targets() -> list[str]:
    quoted = re.findall(r"`make ([a-z][\w-]*)", README)
    typed = re.findall(r"^\s*make ([a-z][\w-]*)", README, re.MULTILINE)  # in code blocks
    return sorted(set(quoted + typed))


@pytest.mark.parametrize("target", _make_targets())
def test_named_make_targets_exist(target: str) -> None:
    text = makefile.MAKEFILE.read_text()
    assert re.search(rf"^{re.escape(target)}:", text, re.MULTILINE), f"README names `make {target}`"


def _modules() -> list[str]:
    return sorted(set(re.findall(r"python3? -m ([\w.]+)", README)))


@pytest.mark.parametrize("module", _modules())
def test_named_modules_run(module: str) -> None:
    if module in ("pip", "venv", "pytest", "zipfile"):
        return
    assert importlib.util.find_spec(module) is not None, f"README runs `python -m {module}`, which is not there"


def _options() -> list[tuple[str, str]]:
    """(module, --option) for every `python -m module ... --option` line in the README's code blocks."""
    pairs = []
    for line in README.splitlines():
        m = re.search(r"python3? -m ((?:tools|export|pipelines)[\w.]*)(.*)", line)
        if m:
            pairs += [(m.group(1), o) for o in re.findall(r"(--[a-z][\w-]*)", m.group(2))]
    return sorted(set(pairs))


@pytest.mark.parametrize(("module", "option"), _options())
def test_named_options_exist(module: str, option: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert option in out.stdout, f"`python -m {module} --help` does not list {option}"


def test_spec_facts_are_the_rendered_ones() -> None:
    """The defaults and limits the README states come from the spec (a rendered table)."""
    assert render.facts_table() in README, "run `make configs`"
    for number in (spec.MAX_DET, spec.DEFAULT_CONF_THRESHOLD, spec.DEFAULT_IOU_THRESHOLD, spec.MIN_CROP_PX):
        assert str(number) in render.facts_table()


def test_versions_are_their_sources() -> None:
    """Versions the README states are the ones the Makefile, pyproject and the image's facts pin."""
    tag = makefile.variable("TRITON_IMAGE_TAG")
    image = serving_image.release(tag)
    assert f"`nvcr.io/nvidia/tritonserver:{tag}` (Triton {image.triton})" in README
    assert f"tritonclient=={makefile.variable('TRITONCLIENT_PA_VERSION')}" in README
    python = re.search(r'requires-python = ">=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert python and f"Python {python.group(1)}+" in README
    dali = re.search(r"^(nvidia-dali-cuda\d+==[\d.]+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert dali and dali.group(1) in README and image.dali in dali.group(1)

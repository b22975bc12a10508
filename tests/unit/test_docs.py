"""The README and every page of docs/ name only what exists: links, files, make targets, modules, options.

A newcomer follows the docs literally, so a renamed file, target, module or option, or a moved
heading, must fail here rather than in their shell. Numbers that come from the spec are rendered
into the pages (`make configs`, `make k8s-manifests`); versions the pages state are compared with
the files that pin them.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from export import serving_image
from pipelines import paths, spec
from tests.unit import makefile
from tools import render

ROOT = paths.ROOT
PAGES = [render.README, *sorted((ROOT / "docs").glob("*.md"))]
FILES = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
# The repository's top-level entries: a name in code under one of them is a path the docs promise.
TOP = {f.split("/")[0] for f in FILES}
FILE_NAMES = {Path(f).name for f in FILES}  # a bare `stream.py` in a page is one of these
GENERATED = ("model.onnx", "model.plan", "manifest.json", "GPU_REPORT.md", "GPU_REPORT.cpu.md", "bench/gpu/REPORT.md")
YOURS = ("deploy/overlays/prod/",)  # where the docs tell a user to put their own files
NOT_OURS = ("pip", "venv", "pytest", "zipfile")  # `python -m` modules of Python and its tools
THEIRS = ("build.py",)  # other projects' files the docs cite (Triton server's build.py)
# Make variables whose value is one of our modules' command line.
ARGS_OF = {"GPU_CHECK_ARGS": "tools.evaluate.gpu_check"}
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


# --- Reading a page: prose, code, headings, links ----------------------------------------------------


def prose(text: str) -> str:
    """The text without its fenced code blocks (a `#` there is a comment, not a heading)."""
    return FENCE.sub("", text)


def code(text: str) -> list[str]:
    """Every piece of code the page shows: inline spans, and the lines of its blocks with continuations
    joined and comments cut off."""
    paragraphs = prose(text).split("\n\n")
    spans = [" ".join(s.split()) for paragraph in paragraphs for s in re.findall(r"`([^`]+)`", paragraph)]
    lines = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines()[1:-1]:
            lines.append(re.sub(r"(^|\s)#.*", "", line).strip())
    return spans + [line for line in lines if line]


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces as dashes."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n, unique = 0, slug
        while unique in found:
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def broken_links(page: Path) -> list[str]:
    """The page's relative links whose file, or whose #anchor in a Markdown file, does not exist."""
    broken = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(target)
    return broken


# --- What a page names ---------------------------------------------------------------------------------


def make_targets(text: str) -> set[str]:
    """Targets of every `make ...` the page shows (`make setup perf-analyzer` names two)."""
    found = set()
    for piece in code(text):
        for words in re.findall(r"(?:^|[;&|(]\s*)make((?:\s+[a-z][\w-]*)+)", piece):
            found |= set(words.split())
    return found


def modules(text: str) -> set[str]:
    return {m for piece in code(text) for m in re.findall(r"python3? -m ([\w.]+)", piece)} - set(NOT_OURS)


def options(text: str) -> set[tuple[str, str]]:
    """(module, --option) for every option written after `python -m <our module>` or in a make variable
    that carries one's arguments."""
    pairs = set()
    for piece in code(text):
        for module, rest in re.findall(r"python3? -m ((?:tools|export|pipelines)[\w.]*)((?:(?!python3? -m).)*)", piece):
            rest = re.split(r"\||&&|;", rest)[0]
            pairs |= {(module, o) for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest)}
        for variable, module in ARGS_OF.items():
            for value in re.findall(rf'{variable}="([^"]*)"', piece):
                pairs |= {(module, o) for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", value)}
    return pairs


def paths(text: str) -> set[str]:
    """Repository paths the page's code names (under a top-level entry; placeholders skipped), and bare
    Python file names (`stream.py`), which must be some file's name."""
    found = set()
    for piece in code(text):
        for token in piece.split():
            token = token.strip("()[],;:'\"").rstrip(".")
            if any(c in token for c in "<*${") or "..." in token or token.endswith(GENERATED):
                continue
            if token.startswith(YOURS) or token in THEIRS:
                continue
            if (token.split("/")[0] in TOP and ("/" in token or "." in token)) or re.fullmatch(r"\w+\.py", token):
                found.add(token)
    return found


def _each(named: Callable[[str], set]) -> list[tuple[Path, object]]:
    return [(page, item) for page in PAGES for item in sorted(named(page.read_text()))]


def _ids(value: object) -> str:
    return _name(value) if isinstance(value, Path) else str(value)


@functools.cache
def _help(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout


def _is_target(target: str) -> bool:
    return re.search(rf"^{re.escape(target)}:", makefile.MAKEFILE.read_text(), re.MULTILINE) is not None


# --- The tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_links_resolve(page: Path) -> None:
    assert not broken_links(page), f"{_name(page)} links to what does not exist: {broken_links(page)}"


@pytest.mark.parametrize(("page", "path"), _each(paths), ids=_ids)
def test_named_files_exist(page: Path, path: str) -> None:
    exists = (ROOT / path).exists() or ("/" not in path and path in FILE_NAMES)
    assert exists, f"{_name(page)} names {path}, which does not exist"


@pytest.mark.parametrize(("page", "target"), _each(make_targets), ids=_ids)
def test_named_make_targets_exist(page: Path, target: str) -> None:
    assert _is_target(target), f"{_name(page)} names `make {target}`, which the Makefile does not define"


@pytest.mark.parametrize(("page", "module"), _each(modules), ids=_ids)
def test_named_modules_run(page: Path, module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"{_name(page)} runs `python -m {module}`: not there"


@pytest.mark.parametrize(("page", "pair"), _each(options), ids=_ids)
def test_named_options_exist(page: Path, pair: tuple[str, str]) -> None:
    module, option = pair
    assert option in _help(module), f"{_name(page)}: `python -m {module} --help` does not list {option}"


def test_the_checks_catch_a_broken_link_and_a_missing_name(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[a](other.md#other-page) [b](#title) [c](gone.md) [d](other.md#gone) [e](#gone)\n\n"
        "```bash\nmake serve no-such-target HOST=x   # make sure\n# not a heading\n"
        ".venv/bin/python -m tools.client a.jpg --no-such-option\n```\n"
    )
    assert broken_links(page) == ["gone.md", "other.md#gone", "#gone"]
    assert anchors(page.read_text()) == {"title"}
    assert make_targets(page.read_text()) == {"serve", "no-such-target"}
    assert _is_target("serve") and not _is_target("no-such-target")
    assert options(page.read_text()) == {("tools.client", "--no-such-option")}
    assert "--no-such-option" not in _help("tools.client")


def test_pages_are_linked_from_the_readme() -> None:
    """Every page of docs/ is one click from the front door."""
    readme = render.README.read_text()
    for page in PAGES[1:]:
        assert f"]({_name(page)})" in readme, f"the README's map does not link {_name(page)}"


def test_spec_facts_are_the_rendered_ones() -> None:
    """The defaults, limits and tiers the docs state come from the spec (rendered tables)."""
    assert render.facts_table() in render.SERVING_DOC.read_text(), "run `make configs`"
    assert render.tier_table() in render.README.read_text(), "run `make configs`"
    for number in (spec.MAX_DET, spec.DEFAULT_CONF_THRESHOLD, spec.DEFAULT_IOU_THRESHOLD, spec.MIN_CROP_PX):
        assert str(number) in render.facts_table()


def test_versions_are_their_sources() -> None:
    """Versions the docs state are the ones the Makefile, pyproject and the image's facts pin."""
    readme, gpu, bench = (p.read_text() for p in (render.README, ROOT / "docs/gpu.md", ROOT / "docs/benchmarks.md"))
    tag = makefile.variable("TRITON_IMAGE_TAG")
    image = serving_image.release(tag)
    assert f"`nvcr.io/nvidia/tritonserver:{tag}` (Triton {image.triton})" in gpu
    assert f"tritonclient=={makefile.variable('TRITONCLIENT_PA_VERSION')}" in bench
    python = re.search(r'requires-python = ">=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert python and f"Python {python.group(1)}+" in readme
    dali = re.search(r"^(nvidia-dali-cuda\d+==[\d.]+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert dali and dali.group(1) in gpu and image.dali in dali.group(1)

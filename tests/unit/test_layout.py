"""Dependencies point one way: served models and export on `pipelines`, tools on both, nothing on tools.

Read from the source (every absolute import of our packages), so an import against the direction
fails here before anyone draws the graph again.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipelines import paths

ROOT = paths.ROOT
OURS = ("pipelines", "export", "tools")
# Package (longest prefix wins) -> the packages its modules may import from.
MAY_IMPORT = {
    "pipelines": ("pipelines",),
    "export": ("pipelines", "export"),
    "model_repository": ("pipelines",),
    "tools": (),
    "tools.client": ("pipelines", "tools.client"),
    "tools.server": ("pipelines", "export", "tools.server"),
    "tools.evaluate": ("pipelines", "export", "tools.client", "tools.server", "tools.evaluate"),
    "tools.render": ("pipelines",),
    "tools.k8s": ("pipelines", "export", "tools.render"),
    "tools.bridge": ("pipelines", "tools.client", "tools.server", "tools.bridge"),
}


def _package(path: Path) -> str:
    dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return max((p for p in MAY_IMPORT if dotted == p or dotted.startswith(p + ".")), key=len)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in OURS}


SOURCES = sorted(
    p for folder in (*OURS, "model_repository") for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts
)


def _allowed(module: str, package: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in MAY_IMPORT[package])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    package = _package(path)
    against = sorted(m for m in _imports(path) if not _allowed(m, package))
    assert not against, f"{path.relative_to(ROOT)} ({package}) imports {against} against the direction"


def test_the_rule_catches_an_import_against_the_direction() -> None:
    assert not _allowed("export.manifest", "pipelines")
    assert not _allowed("tools.server.triton", "tools.client")
    assert _allowed("pipelines.spec", "tools.client")

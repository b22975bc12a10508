"""The Makefile's variables, read once here for the tests that check other files against them."""

from __future__ import annotations

import re

from pipelines import paths

MAKEFILE = paths.ROOT / "Makefile"


def variable(name: str) -> str:
    """The value of a one-word `NAME := value` or `NAME ?= value` line of the Makefile."""
    found = re.search(rf"^{re.escape(name)}\s*[:?]?=\s*(\S+)\s*$", MAKEFILE.read_text(), re.MULTILINE)
    assert found, f"the Makefile defines no {name}"
    return found.group(1)

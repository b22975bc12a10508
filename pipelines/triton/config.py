"""The model's own config, as Triton hands it to `initialize`."""

from __future__ import annotations

import json
from typing import Any

import triton_python_backend_utils as pb_utils


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def parameter(config: dict[str, Any], key: str) -> str:
    """A `parameters { key: ... }` entry of the model config; a missing one is a config bug."""
    value = optional_parameter(config, key)
    if value is None:
        raise pb_utils.TritonModelException(f"model config lacks parameter {key!r}")
    return value


def optional_parameter(config: dict[str, Any], key: str) -> str | None:
    """A `parameters { key: ... }` entry that only some tiers' configs have."""
    return config.get("parameters", {}).get(key, {}).get("string_value")

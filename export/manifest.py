"""The provenance record written beside every served artifact, and read back by the server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FILENAME = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / FILENAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read(directory: Path) -> dict[str, Any]:
    """Read a manifest, failing with the command that makes one when it is missing."""
    path = directory / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make export` first")
    return json.loads(path.read_text())

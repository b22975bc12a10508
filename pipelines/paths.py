"""Where this checkout keeps things: its root and the model repository.

For the build tools, the export and the tests (the served models never need it); one home, so no
default depends on the directory a command is started from.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"

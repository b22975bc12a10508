"""Which DALI build this GPU host's driver runs: `python tools/gpu_host.py` prints its requirements file.

Standard library only: `make gpu-check` runs it with the host's Python before any virtualenv exists.
DALI's CUDA 13 build needs a driver of the R580 series or later, its CUDA 12 build R525 or later
(DALI docs, installation.rst: "525.60 or later and 580.x or later respectively"; CUDA's minor version
compatibility table: CUDA 13.x >= 580, CUDA 12.x >= 525). Exit status 2 with the reason where none fits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The oldest driver branch each DALI build runs on, newest build first.
BUILDS = ((580, ROOT / "requirements-gpu-cuda13.txt"), (525, ROOT / "requirements-gpu-cuda12.txt"))


class NoFit(RuntimeError):
    """No DALI build runs on this host; the message says why and what to do."""


def driver_version() -> str:
    """The NVIDIA driver's version (`nvidia-smi --query-gpu=driver_version`), of the first GPU."""
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NoFit(f"cannot read the NVIDIA driver's version ({' '.join(query)}: {e}); is this a GPU host?") from e
    versions = [line.strip() for line in out.splitlines() if line.strip()]
    if not versions:
        raise NoFit("nvidia-smi lists no GPU")
    return versions[0]


def requirements_for(driver: str) -> Path:
    """The DALI requirements file for driver `driver` (e.g. "580.65.06")."""
    try:
        branch = int(driver.split(".")[0])
    except ValueError as e:
        raise NoFit(f"unexpected driver version {driver!r}") from e
    for oldest, requirements in BUILDS:
        if branch >= oldest:
            return requirements
    raise NoFit(f"NVIDIA driver {driver} is older than DALI's CUDA 12 build needs (R{BUILDS[-1][0]} or later): "
                "update the driver")  # fmt: skip


def main() -> int:
    try:
        print(requirements_for(driver_version()).relative_to(ROOT))
    except NoFit as e:
        print(f"gpu_host: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

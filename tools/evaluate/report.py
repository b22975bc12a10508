"""What every report here writes the same way: Markdown tables, whether a target was met, the machine.

`make bench` (bench.py, bench_bridge.py) and `make gpu-check` (gpu_check.py) each choose their own
facts and rows; the cells are written, and the versions and GPUs read, only here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

# A fact's label -> the module whose __version__ it is (imported when asked for: a tool reads only its own).
PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "ultralytics": "ultralytics",
    "numpy": "numpy",
    "opencv": "cv2",
    "onnxruntime": "onnxruntime",
}


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table's lines: the header, its rule, one line per row (cells as str() writes them)."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def met(ok: bool | None) -> str:
    """A target's last cell: yes, **no** (bold, so a miss stands out), or - where there is no target."""
    return "-" if ok is None else "yes" if ok else "**no**"


def versions(*labels: str) -> dict[str, str]:
    """The version of each package named, in the order named: "python", "DALI" (with the wheel it came
    from, i.e. its CUDA build) or a label of PACKAGES."""
    out = {}
    for label in labels:
        if label == "python":
            out[label] = platform.python_version()
        elif label == "DALI":
            import nvidia.dali

            out[label] = f"{nvidia.dali.__version__} ({_dali_distribution(Path(nvidia.dali.__file__))})"
        else:
            out[label] = importlib.import_module(PACKAGES[label]).__version__
    return out


def _dali_distribution(imported: Path) -> str:
    """The wheel the imported DALI came from (nvidia-dali-cuda120, -cuda130, ...): its CUDA build."""
    imported = imported.resolve()
    for name in importlib.metadata.packages_distributions().get("nvidia", []):
        if name.startswith("nvidia-dali"):
            location = importlib.metadata.distribution(name).locate_file("nvidia/dali/__init__.py")
            if Path(str(location)).resolve() == imported:
                return name
    return "wheel unknown"


def cpu_model() -> str:
    """The processor's model name as the kernel gives it (platform's guess elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())  # fmt: skip


def nvidia_smi(*args: str) -> str | None:
    """nvidia-smi's answer to `args`, or None where it is missing or fails (no GPU, no driver)."""
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None

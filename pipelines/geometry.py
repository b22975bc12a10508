"""Where the letterbox puts an image: the arithmetic, written once for the DALI graph and the host letterbox.

Ultralytics' `LetterBox(auto=False, center=True)` as used by `YOLO.predict`: scale by
r = min(S/h, S/w), resize each side to max(round(side * r), 1) with Python's round-half-even,
pad with spec.PAD_VALUE putting floor(padding / 2) on the left and top. Computed in float64, as
Python does. The same function runs on Python numbers (the cpu variant's letterbox) and on DALI
nodes (the GPU graph), given the four operations that differ between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines import spec


@dataclass(frozen=True)
class Arithmetic:
    """The operations the letterbox needs beyond + - * /, for one kind of number."""

    floor: Callable[[Any], Any]
    round_half_even: Callable[[Any], Any]  # Python's round()
    minimum: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]


PYTHON = Arithmetic(floor=math.floor, round_half_even=round, minimum=min, maximum=max)


def fit(height: Any, width: Any, ops: Arithmetic = PYTHON) -> tuple[Any, Any, Any, Any]:
    """(pad_left, pad_top, resized_w, resized_h) of an image of height x width in the detector's input."""
    size = float(spec.IMAGE_SIZE)
    r = ops.minimum(size / height, size / width)
    new_w = ops.maximum(ops.round_half_even(width * r), 1.0)
    new_h = ops.maximum(ops.round_half_even(height * r), 1.0)
    left = ops.floor((size - new_w) / 2.0)
    top = ops.floor((size - new_h) / 2.0)
    return left, top, new_w, new_h

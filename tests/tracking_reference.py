"""The reference nobody here wrote for tracking: Ultralytics' own BYTETracker, fed detections as `model.track` does.

Shared by the unit tests (our tracker against it, frame by frame) and the server tests (the served ids
against it, on the served detections).
"""

from __future__ import annotations

from dataclasses import asdict

import lap  # noqa: F401  before Ultralytics' trackers: without lap they pip-install it at import time
import numpy as np
from ultralytics.engine.results import Boxes
from ultralytics.trackers.byte_tracker import BYTETracker
from ultralytics.utils import IterableSimpleNamespace

from pipelines import spec


def reference() -> BYTETracker:
    return BYTETracker(IterableSimpleNamespace(tracker_type="bytetrack", **asdict(spec.BYTETRACK)))


def results(boxes: np.ndarray, scores: np.ndarray, shape: tuple[int, int] = (720, 1280)) -> Boxes:
    """A frame's detections as `model.track` hands them to its tracker (one class); shape: the frame's (h, w)."""
    data = np.concatenate([boxes, scores[:, None], np.zeros_like(scores)[:, None]], axis=1).astype(np.float32)
    return Boxes(data, shape)


def reference_ids(tracker: BYTETracker, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Ultralytics' track id of each box (-1 none)."""
    rows = tracker.update(results(boxes, scores))
    ids = np.full(len(scores), -1, dtype=np.int64)
    if len(rows):
        ids[rows[:, -1].astype(int)] = rows[:, 4].astype(int)
    return ids

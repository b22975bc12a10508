"""The reference nobody here wrote for tracking: Ultralytics' own BYTETracker, fed detections as `model.track` does.

Shared by the unit tests (our tracker against it, frame by frame) and the server tests (the served ids
against it, on the served detections).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

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


def served_reference_ids(client: Any, jpegs: list[bytes]) -> list[np.ndarray]:
    """Ultralytics' ids for a camera's frames, fed frame by frame the detections the server answers down to
    the tracker's threshold (the streaming tier at CONF_THRESHOLD = spec.TRACK_DETECTION_CONF: the track tier's
    detector, letterbox and NMS). Each frame's ids, best box first: the track tier answers the first of them.
    `client`: a tools.client.people.PeopleClient."""
    tracker = reference()
    ids = []
    for jpeg in jpegs:
        low = client.infer_raw("streaming", client.inputs([jpeg], conf=spec.TRACK_DETECTION_CONF))
        kept = int(low[spec.NUM_DETECTIONS.name][0, 0])
        ids.append(reference_ids(tracker, low[spec.BOXES.name][0, :kept], low[spec.SCORES.name][0, :kept]))
    return ids

"""What the server keeps per camera (one Triton sequence): its tracker and its tracks' gender votes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.tracking.bytetrack import TRACK, Tracker
from pipelines.tracking.vote import VOTE, GenderVote

# The most a camera's state takes per track it keeps (tracked or lost): its ByteTrack row and its vote.
# A camera's state is at most this times the tracks it keeps, plus a few hundred bytes of Python objects.
BYTES_PER_TRACK = TRACK.itemsize + VOTE.itemsize


@dataclass(frozen=True)
class Tracked:
    """One frame's answer per input box."""

    ids: np.ndarray  # [N] int64 track id, -1 where the box has none (yet)
    gender: np.ndarray  # [N] int32 the track's voted gender, UNDETERMINED until a face was read
    gender_scores: np.ndarray  # [N] float32 the vote's score, 0 while undetermined


class Camera:
    """One camera's tracking state: frames in order, from the sequence's start to its end."""

    def __init__(self) -> None:
        self.tracker = Tracker()
        self.votes = GenderVote()

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays that hold the camera's tracks and votes (what grows with the people in view)."""
        return self.tracker.nbytes + self.votes.nbytes

    def update(self, boxes: np.ndarray, scores: np.ndarray, gender: np.ndarray, gender_scores: np.ndarray) -> Tracked:
        """Track one frame: boxes [N, 4] x1 y1 x2 y2 and scores [N], every box the NMS kept at
        spec.TRACK_DETECTION_CONF; gender and gender_scores [N]: GENDER and GENDER_SCORES of the same boxes
        (UNDETERMINED where none was classified, e.g. the boxes under the answer's CONF_THRESHOLD)."""
        ids = self.tracker.update(boxes, scores)
        voted, voted_scores = self.votes.update(ids, np.asarray(gender), np.asarray(gender_scores), self.tracker.ids)
        return Tracked(ids, voted, voted_scores)

"""Each track's gender: a vote over the frames where its face was read, weighted by the classifier's score.

Per-frame gender flips with pose and distance; summed over a track it settles. A frame counts when
postprocess determined a gender for the box (GENDER != UNDETERMINED), with its GENDER_SCORES as the
weight; other frames leave the vote as it was, so a person whose face is read now and then keeps one
gender between readings. A track is undetermined (UNDETERMINED, score 0) until its first reading.
"""

from __future__ import annotations

import numpy as np

from pipelines import spec

VOTE = np.dtype(
    [
        ("id", np.int64),
        ("weight", np.float64, len(spec.GENDER_LABELS)),  # summed scores of the frames read as each gender
        ("reads", np.int64),  # frames read
    ]
)


class GenderVote:
    """The votes of one camera's tracks, kept while the tracker keeps the track (tracked or lost)."""

    def __init__(self) -> None:
        self.votes = np.zeros(0, dtype=VOTE)  # sorted by id; only tracks read at least once

    @property
    def nbytes(self) -> int:
        return self.votes.nbytes

    def update(
        self, ids: np.ndarray, gender: np.ndarray, scores: np.ndarray, kept: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Count this frame's readings and return each box's voted gender [N] int32 and its score [N] float32.

        ids: the boxes' track ids (-1 none; the others distinct, as a track has one box per frame);
        gender, scores: this frame's GENDER and GENDER_SCORES of the same boxes; kept: the ids the tracker
        still keeps (the others' votes are freed). The score is the winning gender's summed weight over the
        frames read: its mean score, counting a frame read as the other gender as 0.
        """
        kept_ids = set(kept.tolist())  # a few dozen at most: sets beat numpy's set routines here
        held = self.votes["id"].tolist()
        votes = self.votes if kept_ids.issuperset(held) else self.votes[[i in kept_ids for i in held]]
        read = (ids >= 0) & (gender != spec.UNDETERMINED)
        first = set(ids[read].tolist()).difference(votes["id"].tolist())
        if first:
            fresh = np.zeros(len(first), dtype=VOTE)
            fresh["id"] = sorted(first)
            votes = np.concatenate([votes, fresh])
            votes = votes[np.argsort(votes["id"])]
        row = np.searchsorted(votes["id"], ids[read])  # a track has one box per frame: rows are distinct
        votes["weight"][row, gender[read]] += scores[read]
        votes["reads"][row] += 1
        self.votes = votes

        voted = np.full(len(ids), spec.UNDETERMINED, dtype=np.int32)
        score = np.zeros(len(ids), dtype=np.float32)
        if not len(votes):
            return voted, score
        row = np.searchsorted(votes["id"], ids).clip(max=len(votes) - 1)
        has = votes["id"][row] == ids  # never for -1: ids count from 1
        weight = votes["weight"][row[has]]
        winner = weight.argmax(axis=1)
        voted[has] = winner
        score[has] = weight[np.arange(len(winner)), winner] / votes["reads"][row[has]]
        return voted, score

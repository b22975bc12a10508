"""ByteTrack for one camera, with Ultralytics' semantics and defaults: the ids `model.track` would give.

Each frame: predict every track one frame ahead; match high-score boxes to confirmed and lost tracks
(IoU times score); match low-score boxes to the tracked ones still unmatched (IoU alone), so a person
whose score drops for a while keeps their id; match the boxes left to last frame's new tracks, which
are confirmed by that second sighting or dropped; start a track on each box still left; forget
tracks lost for longer than `track_buffer` frames.

Written after `ultralytics/trackers/byte_tracker.py` (8.4.190) and its helpers, decision for decision,
including their quirks, because "the same ids as Ultralytics" is the contract the tests hold it to:
- a track lost for too long is marked removed but stays in the lost list until the next frame's end,
  so a box that frame can still re-find it under its old id;
- Ultralytics drops a lost track whose id is among its last REMOVED_BUFFER removals, which only a
  track re-found that way can be: it vanishes at its next loss. Its list of removed tracks is kept
  here as a count and, per track, the position of its last removal;
- a track that overlaps one of the other list by IoU > 1 - DUPLICATE_COST is dropped from its list
  when it is the younger (ties: the tracked one goes), without being marked removed;
- boxes pass through Ultralytics' float32 conversions (centre, top-left, aspect), so every IoU is its.
Ids count from 1 per camera (Ultralytics: per BYTETracker).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.spec import BYTETRACK, ByteTrack
from pipelines.tracking import kalman
from pipelines.tracking.assignment import assign

# Fixed in Ultralytics' code rather than in the yaml (the yaml's, and the detection threshold: pipelines/spec.py).
SECOND_MATCH_THRESH = 0.5  # second association (low-score boxes)
UNCONFIRMED_MATCH_THRESH = 0.7  # last frame's new tracks
DUPLICATE_COST = 0.15  # a tracked and a lost track closer than this (1 - IoU) are one person
REMOVED_BUFFER = 1000  # removals Ultralytics remembers (merge_track_pools' removed_buffer)

# Track states, as Ultralytics' TrackState.
TRACKED, LOST, REMOVED = 1, 2, 3

TRACK = np.dtype(
    [
        ("id", np.int64),
        ("mean", np.float64, 8),  # Kalman state: centre x, centre y, aspect, height and their velocities
        ("covariance", np.float64, (8, 8)),
        ("state", np.int8),
        ("confirmed", np.bool_),  # Ultralytics' is_activated: reported from its second sighting (or frame 1)
        ("frame", np.int64),  # the last frame a box was matched to it
        ("start", np.int64),  # the frame it started
        ("removed_at", np.int64),  # position of its last removal among all removals, -1 if never removed
        ("box", np.int64),  # the input box it was matched to in its last frame
    ]
)


@dataclass(frozen=True)
class Measured:
    """A frame's boxes as Ultralytics' STrack sees them, and which association each takes part in."""

    xyah: np.ndarray  # [N, 4] float32 centre x, centre y, aspect (w / h), height
    xyxy: np.ndarray  # [N, 4] float32 corners after the round trip through top-left, width, height
    scores: np.ndarray  # [N] float32
    high: np.ndarray  # indices of the boxes of the first association, in input order
    low: np.ndarray  # indices of the boxes of the second association, in input order

    @classmethod
    def of(cls, boxes: np.ndarray, scores: np.ndarray, settings: ByteTrack = BYTETRACK) -> Measured:
        x1, y1, x2, y2 = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).T
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        w, h = x2 - x1, y2 - y1
        valid = (w > 0) & (h > 0)  # Ultralytics drops boxes without area before anything else
        # Boxes.xywh in float32, then top-left in float64 and back (STrack's xywh2ltwh and cast).
        left = ((x1 + x2) / 2).astype(np.float64) - w.astype(np.float64) / 2
        top = ((y1 + y2) / 2).astype(np.float64) - h.astype(np.float64) / 2
        tlwh = np.stack([left.astype(np.float32), top.astype(np.float32), w, h], axis=1)
        xyah, xyxy = tlwh.copy(), tlwh.copy()
        xyah[:, :2] += xyah[:, 2:] / 2
        with np.errstate(divide="ignore", invalid="ignore"):  # boxes without height are never used
            xyah[:, 2] /= xyah[:, 3]
        xyxy[:, 2:] += xyxy[:, :2]
        high = np.flatnonzero(valid & (scores >= settings.track_high_thresh))
        low = np.flatnonzero(valid & (scores > settings.track_low_thresh) & (scores < settings.track_high_thresh))
        return cls(xyah, xyxy, scores, high, low)


def corners(mean: np.ndarray) -> np.ndarray:
    """[K, 4] float32 x1, y1, x2, y2 of track states [K, 8], as STrack.xyxy computes them."""
    box = mean[:, :4].copy()
    box[:, 2] *= box[:, 3]
    box[:, :2] -= box[:, 2:] / 2
    box[:, 2:] += box[:, :2]
    return box.astype(np.float32)


def iou_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - IoU of float32 boxes a [K, 4] and b [M, 4], in Ultralytics' bbox_ioa arithmetic."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype=np.float32)
    w = (np.minimum(a[:, None, 2], b[:, 2]) - np.maximum(a[:, None, 0], b[:, 0])).clip(0)
    h = (np.minimum(a[:, None, 3], b[:, 3]) - np.maximum(a[:, None, 1], b[:, 1])).clip(0)
    inter = w * h
    union = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] - inter
    return 1 - inter / (union + 1e-7)


def cost(mean: np.ndarray, found: Measured, boxes: np.ndarray, fuse: bool) -> np.ndarray:
    """[K, M] float32 cost of matching tracks [K, 8] to boxes `boxes` of `found`: 1 - IoU, or 1 - IoU * score
    (Ultralytics' iou_distance and fuse_score)."""
    return _cost(corners(mean), found, boxes, fuse)


def _cost(tracks: np.ndarray, found: Measured, boxes: np.ndarray, fuse: bool) -> np.ndarray:
    """cost() of tracks given by their corners [K, 4]."""
    distance = iou_cost(tracks, found.xyxy[boxes])
    return 1 - (1 - distance) * found.scores[boxes] if fuse else distance


def _without_duplicates(t: np.ndarray, tracked: np.ndarray, lost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the younger of each tracked and lost pair that overlap almost entirely (remove_duplicate_stracks)."""
    p, q = np.nonzero(iou_cost(corners(t["mean"][tracked]), corners(t["mean"][lost])) < DUPLICATE_COST)
    age = t["frame"] - t["start"]
    older = age[tracked[p]] > age[lost[q]]
    return np.delete(tracked, p[~older]), np.delete(lost, q[older])


class Tracker:
    """ByteTrack's state for one camera: `update` once per frame, in order.

    `tracks` holds Ultralytics' tracked list (its first `num_tracked` rows) then its lost list, each in
    Ultralytics' order (it decides lapjv's ties and which removals its bounded memory keeps).
    """

    def __init__(self, settings: ByteTrack = BYTETRACK) -> None:
        self.settings = settings
        self.frame = 0
        self.tracks = np.zeros(0, dtype=TRACK)
        self.num_tracked = 0
        self.last_id = 0
        self.removals = 0  # tracks removed so far (Ultralytics' removed list before its trim)

    @property
    def ids(self) -> np.ndarray:
        """Ids of every track kept, tracked or lost: the ones that may come back."""
        return self.tracks["id"]

    @property
    def nbytes(self) -> int:
        return self.tracks.nbytes

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Track ids [N] int64 of this frame's boxes [N, 4] (x1, y1, x2, y2) with scores [N]; -1 where none.

        Feed every box the NMS kept at spec.TRACK_DETECTION_CONF, not only the answered ones, in the NMS's order (new
        tracks take their ids in input order, as in `model.track`). A box gets its track's id once the
        track is confirmed: seen on two frames running, or started on the first frame; a new track's first
        box gets -1.
        """
        self.frame += 1
        found = Measured.of(boxes, scores, self.settings)
        t = self.tracks  # changed in place; the lists are rebuilt from it at the end
        tracked, lost = np.arange(self.num_tracked), np.arange(self.num_tracked, len(t))
        unconfirmed = tracked[~t["confirmed"][tracked]]
        pool = np.concatenate([tracked[t["confirmed"][tracked]], lost])
        if len(pool):
            mean = t["mean"][pool]
            mean[t["state"][pool] != TRACKED, 7] = 0  # a lost track's height stops changing
            t["mean"][pool], t["covariance"][pool] = kalman.predict(mean, t["covariance"][pool])
        box = corners(t["mean"])  # every track's box for this frame's associations (a match changes none used later)

        # 1. High-score boxes against confirmed and lost tracks.
        match = assign(_cost(box[pool], found, found.high, self.settings.fuse_score), self.settings.match_thresh)
        paired = match >= 0
        refound = pool[paired & (t["state"][pool] != TRACKED)]
        self._correct(pool[paired], found, found.high[match[paired]])
        left = np.delete(found.high, match[paired])
        # 2. Low-score boxes against the tracks followed last frame and still unmatched.
        rest = pool[~paired]
        rest = rest[t["state"][rest] == TRACKED]
        match = assign(_cost(box[rest], found, found.low, fuse=False), SECOND_MATCH_THRESH)
        self._correct(rest[match >= 0], found, found.low[match[match >= 0]])
        newly_lost = rest[match < 0]
        t["state"][newly_lost] = LOST
        # 3. The high-score boxes left against last frame's new tracks: confirmed, or dropped.
        match = assign(_cost(box[unconfirmed], found, left, self.settings.fuse_score), UNCONFIRMED_MATCH_THRESH)
        self._correct(unconfirmed[match >= 0], found, left[match[match >= 0]])
        left = np.delete(left, match[match >= 0])
        stale = lost[self.frame - t["frame"][lost] > self.settings.track_buffer]
        removed = np.concatenate([unconfirmed[match < 0], stale])
        t["state"][removed] = REMOVED
        # 4. New tracks on the boxes still left.
        born = left[found.scores[left] >= self.settings.new_track_thresh]
        t = np.concatenate([t, self._start(found, born)])
        new = np.arange(len(t) - len(born), len(t))

        # Ultralytics' end of frame (merge_track_pools): the lists, then duplicates, then the removals.
        tracked = np.concatenate([tracked[t["state"][tracked] == TRACKED], new, refound])
        lost = np.concatenate([lost[t["state"][lost] != TRACKED], newly_lost])
        was_removed = t["removed_at"][lost]
        lost = lost[(was_removed < 0) | (was_removed < self.removals - REMOVED_BUFFER)]
        tracked, lost = _without_duplicates(t, tracked, lost)
        t["removed_at"][removed] = self.removals + np.arange(len(removed))
        self.removals += len(removed)
        self.tracks = np.concatenate([t[tracked], t[lost]])
        self.num_tracked = len(tracked)

        ids = np.full(len(found.scores), -1, dtype=np.int64)
        shown = self.tracks[: self.num_tracked]
        shown = shown[shown["confirmed"]]
        ids[shown["box"]] = shown["id"]
        return ids

    def _correct(self, rows: np.ndarray, found: Measured, boxes: np.ndarray) -> None:
        """Tracks `rows` were matched to `boxes` this frame (Ultralytics' update and re_activate)."""
        t = self.tracks
        if len(rows):
            t["mean"][rows], t["covariance"][rows] = kalman.update(
                t["mean"][rows], t["covariance"][rows], found.xyah[boxes]
            )
        t["state"][rows] = TRACKED
        t["confirmed"][rows] = True
        t["frame"][rows] = self.frame
        t["box"][rows] = boxes

    def _start(self, found: Measured, boxes: np.ndarray) -> np.ndarray:
        new = np.zeros(len(boxes), dtype=TRACK)
        new["id"] = self.last_id + 1 + np.arange(len(boxes))
        self.last_id += len(boxes)
        if len(boxes):
            new["mean"], new["covariance"] = kalman.initiate(found.xyah[boxes])
        new["state"] = TRACKED
        new["confirmed"] = self.frame == 1
        new["frame"] = new["start"] = self.frame
        new["removed_at"] = -1
        new["box"] = boxes
        return new

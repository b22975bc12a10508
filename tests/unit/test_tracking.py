"""`pipelines.tracking` against Ultralytics' own `BYTETracker`, fed the same detections frame by frame.

Ids must be identical, and so must every track's state after every frame: the lists in Ultralytics'
order, states, frames and the Kalman means and covariances to the bit. Then the gender vote, the
memory a camera takes, and that a track's state goes when the track does.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import asdict

import lap  # before Ultralytics' trackers: without lap they pip-install it at import time
import numpy as np
import pytest
import torch
from ultralytics.engine.model import Model
from ultralytics.trackers.byte_tracker import BYTETracker, STrack
from ultralytics.trackers.utils import matching
from ultralytics.trackers.utils.stracks import parse_bboxes
from ultralytics.utils import YAML
from ultralytics.utils.checks import check_yaml

from pipelines import detections, manifest, onnx_session, paths, spec
from pipelines.opencv import letterbox
from pipelines.tracking import bytetrack, camera, vote
from pipelines.tracking.assignment import assign
from tests import tracking_video
from tests.tracking_reference import reference, reference_ids, results

ROOT = paths.ROOT
WIDTH, HEIGHT = 1280, 720
Frames = list[tuple[np.ndarray, np.ndarray]]  # per frame: boxes [N, 4] x1 y1 x2 y2 and scores [N], float32


def assert_same_state(ours: bytetrack.Tracker, theirs: BYTETracker, label: str) -> None:
    """Both lists in Ultralytics' order, each track's state, frames and Kalman state to the bit."""
    tracks = [*theirs.tracked_stracks, *theirs.lost_stracks]
    assert ours.tracks["id"].tolist() == [t.track_id for t in tracks], f"{label}: tracked + lost lists differ"
    assert ours.num_tracked == len(theirs.tracked_stracks), f"{label}: tracked list length"
    for row, track in zip(ours.tracks, tracks, strict=True):
        got = (int(row["state"]), bool(row["confirmed"]), int(row["frame"]), int(row["start"]))
        expected = (track.state, track.is_activated, track.frame_id, track.start_frame)
        assert got == expected, f"{label}: track {track.track_id} (state, confirmed, frame, start)"
        assert np.array_equal(row["mean"], track.mean), f"{label}: track {track.track_id} mean"
        assert np.array_equal(row["covariance"], track.covariance), f"{label}: track {track.track_id} covariance"


def run_both(frames: Frames, label: str) -> list[np.ndarray]:
    """Feed both trackers; assert identical ids and state after each frame; return the ids."""
    ours, theirs = bytetrack.Tracker(), reference()
    out = []
    for k, (boxes, scores) in enumerate(frames):
        ids = ours.update(boxes, scores)
        expected = reference_ids(theirs, boxes, scores)
        np.testing.assert_array_equal(ids, expected, err_msg=f"{label}, frame {k}: track ids")
        assert_same_state(ours, theirs, f"{label}, frame {k}")
        out.append(ids)
    return out


def random_walk(seed: int, frames: int = 60) -> Frames:
    """Persons born and gone at random, walking with inertia and crossing, hidden for 1 to 45 frames (around
    track_buffer too), scores hovering around the thresholds (some exactly on them), an occasional jump,
    second box or box without area, clutter; boxes in random order."""
    rng = np.random.default_rng(seed)
    persons: list[dict] = []
    out = []
    for f in range(frames):
        for _ in range(rng.poisson(0.25 if f else 5)):
            w = rng.uniform(20, 140)
            persons.append(
                {
                    "xy": rng.uniform((0, 0), (WIDTH, HEIGHT)),
                    "v": rng.normal(0, 6, 2),
                    "wh": np.array([w, w * rng.uniform(1.5, 3)]),
                    "level": rng.uniform(0.05, 1.0),
                    "gone": f + rng.integers(3, 80),
                    "hidden": 0,
                }
            )
        boxes, scores = [], []
        for p in persons:
            if f >= p["gone"]:
                continue
            p["v"] += rng.normal(0, 0.7, 2)
            p["xy"] += p["v"] + (rng.normal(0, 150, 2) if rng.random() < 0.01 else 0)
            p["wh"] *= np.exp(rng.normal(0, 0.02, 2))
            if p["hidden"]:
                p["hidden"] -= 1
                continue
            if rng.random() < 0.03:
                p["hidden"] = int(rng.choice([1, 2, 5, 12, 29, 30, 31, 32, 45]))
                continue
            score = rng.choice([0.1, 0.25]) if rng.random() < 0.05 else np.clip(p["level"] + rng.normal(0, 0.12), 0, 1)
            box = np.concatenate([p["xy"] - p["wh"] / 2, p["xy"] + p["wh"] / 2]) + rng.normal(0, 2, 4)
            boxes.append(box)
            scores.append(score)
            if rng.random() < 0.03:
                boxes.append(box + rng.normal(0, 6, 4))
                scores.append(score * 0.6)
        for _ in range(rng.poisson(0.8)):
            corner = rng.uniform((0, 0), (WIDTH, HEIGHT))
            boxes.append(np.concatenate([corner, corner + rng.uniform(10, 150, 2)]))
            scores.append(rng.uniform(0.05, 0.6))
        if boxes and rng.random() < 0.03:
            boxes.append(boxes[0] * [1, 1, 0, 1] + [0, 0, boxes[0][0], 0])  # no width
            scores.append(0.9)
        order = rng.permutation(len(boxes))
        out.append((np.array(boxes, np.float32).reshape(-1, 4)[order], np.array(scores, np.float32)[order]))
    return out


def test_defaults_are_ultralytics() -> None:
    """Our settings are bytetrack.yaml's, and spec.TRACK_DETECTION_CONF is the threshold `model.track` detects at."""
    yaml = YAML.load(check_yaml("bytetrack.yaml"))
    assert yaml.pop("tracker_type") == "bytetrack"
    assert yaml == asdict(bytetrack.BYTETRACK), "pipelines.tracking.bytetrack.ByteTrack differs from bytetrack.yaml"
    found = re.search(r'kwargs\["conf"\] = ([0-9.]+) if', inspect.getsource(Model.track))
    assert found, "Model.track no longer sets its detection threshold where this test reads it"
    assert float(found.group(1)) == spec.TRACK_DETECTION_CONF


def test_random_walks_match_ultralytics() -> None:
    """Identical ids and states on many walks, which reach what they are meant to test: low-score boxes kept
    on a track (second association), tracks found again after frames unseen, tracks shown from their
    second frame."""
    low = back = late = 0
    for seed in range(12):
        frames = random_walk(seed)
        last_seen: dict[int, int] = {}
        for k, ((_, scores), ids) in enumerate(zip(frames, run_both(frames, f"seed {seed}"), strict=True)):
            shown = ids[ids >= 0].tolist()
            low += int(((ids >= 0) & (scores < bytetrack.BYTETRACK.track_high_thresh)).sum())
            back += sum(last_seen.get(i, k - 1) < k - 1 for i in shown)
            late += sum(i not in last_seen for i in shown) if k else 0
            last_seen |= dict.fromkeys(shown, k)
    assert low and back and late, f"low-score matches {low}, found again {back}, new tracks {late}"


def test_costs_are_ultralytics() -> None:
    """Each frame's costs between every track kept and every box, bit for bit those of Ultralytics'
    iou_distance and fuse_score on its STracks (boxes through its float32 conversions)."""
    ours, theirs = bytetrack.Tracker(), reference()
    compared = 0
    for k, (boxes, scores) in enumerate(random_walk(3, frames=30)):
        found = results(boxes, scores)
        detected = [STrack(row, score, 0) for row, score in zip(parse_bboxes(found), found.conf, strict=True)]
        kept = [*theirs.tracked_stracks, *theirs.lost_stracks]
        measured = bytetrack.Measured.of(boxes, scores)
        for fuse in (False, True):
            expected = matching.iou_distance(kept, detected)
            expected = matching.fuse_score(expected, detected) if fuse else expected
            got = bytetrack.cost(ours.tracks["mean"], measured, np.arange(len(scores)), fuse)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), f"frame {k}, fuse={fuse}"
        compared += expected.size
        ours.update(boxes, scores)
        theirs.update(found)
    assert compared > 1000


def duplicate_of_a_lost_track() -> Frames:
    """Two boxes on one person (IoU 0.95) from frames 1 and 2: two tracks. From frame 6 only the second box:
    the first track is lost, the second tracked, both four frames old and almost on each other."""
    first = np.array([[100, 100, 180, 250]], np.float32)
    second = first + np.array([2, 0, 2, 0], np.float32)
    one = np.ones(1, np.float32)
    return [(first, one)] + [(np.concatenate([first, second]), np.ones(2, np.float32) * 0.9)] * 4 + [(second, one)] * 3


def test_a_duplicate_of_a_lost_track() -> None:
    """Ultralytics drops the younger of a tracked and a lost track that overlap by IoU > 0.85, and the tracked
    one when they are as old: the box has no id that frame, and the lost track takes it back the next."""
    ids = run_both(duplicate_of_a_lost_track(), "duplicate")
    assert [i.tolist() for i in ids[4:]] == [[1, 2], [-1], [1], [1]]


def test_cameras_count_ids_apart() -> None:
    """Two cameras interleaved frame by frame: each counts its own ids from 1, as one BYTETracker each."""
    walks = [random_walk(100, frames=40), random_walk(101, frames=40)]
    ours = [bytetrack.Tracker(), bytetrack.Tracker()]
    theirs = [reference(), reference()]
    shown: list[set[int]] = [set(), set()]
    for k in range(len(walks[0])):
        for cam in range(2):
            boxes, scores = walks[cam][k]
            ids = ours[cam].update(boxes, scores)
            np.testing.assert_array_equal(ids, reference_ids(theirs[cam], boxes, scores), err_msg=f"camera {cam}, {k}")
            shown[cam] |= set(ids[ids >= 0].tolist())
    assert 1 in shown[0] and 1 in shown[1], "each camera's ids start at 1"


def removed_then_found(clutter_removals: int) -> Frames:
    """A person standing still, unseen for exactly track_buffer + 1 frames, seen on the next one (which finds
    the track Ultralytics has just marked removed), then `clutter_removals` one-frame boxes (each a new
    track dropped a frame later), then the person unseen for one frame and seen again."""
    person = np.array([[1100, 550, 1180, 700]], np.float32)
    nobody = np.zeros((0, 4), np.float32)
    seen = (person, np.array([0.9], np.float32))
    frames: Frames = [seen] * 10 + [(nobody, np.zeros(0, np.float32))] * (bytetrack.BYTETRACK.track_buffer + 1)
    frames.append(seen)
    # Clutter alternates between two halves of the frame, so no box continues the last frame's.
    grid = np.stack(np.meshgrid(np.arange(5) * 100, np.arange(4) * 120), axis=-1).reshape(-1, 2)
    while clutter_removals:
        count = min(len(grid), clutter_removals)
        corner = grid[:count] + (len(frames) % 2) * np.array([560, 0])
        boxes = np.concatenate([corner, corner + np.array([40, 80])], axis=1).astype(np.float32)
        frames.append((np.concatenate([boxes, person]), np.full(count + 1, 0.9, np.float32)))
        clutter_removals -= count
    frames.append(seen)  # the last clutter is dropped here
    frames.append((nobody, np.zeros(0, np.float32)))
    frames += [seen] * 3
    return frames


@pytest.mark.parametrize("clutter", [bytetrack.REMOVED_BUFFER - 1, bytetrack.REMOVED_BUFFER])
def test_a_track_found_after_its_removal(clutter: int) -> None:
    """Ultralytics forgets a lost track whose id is among its last REMOVED_BUFFER removals: a track found the
    frame after its removal vanishes at its next loss while that removal is remembered (a new id comes), and
    is found again under its id once REMOVED_BUFFER other removals have pushed it out."""
    ids = run_both(removed_then_found(clutter), f"{clutter} removals in between")
    first = int(ids[1][0])
    assert int(ids[bytetrack.BYTETRACK.track_buffer + 11][0]) == first, "not found right after its removal"
    remembered = clutter < bytetrack.REMOVED_BUFFER  # its own removal and `clutter` others before the loss
    assert (int(ids[-1][0]) != first) == remembered, f"ids {first} -> {int(ids[-1][0])} with {clutter} removals"


@pytest.fixture(scope="module")
def video_detections() -> Frames:
    """The synthetic video through the project's letterbox, the served detector (ONNX Runtime, as the cpu
    variant) and NMS at spec.TRACK_DETECTION_CONF: what the tracking step will be fed."""
    folder = ROOT / "model_repository" / spec.tier(spec.DEFAULT_TIER).model(spec.Step.DETECTOR) / "1"
    if not (folder / "model.onnx").is_file():
        pytest.skip(f"{folder}/model.onnx is missing: run `make export`")
    person_classes = manifest.read(folder, manifest.Detector).person_class_ids
    session = onnx_session.session(folder / "model.onnx")
    frames = tracking_video.video().frames
    n = len(frames)
    images = np.empty((n, 3, spec.IMAGE_SIZE, spec.IMAGE_SIZE), np.float32)
    canvas = np.empty((spec.IMAGE_SIZE, spec.IMAGE_SIZE, 3), np.uint8)
    geometry = [[*letterbox.place(f[..., ::-1], canvas, images[k]), *f.shape[1::-1]] for k, f in enumerate(frames)]
    heads = np.concatenate([session.run(None, {spec.IMAGES.name: images[k : k + 8]})[0] for k in range(0, n, 8)])
    found = detections.detect(
        torch.from_numpy(heads),
        torch.tensor(geometry, dtype=torch.float32),
        torch.full((n,), spec.TRACK_DETECTION_CONF),
        torch.full((n,), spec.DEFAULT_IOU_THRESHOLD),
        torch.tensor(person_classes),
    )
    return [(found.boxes[k, : found.num[k, 0]].numpy(), found.scores[k, : found.num[k, 0]].numpy()) for k in range(n)]


def test_video_detections_match_ultralytics(video_detections: Frames) -> None:
    ids = run_both(video_detections, "synthetic video")
    shown = np.concatenate(ids)
    assert len(set(shown[shown >= 0].tolist())) >= len(tracking_video.PERSONS), "the video gave too few tracks"


def test_assignment_is_lapjv() -> None:
    """The optimal matching under a cost limit, as lap.lapjv(extend_cost=True, cost_limit=...) finds it,
    on sparse (IoU-like) and dense costs."""
    rng = np.random.default_rng(0)
    for case in range(300):
        rows, cols = rng.integers(0, 10, 2)
        cost = rng.random((rows, cols)).astype(np.float32)
        if case % 2:
            cost[rng.random((rows, cols)) < 0.7] = 1
        limit = float(rng.choice([0.5, 0.7, 0.8]))
        expected = lap.lapjv(cost, extend_cost=True, cost_limit=limit)[1] if cost.size else np.full(rows, -1)
        np.testing.assert_array_equal(assign(cost, limit), expected, err_msg=f"case {case}")


# --- Gender vote ------------------------------------------------------------------------------------

FEMALE, MALE = spec.GENDER_LABELS.index("female"), spec.GENDER_LABELS.index("male")
UNDETERMINED = spec.UNDETERMINED


def test_vote_is_weighted_by_score_over_frames_read() -> None:
    """Undetermined until a face is read; frames without a reading change nothing; the heavier total wins
    (two sure readings over three unsure ones); the score is the winner's total over the frames read."""
    votes = vote.GenderVote()
    ids = np.array([1, 2])
    readings = [  # (GENDER, GENDER_SCORES) of tracks 1 and 2
        ([UNDETERMINED, UNDETERMINED], [0.0, 0.0]),
        ([FEMALE, UNDETERMINED], [0.62, 0.0]),
        ([UNDETERMINED, MALE], [0.0, 0.99]),
        ([FEMALE, UNDETERMINED], [0.62, 0.4]),  # track 2: classified but below the threshold: not read
        ([MALE, MALE], [0.99, 0.9]),
        ([FEMALE, UNDETERMINED], [0.62, 0.0]),
        ([MALE, FEMALE], [0.99, 0.7]),
    ]
    expected = [
        ([UNDETERMINED, UNDETERMINED], [0.0, 0.0]),
        ([FEMALE, UNDETERMINED], [0.62, 0.0]),
        ([FEMALE, MALE], [0.62, 0.99]),
        ([FEMALE, MALE], [0.62, 0.99]),
        ([FEMALE, MALE], [1.24 / 3, 0.945]),  # track 1: female 1.24 over male 0.99, in three readings
        ([FEMALE, MALE], [1.86 / 4, 0.945]),
        ([MALE, MALE], [1.98 / 5, 1.89 / 3]),  # track 1: male 1.98 over female 1.86, from fewer frames
    ]
    for k, ((gender, scores), (voted_gender, voted_score)) in enumerate(zip(readings, expected, strict=True)):
        got_gender, got_score = votes.update(ids, np.array(gender), np.array(scores, np.float32), kept=ids)
        assert got_gender.tolist() == voted_gender, f"frame {k}: voted gender"
        np.testing.assert_allclose(got_score, voted_score, rtol=1e-6, err_msg=f"frame {k}: vote score")


def test_voted_gender_stays_fixed_between_readings(video_detections: Frames) -> None:
    """On the video's detections, each track's face read in some of its frames only (as id % 2, scores
    varying): undetermined until its first reading, then that gender in every frame, read or not."""
    tracker = bytetrack.Tracker()
    ids = [tracker.update(boxes, scores) for boxes, scores in video_detections]
    cam = camera.Camera()
    rng = np.random.default_rng(0)
    read_once: set[int] = set()
    unread_frames = 0
    for k, ((boxes, scores), expected_ids) in enumerate(zip(video_detections, ids, strict=True)):
        read = (expected_ids >= 0) & (scores > spec.DEFAULT_CONF_THRESHOLD) & (rng.random(len(scores)) < 0.4)
        gender = np.where(read, expected_ids % 2, UNDETERMINED)
        out = cam.update(boxes, scores, gender, np.where(read, rng.uniform(0.6, 1, len(scores)), 0).astype(np.float32))
        assert np.array_equal(out.ids, expected_ids), f"frame {k}: the camera's tracker gave other ids"
        read_once |= set(expected_ids[read].tolist())
        shown = expected_ids >= 0
        voted = np.where(np.isin(expected_ids, list(read_once)), expected_ids % 2, UNDETERMINED)
        assert out.gender[shown].tolist() == voted[shown].tolist(), f"frame {k}: voted gender"
        assert ((out.gender_scores[shown] > 0) == (voted[shown] != UNDETERMINED)).all(), f"frame {k}: vote score"
        unread_frames += int((shown & ~read & (voted != UNDETERMINED)).sum())
    assert read_once and unread_frames, (
        f"tracks read {len(read_once)}, frames shown unread after a reading {unread_frames}"
    )


def test_state_is_freed_with_its_track() -> None:
    """A person seen and read, then gone: their track and vote stay while the track may come back
    (track_buffer frames, plus the one Ultralytics keeps a removed track), then both go."""
    cam = camera.Camera()
    person = np.array([[100, 100, 160, 260]], np.float32)
    for _ in range(3):
        out = cam.update(person, np.array([0.9], np.float32), np.array([MALE]), np.array([0.9], np.float32))
    assert out.ids.tolist() == [1] and out.gender.tolist() == [MALE]
    assert cam.nbytes == camera.BYTES_PER_TRACK
    nobody = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int), np.zeros(0, np.float32)
    for _ in range(bytetrack.BYTETRACK.track_buffer + 1):
        cam.update(*nobody)
    assert cam.tracker.ids.tolist() == [1] and cam.votes.votes["id"].tolist() == [1], "forgotten too early"
    cam.update(*nobody)
    assert cam.tracker.ids.tolist() == [] and len(cam.votes.votes) == 0 and cam.nbytes == 0


def test_memory_per_camera() -> None:
    """A camera's state is its tracks' rows and their votes: BYTES_PER_TRACK per track kept, at most."""
    cam = camera.Camera()
    assert cam.nbytes == 0
    rng = np.random.default_rng(1)
    for k, (boxes, scores) in enumerate(random_walk(7)):
        n = len(scores)
        cam.update(boxes, scores, rng.integers(-1, 2, n), rng.uniform(0.6, 1, n).astype(np.float32))
        kept, read = len(cam.tracker.ids), len(cam.votes.votes)
        assert read <= kept, f"frame {k}: votes of tracks the tracker no longer keeps"
        assert cam.nbytes == kept * bytetrack.TRACK.itemsize + read * vote.VOTE.itemsize
        assert cam.nbytes <= kept * camera.BYTES_PER_TRACK
    assert kept > 5 and read > 5

"""The clients' shared pieces without a server: persons from the outputs, the drawing, a camera's sequence."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import spec
from tests.unit.test_bridge_options import outputs
from tools.client.draw import GENDER_COLORS, band_size, draw_persons, label
from tools.client.people import Person, unpack
from tools.client.sequence import IDLE_TIMEOUT_S, CameraSequence

BOXES = [[10, 20, 110, 320], [200, 40, 260, 200]]
FACES = [[40, 30, 70, 70], [0, 0, 0, 0]]


def test_persons_without_track_outputs() -> None:
    """A tier that does not track: each person's face box (None where FACES is zeros), no track fields."""
    first, second = unpack(outputs(BOXES, FACES))[0]
    assert first.face == (40.0, 30.0, 70.0, 70.0) and second.face is None
    assert (first.track_id, first.track_gender, first.track_gender_score) == (None, None, None)
    assert not first.tracked and first.shown_gender == (1, 0.9)
    assert first.as_json() == {"box": [10.0, 20.0, 110.0, 320.0], "score": 0.8, "class": 0, "gender": "male",
                               "gender_score": 0.9, "face": [40.0, 30.0, 70.0, 70.0]}  # fmt: skip
    assert second.as_json()["face"] is None


def test_persons_with_track_outputs() -> None:
    """The track tier: ids (-1 for a box without a track yet) and the voted gender, shown once tracked."""
    tracked, new = unpack(outputs(BOXES, FACES, track_ids=[3, -1]))[0]
    assert (tracked.track_id, tracked.track_gender, tracked.track_gender_score) == (3, 0, 0.7)
    assert tracked.tracked and tracked.shown_gender == (0, 0.7), "the vote, not this frame's gender"
    assert not new.tracked and new.track_id == -1 and new.shown_gender == (1, 0.9)
    record = tracked.as_json()
    assert (record["track_id"], record["track_gender"], record["track_gender_score"]) == (3, "female", 0.7)
    assert record["gender"] == "male" and record["gender_score"] == 0.9, "the per-frame fields keep their meaning"


def test_unpack_reads_every_image_of_a_batch() -> None:
    one, two = outputs(BOXES[:1], FACES[:1]), outputs(BOXES, FACES)
    batch = {name: np.concatenate([one[name], two[name]]) for name in one}
    assert [len(p) for p in unpack(batch)] == [1, 2]


def person(track_id: int | None = None, face: bool = True) -> Person:
    track = {} if track_id is None else {"track_id": track_id, "track_gender": 0, "track_gender_score": 0.83}
    return Person((0.0, 0.0, 0.0, 0.0), 0.51, 0, 1, 0.97, face=(0.0, 0.0, 0.0, 0.0) if face else None, **track)


def test_labels_show_the_id_and_the_shown_genders_score() -> None:
    assert label(person()) == "male 0.97", "the gender's score, not the detection's (0.51)"
    assert label(person(track_id=4)) == "#4 female 0.83", "tracked: the id and the voted gender"
    assert label(person(track_id=-1)) == "male 0.97", "no track yet: this frame's gender"
    undetermined = Person((0.0, 0.0, 1.0, 1.0), 0.5, 0, spec.UNDETERMINED, 0.4)
    assert label(undetermined) == "?"


def drawn(width: int, height: int, p: Person) -> np.ndarray:
    """The pixels a drawing changed on a black image of this size."""
    image = np.zeros((height, width, 3), np.uint8)
    draw_persons(image, [p])
    return image.any(axis=2)


def scaled(p: Person, k: float) -> Person:
    box = tuple(v * k for v in p.box)
    face = None if p.face is None else tuple(v * k for v in p.face)
    return Person(box, p.score, p.cls, p.gender, p.gender_score, face, p.track_id, p.track_gender,  # type: ignore[arg-type]
                  p.track_gender_score)  # fmt: skip


@pytest.mark.parametrize("k", [2, 3])
def test_labels_scale_with_the_image(k: int) -> None:
    """The same person on a frame k times larger: the label band is about k times taller (at 640x360 it is
    already legible, 1/36 of the shorter side)."""
    p = Person((100.0, 120.0, 200.0, 300.0), 0.8, 0, 1, 0.9, track_id=12, track_gender=1, track_gender_score=0.9)
    small = drawn(640, 360, p)
    large = drawn(640 * k, 360 * k, scaled(p, k))
    band = small[:120].any(axis=1).sum(), large[: 120 * k].any(axis=1).sum()  # the rows above the box
    assert band[0] >= 12 and band[1] == pytest.approx(k * band[0], rel=0.2)
    assert band_size(np.zeros((720, 1280, 3)), "#1 male 0.90")[1] >= 20, "a 1280x720 frame's label height"


def test_the_face_box_is_drawn() -> None:
    """A face box inside the person's box: its outline shows; without a face nothing is drawn there."""
    p = Person((100.0, 100.0, 300.0, 400.0), 0.8, 0, 0, 0.9, face=(160.0, 150.0, 240.0, 250.0))
    with_face = drawn(640, 480, p)
    without = drawn(640, 480, Person(p.box, p.score, p.cls, p.gender, p.gender_score))
    assert with_face[150, 160:241].all() and with_face[150:251, 240].all(), "the face's top and right edges"
    assert not without[150:251, 160:241].any()
    image = np.zeros((480, 640, 3), np.uint8)
    draw_persons(image, [p])
    assert tuple(image[250, 200]) == GENDER_COLORS[0], "in the colour of the gender shown"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_camera_starts_once_then_continues_and_ends() -> None:
    s = CameraSequence("door")
    flags = [s.next(k, end=k == 2) for k in range(3)]
    assert [(f.start, f.end, f.sequence) for f in flags] == [(True, False, 0), (False, False, 0), (False, True, 0)]
    assert flags[0].kwargs() == {"sequence_id": "door", "sequence_start": True, "sequence_end": False}
    assert s.next(3).start, "after the end, the next frame starts again"


def test_a_refused_start_starts_again_once() -> None:
    """The start refused while three more frames were in flight: the next frame starts again; the refusals of
    those three (they belong to the refused sequence) start nothing more."""
    s = CameraSequence("door")
    in_flight = [s.next(k) for k in range(4)]
    s.refused(in_flight[0], "all 16 camera slots are in use")
    restart = s.next(4)
    for f in in_flight[1:]:
        s.refused(f, "camera 'door' was not let in (...): start its sequence again")
    assert restart.start and restart.sequence == 4 and restart.number == 1
    assert [s.next(k).start for k in (5, 6)] == [False, False]


@pytest.mark.parametrize(
    ("message", "starts"),
    [
        ("inference request for sequence door to model 'preprocess_track' must specify the START flag", True),
        ("camera 'door' has no tracks yet: its sequence_start frame did not get here; start its sequence again", True),
        ("Exceeds maximum queue size", False),
        ("stream failed: no answer within 30s", False),
    ],
)
def test_a_refused_frame_starts_again_when_the_server_asks(message: str, starts: bool) -> None:
    s = CameraSequence("door")
    s.next(0)
    s.refused(s.next(1), message)
    assert s.next(2).start is starts


def test_a_camera_silent_past_the_idle_timeout_starts_again() -> None:
    clock = Clock()
    s = CameraSequence("door", clock=clock)
    s.next(0)
    clock.now += IDLE_TIMEOUT_S
    assert not s.next(1).start, "silent for the timeout itself: still held"
    clock.now += IDLE_TIMEOUT_S + 0.001
    assert s.next(2).start


def test_a_frame_taken_before_the_last_one_sent_starts_again() -> None:
    """A bridge's entries taken over from a dead peer are older than the camera's last frame sent."""
    s = CameraSequence("door")
    assert [s.next(k, taken=t).start for k, t in enumerate([(5, 0), (6, 0), (2, 0), (3, 0), (7, 0)])] == [
        True, False, True, False, False]  # fmt: skip

"""A synthetic camera for the tracking tests: persons cut from Ultralytics' sample photos walking over a wall.

Two persons from bus.jpg walk towards each other and cross (the second in front); each passes behind
a pillar and is hidden for a few frames (the second right after the start, the first near the end);
a person from zidane.jpg drifts behind both. Everything is
computed from the photos with fixed rectangles and integer steps, so the frames are the same on every
machine (cv2's resize is deterministic). Used by the unit tests and, JPEG-encoded, by server tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tests.unit import reference

WIDTH, HEIGHT = 640, 360
FRAMES = 20
BACKGROUND = (150, 160, 170)  # BGR, a plain light wall
PILLAR = (400, 530)  # x range of a pillar in front of everyone, full height
PILLAR_COLOUR = (70, 80, 90)


@dataclass(frozen=True)
class Person:
    """A person's rectangle in a sample photo and how it walks across the frame."""

    photo: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in the photo (the project's detector finds a person there)
    height: int  # pixels in the frame
    start: tuple[int, int]  # top-left corner in the frame at frame 0
    step: tuple[int, int]  # pixels per frame


# Drawn in this order: later persons are in front.
PERSONS = (
    Person("zidane.jpg", (699, 0, 1280, 718), 200, (10, 160), (6, 0)),
    Person("bus.jpg", (34, 385, 218, 910), 240, (20, 100), (26, 0)),
    Person("bus.jpg", (217, 394, 349, 889), 240, (560, 110), (-26, 0)),
)


@dataclass(frozen=True)
class Video:
    frames: list[np.ndarray]  # [HEIGHT, WIDTH, 3] uint8 BGR
    boxes: np.ndarray  # [frames, persons, 4] float32 x1 y1 x2 y2 of each person, clipped to the frame
    visible: np.ndarray  # [frames, persons] float32 fraction of each person's box that shows


def cutout(person: Person) -> np.ndarray:
    """The person's rectangle of its photo, resized to its height in the frame."""
    photo = cv2.imread(str(reference.ASSETS / person.photo), cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = person.box
    width = round((x2 - x1) * person.height / (y2 - y1))
    return cv2.resize(photo[y1:y2, x1:x2], (width, person.height), interpolation=cv2.INTER_AREA)


def video(frames: int = FRAMES) -> Video:
    """The frames, each person's box in each, and how much of it shows (hidden by the pillar or a person in front)."""
    cuts = [cutout(p) for p in PERSONS]
    out, boxes, visible = [], np.zeros((frames, len(PERSONS), 4), np.float32), np.zeros((frames, len(PERSONS)))
    for f in range(frames):
        image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        image[:] = BACKGROUND
        owner = np.full((HEIGHT, WIDTH), -1)  # which person each pixel shows
        for k, (person, cut) in enumerate(zip(PERSONS, cuts, strict=True)):
            x, y = person.start[0] + f * person.step[0], person.start[1] + f * person.step[1]
            h, w = cut.shape[:2]
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, WIDTH), min(y + h, HEIGHT)
            image[y1:y2, x1:x2] = cut[y1 - y : y2 - y, x1 - x : x2 - x]
            owner[y1:y2, x1:x2] = k
            boxes[f, k] = (x1, y1, x2, y2)
        image[:, PILLAR[0] : PILLAR[1]] = PILLAR_COLOUR
        owner[:, PILLAR[0] : PILLAR[1]] = -1
        for k in range(len(PERSONS)):
            x1, y1, x2, y2 = boxes[f, k].astype(int)
            visible[f, k] = (owner[y1:y2, x1:x2] == k).mean() if x2 > x1 and y2 > y1 else 0.0
        out.append(image)
    return Video(out, boxes, visible.astype(np.float32))

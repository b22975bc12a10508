"""Persons drawn on an image: one look for the annotated images and the annotated videos.

Sizes follow the image, so a label reads the same on a 352x288 frame and on a 4K one: text is
1/36 of the image's shorter side high (20 pixels on 1280x720), never under 12 pixels; lines thicken
with it. Each person gets a box coloured by the gender shown, a label on a filled band, and the box
of its face where the server found one.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from pipelines import spec
from tools.client.people import Person, gender_label

GENDER_COLORS = {0: (180, 60, 220), 1: (220, 140, 0), spec.UNDETERMINED: (130, 130, 130)}  # BGR, by GENDER value
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT = (255, 255, 255)
LINES_PER_SIDE = 36  # label height: the image's shorter side over this
MIN_TEXT_PX = 12


def text_px(image: np.ndarray) -> int:
    """The height of a label's text in pixels for this image."""
    return max(MIN_TEXT_PX, round(min(image.shape[:2]) / LINES_PER_SIDE))


def label(person: Person) -> str:
    """`#id` where tracked, then the gender shown (the track's vote once tracked) and that gender's score."""
    gender, score = person.shown_gender
    shown = gender_label(gender)
    text = f"{shown} {score:.2f}" if shown else "?"
    return f"#{person.track_id} {text}" if person.tracked else text


def _layout(image: np.ndarray, text: str) -> tuple[float, int, int, tuple[int, int], int]:
    """How `text` is set in this image: font scale, stroke thickness, padding, its band's size, text height."""
    px = text_px(image)
    thickness = max(1, round(px / 12))
    scale = cv2.getFontScaleFromHeight(FONT, px, thickness)
    pad = max(2, px // 5)
    (w, h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    return scale, thickness, pad, (w + 2 * pad, h + baseline + 2 * pad), h


def band_size(image: np.ndarray, text: str) -> tuple[int, int]:
    """Width and height of the band `put_label` draws for `text` in this image."""
    return _layout(image, text)[3]


def put_label(image: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int]) -> None:
    """`text` in white on a band of `color` whose top-left corner is `origin` (moved inside the image)."""
    scale, thickness, pad, (w, h), text_h = _layout(image, text)
    x = min(max(origin[0], 0), max(image.shape[1] - w, 0))
    y = min(max(origin[1], 0), max(image.shape[0] - h, 0))
    cv2.rectangle(image, (x, y), (x + w, y + h), color, -1)
    cv2.putText(image, text, (x + pad, y + pad + text_h), FONT, scale, TEXT, thickness, cv2.LINE_AA)


def draw_persons(image: np.ndarray, persons: Iterable[Person]) -> None:
    """Each person's box, face box and label, coloured by the gender shown, drawn into `image` (BGR) in place."""
    line = max(2, round(min(image.shape[:2]) / 360))
    above = band_size(image, "#")[1]
    for p in persons:
        color = GENDER_COLORS.get(p.shown_gender[0], GENDER_COLORS[spec.UNDETERMINED])
        x1, y1, x2, y2 = (round(v) for v in p.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, line)
        if p.face is not None:
            fx1, fy1, fx2, fy2 = (round(v) for v in p.face)
            cv2.rectangle(image, (fx1, fy1), (fx2, fy2), color, max(1, line // 2))
        top = y1 - above if y1 >= above else y1 + line  # above the box, or inside it at the image's top
        put_label(image, label(p), (x1, top), color)

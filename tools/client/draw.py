"""Persons drawn on an image: one look for the annotated images and the annotated videos."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from pipelines import spec
from tools.client.people import Person

GENDER_COLORS = {0: (180, 60, 220), 1: (220, 140, 0), spec.UNDETERMINED: (170, 170, 170)}  # BGR, by GENDER value


def draw_persons(image: np.ndarray, persons: Iterable[Person]) -> None:
    """Each person's box and `gender score` label, coloured by gender, drawn into `image` (BGR) in place."""
    for p in persons:
        color = GENDER_COLORS.get(p.gender, GENDER_COLORS[spec.UNDETERMINED])
        x1, y1, x2, y2 = (round(v) for v in p.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
        label = f"{p.gender_label or '?'} {p.score:.2f}"
        cv2.putText(image, label, (x1, max(y1 - 5, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)

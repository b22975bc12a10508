"""The reference nobody here wrote: Ultralytics' own predict on the same weights and images."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from ultralytics import YOLO

from pipelines import spec


@cache
def _model(weights: str) -> YOLO:
    return YOLO(weights, task="detect")


def ultralytics_people(
    weights: str,
    image: Path,
    person_classes: list[int],
    conf: float = spec.DEFAULT_CONF_THRESHOLD,
    iou: float = spec.DEFAULT_IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [K,4] xyxy original pixels, scores [K], classes [K]) in Ultralytics' order.

    rect=False: a fixed 640x640 letterbox, as served (predict's default is a minimal rectangle).
    """
    (result,) = _model(weights).predict(
        str(image),
        imgsz=spec.IMAGE_SIZE,
        rect=False,
        conf=conf,
        iou=iou,
        max_det=spec.MAX_DET,
        classes=person_classes,
        agnostic_nms=spec.AGNOSTIC_NMS,
        device="cpu",
        verbose=False,
    )
    b = result.boxes
    return b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy().astype(int)

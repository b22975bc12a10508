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


def head_squares(boxes: np.ndarray, width: int, height: int, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """The documented head crop (README, "Gender classifier"), computed here without the project's code.

    Per person box x1, y1, x2, y2: side s = min(HEAD_WIDTH_FRACTION * w, HEAD_HEIGHT_FRACTION * h) at the
    top centre, grown by `padding` * s on each side, shrunk to the image's shorter side if larger, then
    moved to lie inside the image. Returns the squares [K, 4] and which persons have s >= MIN_CROP_PX.
    """
    out = np.zeros((len(boxes), 4), np.float64)
    ok = np.zeros(len(boxes), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        s = min(spec.HEAD_WIDTH_FRACTION * (x2 - x1), spec.HEAD_HEIGHT_FRACTION * (y2 - y1))
        ok[k] = s >= spec.MIN_CROP_PX
        side = min(s * (1 + 2 * padding), width, height)
        cx, cy = (x1 + x2) / 2, y1 + s / 2
        left = min(max(cx - side / 2, 0.0), width - side)
        top = min(max(cy - side / 2, 0.0), height - side)
        out[k] = (left, top, left + side, top + side)
    return out, ok


def resample(image: np.ndarray, region: np.ndarray, size: int) -> np.ndarray:
    """region of image [H, W, C] to [size, size, C] float64 as documented: bilinear at pixel centres,
    averaging ceil(region side / size) x ceil(...) samples per output pixel when shrinking (what
    torchvision's roi_align with aligned=True and adaptive sampling does), written out in numpy."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = region - 0.5  # pixel centres sit at integer + 0.5
    bin_w, bin_h = (x2 - x1) / size, (y2 - y1) / size
    grid_w, grid_h = max(int(np.ceil((x2 - x1) / size)), 1), max(int(np.ceil((y2 - y1) / size)), 1)
    xs = x1 + (np.arange(size)[:, None] + (np.arange(grid_w)[None, :] + 0.5) / grid_w) * bin_w  # [size, grid]
    ys = y1 + (np.arange(size)[:, None] + (np.arange(grid_h)[None, :] + 0.5) / grid_h) * bin_h

    def taps(v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        outside = (v < -1.0) | (v > n)
        v = np.clip(v, 0.0, None)
        low = np.floor(v).astype(int)
        at_end = low >= n - 1
        low = np.where(at_end, n - 1, low)
        high = np.where(at_end, n - 1, low + 1)
        frac = np.where(at_end, 0.0, v - low)
        return low, high, frac, outside

    xl, xh, fx, xo = (a.reshape(-1) for a in taps(xs, w))
    yl, yh, fy, yo = (a.reshape(-1) for a in taps(ys, h))
    img = image.astype(np.float64)
    top = img[yl][:, xl] * (1 - fx)[None, :, None] + img[yl][:, xh] * fx[None, :, None]
    bottom = img[yh][:, xl] * (1 - fx)[None, :, None] + img[yh][:, xh] * fx[None, :, None]
    value = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    value[yo] = 0.0
    value[:, xo] = 0.0
    return value.reshape(size, grid_h, size, grid_w, -1).mean(axis=(1, 3))

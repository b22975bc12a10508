"""Ultralytics' own letterbox, the reference the served pipeline must reproduce."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import ultralytics
from ultralytics.data.augment import LetterBox

from pipelines import spec

ASSETS = Path(ultralytics.__file__).parent / "assets"
PHOTOS = ("bus.jpg", "zidane.jpg")
LETTERBOX = LetterBox(new_shape=(spec.IMAGE_SIZE, spec.IMAGE_SIZE), auto=False)


def geometry(height: int, width: int) -> list[float]:
    """GEOMETRY as `LetterBox.get_params` computes it: left, top, new_w, new_h, original_w, original_h."""
    params = LETTERBOX.get_params({"img": np.empty((height, width), np.uint8)})
    new_w, new_h = params["new_unpad"]
    assert params["orig_shape"] == (height, width)
    return [float(params["left"]), float(params["top"]), float(new_w), float(new_h), float(width), float(height)]


def letterbox(encoded: bytes) -> tuple[np.ndarray, list[float]]:
    """IMAGES (float32 RGB CHW in [0, 1]) and GEOMETRY as `YOLO.predict` prepares `encoded`."""
    bgr = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, "cv2 could not decode the reference image"
    boxed = LETTERBOX(image=bgr)
    chw = np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / np.float32(255)
    return chw, geometry(*bgr.shape[:2])


def photo(name: str) -> bytes:
    """The encoded bytes of one of the photos shipped with Ultralytics."""
    return (ASSETS / name).read_bytes()

"""The cpu variant's letterbox: OpenCV on one image after another, bit for bit `YOLO.predict`'s.

Ultralytics reads images with cv2 and letterboxes them with cv2.resize (INTER_LINEAR); doing the
same here gives its exact pixels, where the DALI graph on CPU operators is within one level (its
bilinear is exact, cv2's fixed-point) and costs about four times as much CPU per image (`make bench`
measures both). Where the image goes is `pipelines.geometry.fit`, shared with the DALI graph.

Images are decoded one at a time, so one that fails fails only its own request.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipelines import geometry, spec

SIZE = spec.IMAGE_SIZE
SCALE = np.float32(255)  # Ultralytics divides the uint8 pixels by 255 in float32


class Undecodable(ValueError):
    """Image `index` of a request could not be decoded (its header passed validate.check)."""

    def __init__(self, index: int):
        super().__init__(f"image {index} could not be decoded")
        self.index = index


def decode(encoded: np.ndarray) -> np.ndarray | None:
    """RGB pixels (HWC uint8), EXIF orientation applied, as Ultralytics' cv2 reading gives them; None if corrupt.

    Trailing zeros (the padding of a multi-image request's rows) are ignored by the decoders.
    """
    try:
        return cv2.imdecode(encoded, cv2.IMREAD_COLOR_RGB)
    except cv2.error:
        return None


def place(rgb: np.ndarray, canvas: np.ndarray, out: np.ndarray) -> tuple[int, int, int, int]:
    """Letterbox `rgb` into `out` (float32 CHW in [0, 1]), using `canvas` (uint8 SIZE x SIZE x 3) as scratch.

    Returns (pad_left, pad_top, resized_w, resized_h).
    """
    height, width = rgb.shape[:2]
    left, top, new_w, new_h = (int(v) for v in geometry.fit(height, width))
    if (new_w, new_h) != (width, height):  # Ultralytics resizes only when the size changes
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas.fill(spec.PAD_VALUE)
    canvas[top : top + new_h, left : left + new_w] = rgb
    np.divide(canvas.transpose(2, 0, 1), SCALE, out=out)
    return left, top, new_w, new_h


def letterbox(encoded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One request's images -> IMAGES [N, 3, S, S], GEOMETRY [N, 6] and ORIGINAL [N, H, W, 3].

    ORIGINAL holds each image's RGB pixels, zero-padded to the request's largest height and width.
    Raises Undecodable for the first image that cannot be decoded.
    """
    decoded = []
    for k, data in enumerate(encoded):
        rgb = decode(data)
        if rgb is None:
            raise Undecodable(k)
        decoded.append(rgb)
    count = len(decoded)
    images = np.empty((count, 3, SIZE, SIZE), np.float32)
    placed = np.empty((count, *spec.GEOMETRY.dims), np.float32)
    height = max(rgb.shape[0] for rgb in decoded)
    width = max(rgb.shape[1] for rgb in decoded)
    original = np.zeros((count, height, width, 3), np.uint8)
    canvas = np.empty((SIZE, SIZE, 3), np.uint8)
    for k, rgb in enumerate(decoded):
        h, w = rgb.shape[:2]
        placed[k] = (*place(rgb, canvas, images[k]), w, h)
        original[k, :h, :w] = rgb
    return images, placed, original

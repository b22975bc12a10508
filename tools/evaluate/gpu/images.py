"""The images the GPU check reads: the photos shipped with Ultralytics, re-encoded where nvJPEG could differ."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

import cv2
import numpy as np

from tools.evaluate.corpus import ASSETS


def _jpeg(bgr: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90, *params])
    assert ok, "cv2 could not encode a JPEG"
    return buffer.tobytes()


def _photo(name: str) -> tuple[bytes, np.ndarray]:
    data = (ASSETS / name).read_bytes()
    return data, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@functools.cache
def parity_images() -> Mapping[str, bytes]:
    """The photos shipped with Ultralytics as shipped, resized to 1080p, 4K and odd sizes, progressive,
    grayscale and PNG: the encodings and shapes where nvJPEG and the letterbox arithmetic could differ.

    Encoded once per process (every batch size's throughput reads them) and read-only, as it is shared."""
    bus, bus_bgr = _photo("bus.jpg")
    zidane, zidane_bgr = _photo("zidane.jpg")
    images = {
        "bus.jpg": bus,
        "zidane.jpg": zidane,
        "bus-1920x1080.jpg": _jpeg(cv2.resize(bus_bgr, (1920, 1080))),
        "zidane-1920x1080.jpg": _jpeg(cv2.resize(zidane_bgr, (1920, 1080))),
        "zidane-3840x2160.jpg": _jpeg(cv2.resize(zidane_bgr, (3840, 2160))),
        "bus-progressive.jpg": _jpeg(bus_bgr, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "zidane-gray.jpg": _jpeg(cv2.cvtColor(zidane_bgr, cv2.COLOR_BGR2GRAY)),
        "bus.png": cv2.imencode(".png", bus_bgr)[1].tobytes(),
        "zidane-517x333.jpg": _jpeg(cv2.resize(zidane_bgr, (517, 333))),
        "bus-479x641.jpg": _jpeg(cv2.resize(bus_bgr, (479, 641))),
    }
    return MappingProxyType(images)


def bench_images() -> list[bytes]:
    """The 1080p JPEGs the throughput is measured on (the targets are stated for 1080p)."""
    images = parity_images()
    return [images["bus-1920x1080.jpg"], images["zidane-1920x1080.jpg"]]

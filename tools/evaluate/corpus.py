"""Inputs a camera fleet sends sooner or later, generated here, with what the server must answer.

Used by `make robustness` and the robustness tests. Every case is built from
the sample photos that ship with Ultralytics or from nothing, so it runs offline.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import ultralytics
from PIL import Image

from pipelines import spec

ASSETS = Path(ultralytics.__file__).parent / "assets"


class Expect(str, Enum):
    INVALID = "invalid"  # INVALID_ARG (HTTP 400), this request alone
    OK = "ok"  # answered; no person need be found


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes | np.ndarray  # bytes: one encoded image; ndarray: the raw IMAGE tensor (dtype/shape cases)
    expect: Expect
    why: str
    upright: bytes | None = None  # for EXIF cases: the same picture stored upright, which must give the same boxes


def _jpeg(image: np.ndarray, **params: int) -> bytes:
    flags: list[int] = []
    for key, value in params.items():
        flags += [getattr(cv2, key), value]
    ok, buf = cv2.imencode(".jpg", image, flags)
    assert ok
    return buf.tobytes()


def _pil_bytes(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _patch_sof(jpeg: bytes, marker: int | None = None, precision: int | None = None) -> bytes:
    """The same JPEG with its frame header changed (a lossless or 12-bit JPEG, as far as a decoder can tell)."""
    data = bytearray(jpeg)
    i = data.index(b"\xff\xc0")
    if marker is not None:
        data[i + 1] = marker
    if precision is not None:
        data[i + 4] = precision
    return bytes(data)


def _declared(width: int, height: int) -> bytes:
    """A few hundred bytes whose JPEG header declares width x height: a decompression bomb."""
    small = _jpeg(np.full((8, 8, 3), 128, np.uint8))
    data = bytearray(small)
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _exif(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _pil_bytes(image, "JPEG", quality=95, exif=exif.tobytes())


def _upright(encoded: bytes) -> bytes:
    """What a viewer shows for `encoded` (cv2 applies EXIF orientation), stored losslessly without EXIF."""
    decoded = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".png", decoded)[1].tobytes()


@cache
def large_image() -> bytes:
    """A 4K photo (zidane.jpg enlarged): slow enough to decode that requests sent meanwhile queue together."""
    small = cv2.imdecode(np.frombuffer((ASSETS / "zidane.jpg").read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    return _jpeg(cv2.resize(small, (3840, 2160), interpolation=cv2.INTER_CUBIC), IMWRITE_JPEG_QUALITY=95)


def cases() -> list[Case]:
    bus = (ASSETS / "bus.jpg").read_bytes()
    zidane = (ASSETS / "zidane.jpg").read_bytes()
    rng = np.random.default_rng(0)
    pil = Image.open(io.BytesIO(zidane)).convert("RGB")
    # Stored sideways: the pixels rotated so that EXIF orientation 6 (or 8) turns them upright again.
    exif6 = _exif(pil.transpose(Image.Transpose.ROTATE_90), 6)
    exif8 = _exif(pil.transpose(Image.Transpose.ROTATE_270), 8)
    corrupted = bytearray(bus)
    for k in range(len(corrupted) // 2, len(corrupted) // 2 + 200, 7):
        corrupted[k] ^= 0x5A
    over = int((spec.MAX_IMAGE_PIXELS**0.5) + 64)
    return [
        Case("empty bytes", b"", Expect.INVALID, "no data"),
        Case("random bytes", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), Expect.INVALID, "no image format"),
        Case("text", b"GET / HTTP/1.1\r\nHost: camera\r\n\r\n", Expect.INVALID, "no image format"),
        Case("truncated JPEG", bus[: len(bus) // 2], Expect.INVALID, "decoder stops at the missing data"),
        Case("JPEG without its end marker", bus[:-2], Expect.INVALID,
             "libjpeg-turbo refuses it; nvJPEG's hardware decoder might fill the rest silently"),
        Case("JPEG with corrupted entropy data", bytes(corrupted), Expect.OK,
             "decodes with artifacts, as libjpeg-turbo, cv2 and Ultralytics do"),
        Case("JPEG header declaring 65500x65500", _declared(65500, 65500), Expect.INVALID, "over the size limits"),
        Case(f"real {over}x{over} image", _jpeg(np.full((over, over, 3), 90, np.uint8)), Expect.INVALID,
             "over the pixel limit"),
        Case("1x1", _jpeg(np.full((1, 1, 3), 200, np.uint8)), Expect.OK, "tiny but valid"),
        Case("1x5000", _jpeg(rng.integers(0, 256, (1, 5000, 3), dtype=np.uint8)), Expect.OK, "thin but valid"),
        Case("5000x1", _jpeg(rng.integers(0, 256, (5000, 1, 3), dtype=np.uint8)), Expect.OK, "thin but valid"),
        Case("grayscale JPEG", _pil_bytes(pil.convert("L"), "JPEG"), Expect.OK, "one channel, decoded to RGB"),
        Case("CMYK JPEG", _pil_bytes(pil.convert("CMYK"), "JPEG"), Expect.OK, "four channels, decoded to RGB"),
        Case("progressive JPEG", _jpeg(cv2.imdecode(np.frombuffer(zidane, np.uint8), cv2.IMREAD_COLOR),
                                       IMWRITE_JPEG_PROGRESSIVE=1), Expect.OK, "progressive is supported"),
        Case("EXIF orientation 6", exif6, Expect.OK, "boxes in the upright frame", upright=_upright(exif6)),
        Case("EXIF orientation 8", exif8, Expect.OK, "boxes in the upright frame", upright=_upright(exif8)),
        Case("PNG", _pil_bytes(pil, "PNG"), Expect.OK, "PNG is supported"),
        Case("12-bit JPEG", _patch_sof(zidane, precision=12), Expect.INVALID, "only 8-bit JPEG is supported"),
        Case("lossless JPEG", _patch_sof(zidane, marker=0xC3), Expect.INVALID, "lossless JPEG is not supported"),
        Case("zero-length request", np.zeros((0, 0), np.uint8), Expect.INVALID, "no image in the request"),
        Case("wrong dtype", np.frombuffer(zidane[: len(zidane) // 4 * 4], np.float32)[None], Expect.INVALID,
             "IMAGE must be UINT8"),
        Case("wrong shape", np.frombuffer(zidane, np.uint8)[None, None], Expect.INVALID, "IMAGE must be [N, bytes]"),
    ]  # fmt: skip

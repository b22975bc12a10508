"""`pipelines.validate`: each limit with a case just inside and just outside it, and each header defect.

The headers are built here byte by byte (JPEG SOF0, PNG IHDR) so a limit can be probed at any size
without encoding gigapixel images; the real encoders' output is checked too.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from pipelines import spec, validate


def jpeg_header(width: int, height: int, marker: int = 0xC0, precision: int = 8, prefix: bytes = b"") -> bytes:
    """SOI, optional segments, then a start-of-frame segment declaring width x height, then start of scan."""
    sof = struct.pack(">BHHB", precision, height, width, 3) + b"\x01\x11\x00" * 3
    return (
        validate.JPEG_SOI[:2]
        + prefix
        + b"\xff"
        + bytes([marker])
        + struct.pack(">H", len(sof) + 2)
        + sof
        + b"\xff\xda\x00\x02"
        + validate.JPEG_EOI
    )


def png_header(width: int, height: int, depth: int = 8) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return validate.PNG_SIGNATURE + chunk + b"\x00\x00\x00\x00" + validate.PNG_IEND


HEADERS = {"JPEG": jpeg_header, "PNG": png_header}
SIDE = spec.MAX_IMAGE_SIDE
# The largest square within the pixel limit, and one pixel more in one direction.
INSIDE_PIXELS = (spec.MAX_IMAGE_PIXELS // SIDE, SIDE)  # width x height = at most MAX_IMAGE_PIXELS


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_side_limit(kind: str) -> None:
    make = HEADERS[kind]
    assert validate.check(make(SIDE, 1)) == (kind, SIDE, 1)
    assert validate.check(make(1, SIDE)) == (kind, 1, SIDE)
    for width, height in ((SIDE + 1, 1), (1, SIDE + 1)):
        with pytest.raises(validate.InvalidImage, match=f"over the limit of {SIDE} pixels"):
            validate.check(make(width, height))


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_pixel_limit(kind: str) -> None:
    make = HEADERS[kind]
    width, height = INSIDE_PIXELS
    assert width * height <= spec.MAX_IMAGE_PIXELS < (width + 1) * height, "the probe must sit on the limit"
    assert max(width, height) <= SIDE, "the probe must stay within the side limit"
    assert validate.check(make(width, height))[1:] == (width, height)
    with pytest.raises(validate.InvalidImage, match=f"over the limit of {spec.MAX_IMAGE_PIXELS} pixels"):
        validate.check(make(width + 1, height))


def test_byte_limit() -> None:
    header = jpeg_header(640, 480)
    exactly = header + b"\0" * (spec.MAX_IMAGE_BYTES - len(header))
    assert len(exactly) == spec.MAX_IMAGE_BYTES
    assert validate.check(exactly) == ("JPEG", 640, 480)
    with pytest.raises(validate.InvalidImage, match=f"over the limit of {spec.MAX_IMAGE_BYTES} bytes"):
        validate.check(exactly + b"\0")


@pytest.mark.parametrize("kind", sorted(HEADERS))
@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (1, 1)])
def test_empty_and_smallest(kind: str, width: int, height: int) -> None:
    data = HEADERS[kind](width, height)
    if width and height:
        assert validate.check(data) == (kind, width, height)
    else:
        with pytest.raises(validate.InvalidImage, match="declares an empty image"):
            validate.check(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty image"),
        (b"GIF89a" + b"\0" * 20, "not a JPEG or PNG"),
        (jpeg_header(8, 8, marker=0xC3), "lossless JPEG is not supported"),
        (jpeg_header(8, 8, marker=0xC9), "arithmetic JPEG is not supported"),
        (jpeg_header(8, 8, precision=12), "12-bit JPEG is not supported"),
        (validate.JPEG_SOI + b"\xe0\x00\x10" + b"\0" * 4, "no frame header"),  # truncated inside APP0
        (validate.JPEG_SOI + b"\xe0\x00\x04ab" + b"\x00" * 4, "expected a marker at byte 8"),  # APP0, then junk
        (validate.JPEG_SOI[:2] + b"\xff\xda\x00\x02", "no frame header before the image data"),
        (validate.PNG_SIGNATURE + b"\0\0\0\x0dIHDX" + b"\0" * 17, "no IHDR header"),
        (png_header(8, 8, depth=3), "bit depth 3"),
    ],
    ids=["empty", "gif", "lossless", "arithmetic", "12-bit", "truncated", "no-marker", "scan-first", "no-ihdr",
         "depth"],
)
def test_defects_are_named(data: bytes, message: str) -> None:
    with pytest.raises(validate.InvalidImage, match=message):
        validate.check(data)


@pytest.mark.parametrize("marker", [0xC1, 0xC2], ids=["extended", "progressive"])
def test_other_supported_frames(marker: int) -> None:
    assert validate.check(jpeg_header(33, 17, marker=marker)) == ("JPEG", 33, 17)


def test_segments_and_fill_bytes_before_the_frame_are_skipped() -> None:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\0" * 9
    restart = b"\xff\xd0"  # standalone, no length
    fill = b"\xff"  # a fill byte before a marker
    assert validate.check(jpeg_header(100, 50, prefix=app0 + restart + fill)) == ("JPEG", 100, 50)


def test_real_encodings() -> None:
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for ext, kind in ((".jpg", "JPEG"), (".png", "PNG")):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert validate.check(data) == (kind, 53, 37)
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert validate.check(progressive) == ("JPEG", 53, 37)


def _encoded(ext: str, **flags: int) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return cv2.imencode(ext, image, [v for k, v in flags.items() for v in (getattr(cv2, k), v)])[1].tobytes()


@pytest.mark.parametrize("progressive", [0, 1])
def test_a_jpeg_without_its_end_marker_is_truncated(progressive: int) -> None:
    """The hardware decoder may decode what is there without an error; libjpeg-turbo refuses: both refuse here."""
    data = _encoded(".jpg", IMWRITE_JPEG_PROGRESSIVE=progressive)
    assert validate.check(data)[0] == "JPEG"
    for cut in (len(data) - 1, len(data) - 2, len(data) // 2):
        with pytest.raises(validate.InvalidImage, match="truncated JPEG"):
            validate.check(data[:cut])
        assert cv2.imdecode(np.frombuffer(data[:cut], np.uint8), cv2.IMREAD_COLOR) is None, "cv2 refuses it too"


def test_a_thumbnails_end_marker_does_not_end_the_image() -> None:
    """An EXIF thumbnail (APP1) holds a whole JPEG, end marker included, before the image's own scan."""
    data = _encoded(".jpg")
    thumbnail = _encoded(".jpg")
    app1 = b"Exif\x00\x00" + thumbnail
    with_thumbnail = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    assert validate.check(with_thumbnail)[0] == "JPEG"
    with pytest.raises(validate.InvalidImage, match="truncated JPEG"):
        validate.check(with_thumbnail[: len(with_thumbnail) - 10])


def test_bytes_after_the_end_marker_are_accepted() -> None:
    """Some cameras append data after the image; the decoders ignore it."""
    data = _encoded(".jpg") + b"trailer"
    assert validate.check(data)[0] == "JPEG"
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None


def test_a_png_without_its_end_chunk_is_truncated() -> None:
    data = _encoded(".png")
    assert validate.check(data)[0] == "PNG"
    for cut in (len(data) - 1, len(data) - 12, len(data) // 2):
        with pytest.raises(validate.InvalidImage, match="truncated PNG"):
            validate.check(data[:cut])
        assert cv2.imdecode(np.frombuffer(data[:cut], np.uint8), cv2.IMREAD_COLOR) is None, "cv2 refuses it too"

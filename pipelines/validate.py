"""Judge an encoded image from its header alone, before it reaches a batched decoder.

A batched decoder fails every image of its batch when one is bad, and a
header that declares 65500x65500 pixels in a few hundred bytes would make it
allocate gigabytes. Reading the header (JPEG SOF, PNG IHDR) is enough to
refuse those with a message that says what is wrong; data that is corrupt past
the header is left to the decoder, whose failures the preprocess step isolates.
"""

from __future__ import annotations

import struct

from pipelines import spec

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"  # the last chunk's type and its CRC
# Start-of-frame markers the decoders (libjpeg-turbo on CPU, nvJPEG on GPU) both handle:
# baseline, extended sequential and progressive Huffman-coded JPEG.
_SUPPORTED_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
_OTHER_SOF = {0xC3: "lossless", 0xC5: "differential", 0xC6: "differential progressive",
              0xC7: "differential lossless", 0xC9: "arithmetic", 0xCA: "arithmetic progressive",
              0xCB: "arithmetic lossless", 0xCD: "differential arithmetic",
              0xCE: "differential arithmetic progressive", 0xCF: "differential arithmetic lossless"}  # fmt: skip
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


class InvalidImage(ValueError):
    """The message says what is wrong, for the client."""


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment, once the data is known to end."""
    size = None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise InvalidImage(f"corrupt JPEG header: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xDA:
            break  # start of scan: the entropy-coded data follows
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if size is None and (marker in _SUPPORTED_SOF or marker in _OTHER_SOF):
            if marker in _OTHER_SOF:
                raise InvalidImage(f"{_OTHER_SOF[marker]} JPEG is not supported; send baseline or progressive JPEG")
            if i + 10 > len(data):
                break
            precision, height, width = struct.unpack(">BHH", data[i + 4 : i + 9])
            if precision != 8:
                raise InvalidImage(f"{precision}-bit JPEG is not supported; send 8-bit JPEG")
            size = width, height
        i += 2 + length
    if size is None:
        raise InvalidImage("truncated or corrupt JPEG: no frame header before the image data")
    # Inside the entropy-coded data every 0xFF is followed by 0x00 or a restart marker, so an end-of-image
    # marker after the first scan is the image's own (an EXIF thumbnail's lies before it). libjpeg-turbo
    # (cpu variant) refuses data without one; nvJPEG's hardware decoder can decode what is there and fill
    # the rest silently, so the check is made here, for both variants alike.
    if data.find(JPEG_EOI, i) < 0:
        raise InvalidImage("truncated JPEG: the data ends before the end-of-image marker (FFD9)")
    return size


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InvalidImage("truncated or corrupt PNG: no IHDR header")
    if data.rfind(PNG_IEND) < 0:  # libpng refuses it (cpu variant); say so for both variants
        raise InvalidImage("truncated PNG: the data ends before the IEND chunk")
    width, height, depth = struct.unpack(">IIB", data[16:25])
    if depth not in (1, 2, 4, 8, 16):
        raise InvalidImage(f"corrupt PNG header: bit depth {depth}")
    return width, height


def check(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of an acceptable encoded image; InvalidImage says why not."""
    if not data:
        raise InvalidImage("empty image: send the encoded file's bytes")
    if len(data) > spec.MAX_IMAGE_BYTES:
        raise InvalidImage(f"{len(data)} bytes is over the limit of {spec.MAX_IMAGE_BYTES} bytes per image")
    if data.startswith(JPEG_SOI):
        kind, (width, height) = "JPEG", _jpeg_size(data)
    elif data.startswith(PNG_SIGNATURE):
        kind, (width, height) = "PNG", _png_size(data)
    else:
        raise InvalidImage(f"not a JPEG or PNG (first bytes {data[:4].hex() or 'none'})")
    if width == 0 or height == 0:
        raise InvalidImage(f"{kind} header declares an empty image ({width}x{height})")
    if max(width, height) > spec.MAX_IMAGE_SIDE:
        raise InvalidImage(f"{width}x{height} {kind}: a side is over the limit of {spec.MAX_IMAGE_SIDE} pixels")
    if width * height > spec.MAX_IMAGE_PIXELS:
        raise InvalidImage(f"{width}x{height} {kind} is over the limit of {spec.MAX_IMAGE_PIXELS} pixels")
    return kind, width, height

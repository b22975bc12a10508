"""Both letterboxes against Ultralytics' LetterBox on awkward shapes and real photos.

The cpu variant's (OpenCV) must be bit for bit Ultralytics'. The DALI graph on
CPU operators is within one level; the GPU graph is the same function with a
`mixed` decoder, so these pin down its geometry and arithmetic too; only the GPU
graph's serialization is checked here. ORIGINAL, the decoded image the person
crops come from, is compared with cv2.imdecode (what Ultralytics reads): DALI's
CPU decoder is bit-identical to it on every PNG and JPEG here, so the comparison
is exact.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache

import cv2
import numpy as np
import pytest
from nvidia.dali.pipeline import Pipeline
from PIL import Image

from pipelines import spec
from pipelines.dali import letterbox
from pipelines.opencv import letterbox as host
from tests.unit import reference

BATCH = 8
SIZE = spec.IMAGE_SIZE
LEVEL = 1 / 255  # cv2's fixed-point bilinear differs from DALI's float bilinear by at most one level
EPS = 1e-6  # float32 rounding of k/255
PAD = np.float32(spec.PAD_VALUE) / np.float32(255)
PAD_ULP = float(np.spacing(PAD))  # DALI multiplies by 1/255 where Ultralytics divides by 255

# (height, width): thin, tiny, odd, around the target size, and common camera frames.
AWKWARD = [
    (1, 5),
    (5, 1),
    (1, 5000),
    (5000, 1),
    (7, 3),
    (333, 517),
    (641, 639),
    (639, 641),
    (480, 640),
    (640, 640),
    (1080, 1920),
    (1, 1),
    (2, 3),
]


def half_shapes(limit: int = 1300) -> list[tuple[int, int]]:
    """Shapes whose short side * r ends exactly on .5, where round-half-even and half-up differ.

    For each height with such widths (r = 640 / height), keep the first width whose
    rounded-down side is even and the first whose is odd, then add the transposes.
    """
    found: list[tuple[int, int]] = []
    for height in range(2, limit):
        widths = np.arange(1, height)
        side = widths * (SIZE / height)  # float64, as Python and the DALI graph compute it
        halves = widths[side % 1 == 0.5]
        for parity in (0, 1):
            match = [int(w) for w in halves if int(w * (SIZE / height)) % 2 == parity]
            if match:
                found.append((height, match[0]))
    return found + [(w, h) for h, w in found]


HALVES = half_shapes()
SHAPES = AWKWARD + HALVES


def test_half_shapes_probe_round_half_even() -> None:
    """The search must find shapes where Python's round() and round-half-up disagree, or it probes nothing."""
    downscaled = [(h, w) for h, w in HALVES if max(h, w) > SIZE]
    upscaled = [(h, w) for h, w in HALVES if max(h, w) < SIZE]
    sides = [min(h, w) * (SIZE / max(h, w)) for h, w in HALVES]
    assert all(s % 1 == 0.5 for s in sides), f"not all shapes land on .5: {list(zip(HALVES, sides, strict=True))}"
    rounded_down = [s for s in sides if round(s) < s]  # half-up would round these up
    rounded_up = [s for s in sides if round(s) > s]
    assert downscaled and upscaled, f"expected up- and downscaled .5 shapes, found {HALVES}"
    assert len(rounded_down) >= 4 and len(rounded_up) >= 4, f"expected both rounding directions, found {sides}"


def noise_png(height: int, width: int) -> tuple[bytes, np.ndarray]:
    """A random RGB image as lossless PNG bytes, and its BGR pixels."""
    rng = np.random.default_rng(height * 100_003 + width)
    bgr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, buffer = cv2.imencode(".png", bgr)
    assert ok, f"cv2 could not encode a {height}x{width} PNG"
    return buffer.tobytes(), bgr


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return letterbox.cpu_pipeline(batch_size=BATCH)


def run(pipe: Pipeline, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """IMAGES [N, 3, 640, 640], GEOMETRY [N, 6] and each image's ORIGINAL row (padded to its run's largest).

    Runs in chunks no larger than the pipeline's batch; ORIGINAL's shape differs between chunks.
    """
    images, geometry, originals = [], [], []
    for start in range(0, len(encoded), BATCH):
        chunk = [np.frombuffer(e, np.uint8) for e in encoded[start : start + BATCH]]
        out_images, out_geometry, out_original = pipe.run(IMAGE=chunk)
        images.append(out_images.as_array())
        geometry.append(out_geometry.as_array())
        originals.extend(out_original.as_array())  # as_array: one uniform shape for the whole run
    return np.concatenate(images), np.concatenate(geometry), originals


Letterboxed = tuple[np.ndarray, np.ndarray, np.ndarray]  # IMAGES, GEOMETRY, ORIGINAL of one image


@pytest.fixture(scope="module")
def letterboxed(pipe: Pipeline) -> Callable[[int, int], Letterboxed]:
    """The DALI output for a noise image of a given shape, run once per shape."""

    @cache
    def one(height: int, width: int) -> Letterboxed:
        images, geometry, originals = run(pipe, [noise_png(height, width)[0]])
        return images[0], geometry[0], originals[0]

    return one


def assert_original_matches(original: np.ndarray, encoded: bytes, label: str) -> None:
    """ORIGINAL: cv2's decode as RGB, exactly, in its top-left corner; zeros to the right of and below it."""
    bgr = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, f"{label}: cv2 could not decode the reference"
    height, width = bgr.shape[:2]
    assert original.dtype == np.uint8 and original.ndim == 3 and original.shape[2] == 3, (
        f"{label}: ORIGINAL {original.dtype} {original.shape}"
    )
    assert original.shape[0] >= height and original.shape[1] >= width, f"{label}: ORIGINAL {original.shape} is cut"
    region = original[:height, :width]
    differ = np.count_nonzero(np.any(region != bgr[..., ::-1], axis=2))
    assert differ == 0, (
        f"{label}: {differ} pixels of ORIGINAL differ from cv2.imdecode (RGB); "
        f"max |diff| {np.abs(region.astype(int) - bgr[..., ::-1]).max()} levels (expected exact)"
    )
    assert not original[height:].any() and not original[:, width:].any(), f"{label}: ORIGINAL's padding is not zero"


def assert_matches_reference(image: np.ndarray, geometry: np.ndarray, encoded: bytes, label: str) -> None:
    """Geometry exactly as LetterBox.get_params; pixels within one level; the border exactly 114."""
    expected, expected_geometry = reference.letterbox(encoded)
    assert geometry.dtype == np.float32 and geometry.shape == (6,), (
        f"{label}: GEOMETRY {geometry.dtype} {geometry.shape}"
    )
    assert geometry.tolist() == expected_geometry, (
        f"{label}: GEOMETRY {geometry.tolist()} != LetterBox.get_params {expected_geometry} (exact)"
    )
    assert image.dtype == np.float32 and image.shape == (3, SIZE, SIZE), f"{label}: IMAGES {image.dtype} {image.shape}"
    assert image.min() >= 0 and image.max() <= 1, f"{label}: IMAGES outside [0, 1]"
    levels = image * 255
    assert np.abs(levels - np.round(levels)).max() <= 1e-4, f"{label}: IMAGES are not whole uint8 levels / 255"
    diff = np.abs(image - expected).max()
    assert diff <= LEVEL + EPS, f"{label}: max |DALI - LetterBox| = {diff * 255:.3f} levels > 1 level (1/255)"

    left, top, new_w, new_h = (int(v) for v in expected_geometry[:4])
    border = np.ones((SIZE, SIZE), bool)
    border[top : top + new_h, left : left + new_w] = False
    assert np.all(expected[:, border] == PAD), f"{label}: the reference border is not {spec.PAD_VALUE}/255"
    pad = np.abs(image[:, border] - PAD).max(initial=0.0)
    assert pad <= PAD_ULP, f"{label}: border is {pad:.3g} away from {spec.PAD_VALUE}/255 (tolerance 1 float32 ulp)"


@pytest.mark.parametrize(("height", "width"), SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_noise_png_matches_ultralytics(letterboxed: Callable[[int, int], Letterboxed], height: int, width: int) -> None:
    image, geometry, original = letterboxed(height, width)
    encoded, bgr = noise_png(height, width)
    label = f"{height}x{width}"
    assert_matches_reference(image, geometry, encoded, label)
    assert original.shape == (height, width, 3), f"{label}: ORIGINAL {original.shape} alone (nothing to pad to)"
    assert np.array_equal(original, bgr[..., ::-1]), f"{label}: ORIGINAL is not the image's RGB pixels (exact)"


def test_mixed_shapes_in_one_batch_match_single_runs(
    pipe: Pipeline, letterboxed: Callable[[int, int], Letterboxed]
) -> None:
    """A full batch of different shapes gives each sample exactly what it gets alone; ORIGINAL is padded
    to the batch's largest height and largest width (which may come from different images)."""
    shapes = AWKWARD[:BATCH]
    images, geometry, originals = run(pipe, [noise_png(h, w)[0] for h, w in shapes])
    assert images.shape == (BATCH, 3, SIZE, SIZE) and geometry.shape == (BATCH, 6)
    largest = (max(h for h, _ in shapes), max(w for _, w in shapes), 3)
    assert largest == (5000, 5000, 3), f"the batch should mix a tall and a wide image, got {largest}"
    for i, (h, w) in enumerate(shapes):
        alone_image, alone_geometry, alone_original = letterboxed(h, w)
        assert np.array_equal(geometry[i], alone_geometry), f"{h}x{w}: GEOMETRY differs in a mixed batch"
        assert np.array_equal(images[i], alone_image), f"{h}x{w}: IMAGES differ in a mixed batch (exact)"
        assert originals[i].shape == largest, f"{h}x{w}: ORIGINAL {originals[i].shape}, the batch's max is {largest}"
        assert np.array_equal(originals[i][:h, :w], alone_original), f"{h}x{w}: ORIGINAL differs in a mixed batch"
        assert not originals[i][h:].any() and not originals[i][:, w:].any(), f"{h}x{w}: ORIGINAL's padding is not 0"


def test_original_pads_to_the_batch_max(pipe: Pipeline) -> None:
    """The padded extent is the largest height and width of this run, not of an earlier one or of the pipeline."""
    for shapes in ([(30, 40)], [(30, 40), (50, 20)], [(7, 3), (2, 9), (5, 5)]):
        _, _, originals = run(pipe, [noise_png(h, w)[0] for h, w in shapes])
        largest = (max(h for h, _ in shapes), max(w for _, w in shapes), 3)
        assert [o.shape for o in originals] == [largest] * len(shapes), f"{shapes}: ORIGINAL shapes"


def test_photos_match_ultralytics(pipe: Pipeline) -> None:
    encoded = [reference.photo(name) for name in reference.PHOTOS]
    images, geometry, originals = run(pipe, encoded)
    for name, image, geo, original, data in zip(reference.PHOTOS, images, geometry, originals, encoded, strict=True):
        assert_matches_reference(image, geo, data, name)
        assert_original_matches(original, data, name)


def other_encodings() -> dict[str, bytes]:
    """Encodings Ultralytics' cv2 reading normalizes: EXIF rotation, grayscale, alpha."""
    rng = np.random.default_rng(1)
    rotated = Image.fromarray(rng.integers(0, 256, (100, 300, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    jpeg = io.BytesIO()
    rotated.save(jpeg, format="JPEG", exif=exif, quality=95)
    gray = cv2.imencode(".png", rng.integers(0, 256, (50, 70), dtype=np.uint8))[1].tobytes()
    rgba = cv2.imencode(".png", rng.integers(0, 256, (70, 50, 4), dtype=np.uint8))[1].tobytes()
    return {"exif-rotated-jpeg": jpeg.getvalue(), "gray-png": gray, "rgba-png": rgba}


def test_other_encodings_match_ultralytics(pipe: Pipeline) -> None:
    encoded = other_encodings()
    images, geometry, originals = run(pipe, list(encoded.values()))
    assert geometry[0, 4:].tolist() == [100, 300], "the EXIF-rotated JPEG must be letterboxed upright (100x300)"
    for (label, data), image, geo, original in zip(encoded.items(), images, geometry, originals, strict=True):
        assert_matches_reference(image, geo, data, label)
        assert_original_matches(original, data, label)


@pytest.mark.parametrize("tier", spec.TIER_NAMES)
def test_gpu_graph_serializes_without_a_gpu(tier: str) -> None:
    pipeline = letterbox.gpu_pipeline(tier, device_id=None)()
    serialized = pipeline.serialize()
    assert isinstance(serialized, bytes) and serialized, f"{tier}: serialize() returned {type(serialized)}"
    assert spec.IMAGE.name.encode() in serialized, f"{tier}: the serialized graph has no {spec.IMAGE.name} input"
    assert pipeline.max_batch_size == spec.tier(tier).gpu.max_batch_size, f"{tier}: batch size is not the spec's"
    assert b"jpeg_fancy_upsampling" in serialized, f"{tier}: the mixed decoder's chroma upsampling is not set"
    plain = letterbox.gpu_pipeline(tier, device_id=None, fancy_upsampling=False)().serialize()
    assert plain != serialized, f"{tier}: fancy_upsampling does not reach the decoder"


@pytest.mark.parametrize("tier", spec.TIER_NAMES)
def test_gpu_graph_builds_as_preprocess_feeds_it(tier: str) -> None:
    """preprocess (GPU instances) feeds the graph by name one batch at a time: prefetch depth 1."""
    pipeline = letterbox.gpu_pipeline(tier, device_id=None)(prefetch_queue_depth=1)
    assert pipeline.serialize(), f"{tier}: the graph preprocess runs does not build"


# --- The cpu variant's letterbox (OpenCV): exactly Ultralytics' ----------------------------------------


def assert_exactly_ultralytics(image: np.ndarray, geometry: np.ndarray, original: np.ndarray, encoded: bytes,
                               label: str) -> None:  # fmt: skip
    expected, expected_geometry = reference.letterbox(encoded)
    assert geometry.dtype == np.float32 and geometry.tolist() == expected_geometry, (
        f"{label}: GEOMETRY {geometry.tolist()} != LetterBox.get_params {expected_geometry} (exact)"
    )
    assert image.dtype == np.float32 and image.shape == (3, SIZE, SIZE), f"{label}: IMAGES {image.dtype} {image.shape}"
    differ = np.count_nonzero(image != expected)
    worst = np.abs(image - expected).max() * 255
    assert differ == 0, f"{label}: {differ} values differ from Ultralytics' (max {worst:.3f} levels; expected exact)"
    assert_original_matches(original, encoded, label)


@pytest.mark.parametrize(("height", "width"), SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_opencv_noise_png_is_ultralytics(height: int, width: int) -> None:
    encoded, _ = noise_png(height, width)
    images, geometry, original = host.letterbox([np.frombuffer(encoded, np.uint8)])
    assert images.shape[0] == geometry.shape[0] == original.shape[0] == 1
    assert original.shape == (1, height, width, 3), f"{height}x{width}: ORIGINAL {original.shape} alone"
    assert_exactly_ultralytics(images[0], geometry[0], original[0], encoded, f"{height}x{width}")


def test_opencv_photos_and_other_encodings_are_ultralytics() -> None:
    encoded = {name: reference.photo(name) for name in reference.PHOTOS} | other_encodings()
    for label, data in encoded.items():
        images, geometry, original = host.letterbox([np.frombuffer(data, np.uint8)])
        assert_exactly_ultralytics(images[0], geometry[0], original[0], data, label)


def test_opencv_request_of_mixed_shapes() -> None:
    """Each image of a request gets what it gets alone; ORIGINAL is zero-padded to the request's largest
    height and width; rows zero-padded to the longest encoding (as a multi-image request's are) decode alike."""
    shapes = AWKWARD[:BATCH]
    encoded = [noise_png(h, w)[0] for h, w in shapes]
    rows = np.zeros((len(encoded), max(map(len, encoded))), np.uint8)
    for row, data in zip(rows, encoded, strict=True):
        row[: len(data)] = np.frombuffer(data, np.uint8)
    images, geometry, original = host.letterbox(list(rows))
    largest = (max(h for h, _ in shapes), max(w for _, w in shapes))
    assert original.shape == (len(shapes), *largest, 3), f"ORIGINAL {original.shape}, the request's max is {largest}"
    for k, ((h, w), data) in enumerate(zip(shapes, encoded, strict=True)):
        alone = host.letterbox([np.frombuffer(data, np.uint8)])
        assert np.array_equal(images[k], alone[0][0]) and np.array_equal(geometry[k], alone[1][0]), f"{h}x{w}"
        assert np.array_equal(original[k, :h, :w], alone[2][0]), f"{h}x{w}: ORIGINAL differs in a mixed request"
        assert not original[k, h:].any() and not original[k, :, w:].any(), f"{h}x{w}: ORIGINAL's padding is not 0"


def test_opencv_names_the_image_that_does_not_decode() -> None:
    bus = reference.photo("bus.jpg")
    good, truncated = np.frombuffer(bus, np.uint8), np.frombuffer(bus[: len(bus) // 2], np.uint8)
    with pytest.raises(host.Undecodable) as failed:
        host.letterbox([good, truncated, good])
    assert failed.value.index == 1


def test_opencv_and_dali_graph_agree(pipe: Pipeline) -> None:
    """The two letterboxes of the two variants: the same geometry, pixels within one level."""
    encoded = [reference.photo(name) for name in reference.PHOTOS] + list(other_encodings().values())
    dali_images, dali_geometry, _ = run(pipe, encoded)
    for k, data in enumerate(encoded):
        images, geometry, _ = host.letterbox([np.frombuffer(data, np.uint8)])
        assert np.array_equal(geometry[0], dali_geometry[k]), f"image {k}: GEOMETRY differs between the variants"
        assert np.abs(images[0] - dali_images[k]).max() <= LEVEL + EPS, f"image {k}: more than one level apart"

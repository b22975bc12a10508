"""`pipelines.detections.detect` against Ultralytics' non_max_suppression + scale_boxes.

Thresholds reach the served model as FP32 tensors, so Ultralytics is called with
the same float32 values (float(np.float32(0.7)), not 0.7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision  # noqa: F401  (Ultralytics uses torchvision's NMS only when it is imported, as detect does)
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes

from pipelines import detections, render, spec
from tests.unit import reference

SIZE = spec.IMAGE_SIZE
BOX_ATOL = 1e-3  # pixels
SCORE_ATOL = 1e-6


@dataclass(frozen=True)
class Reference:
    boxes: np.ndarray  # [K, 4] original pixels
    scores: np.ndarray  # [K]
    classes: np.ndarray  # [K]


def f32(x: float) -> float:
    """The threshold as an FP32 tensor carries it."""
    return float(np.float32(x))


def ultralytics(
    prediction: torch.Tensor,
    shape: tuple[int, int],
    conf: float,
    iou: float,
    classes: list[int] | None,
    agnostic: bool,
    max_det: int,
) -> Reference:
    """One image [4 + C, A] through Ultralytics' NMS and scale_boxes to an original (height, width)."""
    (out,) = non_max_suppression(
        prediction[None].clone(), conf, iou, classes=classes, agnostic=agnostic, max_det=max_det
    )
    boxes = scale_boxes((SIZE, SIZE), out[:, :4].clone(), shape)
    return Reference(boxes.numpy(), out[:, 4].numpy(), out[:, 5].numpy().astype(np.int32))


def run_detect(
    predictions: torch.Tensor,
    shapes: list[tuple[int, int]],
    conf: list[float],
    iou: list[float],
    person_classes: list[int],
    agnostic: bool = spec.AGNOSTIC_NMS,
    max_det: int = spec.MAX_DET,
) -> detections.Detections:
    geometry = torch.tensor([reference.geometry(h, w) for h, w in shapes], dtype=torch.float32)
    return detections.detect(
        predictions,
        geometry,
        torch.tensor(conf, dtype=torch.float32),
        torch.tensor(iou, dtype=torch.float32),
        torch.tensor(person_classes),
        agnostic=agnostic,
        max_det=max_det,
    )


def assert_image_matches(det: detections.Detections, b: int, ref: Reference, label: str) -> None:
    """Same count, classes and order; boxes within BOX_ATOL px, scores within SCORE_ATOL; zeros after NUM."""
    max_det = det.scores.shape[1]
    assert det.num.dtype == torch.int32 and det.num.shape[1:] == (1,), f"{label}: NUM {det.num.dtype} {det.num.shape}"
    assert det.boxes.dtype == torch.float32 and det.boxes.shape[1:] == (max_det, 4), f"{label}: BOXES {det.boxes.shape}"
    assert det.scores.dtype == torch.float32, f"{label}: SCORES {det.scores.dtype}"
    assert det.classes.dtype == torch.int32 and det.classes.shape[1:] == (max_det,), f"{label}: CLASSES"
    n = int(det.num[b, 0])
    assert n == len(ref.scores), f"{label}: {n} detections, Ultralytics {len(ref.scores)}"
    np.testing.assert_array_equal(det.classes[b, :n].numpy(), ref.classes, err_msg=f"{label}: classes")
    np.testing.assert_allclose(
        det.scores[b, :n].numpy(), ref.scores, rtol=0, atol=SCORE_ATOL, err_msg=f"{label}: scores (atol 1e-6)"
    )
    np.testing.assert_allclose(
        det.boxes[b, :n].numpy(), ref.boxes, rtol=0, atol=BOX_ATOL, err_msg=f"{label}: boxes (atol 1e-3 px)"
    )
    assert not det.boxes[b, n:].any(), f"{label}: BOXES not zero after NUM={n}"
    assert not det.scores[b, n:].any(), f"{label}: SCORES not zero after NUM={n}"
    assert not det.classes[b, n:].any(), f"{label}: CLASSES not zero after NUM={n}"


def random_predictions(
    seed: int, batch: int, num_classes: int, anchors: int, clusters: int = 12, tie_step: float = 1 / 16
) -> torch.Tensor:
    """Raw heads [B, 4 + C, A]: boxes crowded around a few centres, some past the letterbox edges.

    Scores are rounded to multiples of `tie_step`, so many candidates tie, and some
    land exactly on the thresholds used below (0.25, 0.5, 0.75 are exact in float32).
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-40, SIZE + 40, (batch, clusters, 2))
    pick = rng.integers(0, clusters, (batch, anchors))
    xy = np.take_along_axis(centres, pick[..., None], axis=1) + rng.normal(0, 12, (batch, anchors, 2))
    wh = rng.uniform(4, 220, (batch, anchors, 2))
    scores = np.round(rng.uniform(0, 1, (batch, anchors, num_classes)) ** 2 / tie_step) * tie_step
    rows = np.concatenate([xy, wh, scores], axis=2).astype(np.float32)
    return torch.from_numpy(rows).transpose(1, 2).contiguous()


SHAPES = [(1080, 1920), (480, 640), (5000, 1), (333, 517), (641, 639), (7, 3), (1, 1), (2000, 3000)]


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("num_classes", [1, 2, 80])
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("subset", [False, True], ids=["all-classes", "class-0"])
def test_random_candidates_match_ultralytics(batch: int, num_classes: int, agnostic: bool, subset: bool) -> None:
    predictions = random_predictions(seed=batch * 1000 + num_classes, batch=batch, num_classes=num_classes, anchors=600)
    shapes = SHAPES[:batch]
    persons = [0] if subset else list(range(num_classes))
    conf, iou = spec.DEFAULT_CONF_THRESHOLD, spec.DEFAULT_IOU_THRESHOLD
    det = run_detect(predictions, shapes, [conf] * batch, [iou] * batch, persons, agnostic=agnostic)
    total = 0
    for b in range(batch):
        ref = ultralytics(predictions[b], shapes[b], f32(conf), f32(iou), persons, agnostic, spec.MAX_DET)
        assert_image_matches(det, b, ref, f"image {b} of {batch}, C={num_classes}, agnostic={agnostic}")
        total += len(ref.scores)
    assert total > 0, "the case produced no detections, so it compares nothing"


def test_all_classes_equals_no_class_filter() -> None:
    """person_classes listing every class behaves as Ultralytics' classes=None."""
    predictions = random_predictions(seed=7, batch=2, num_classes=3, anchors=500)
    det = run_detect(predictions, SHAPES[:2], [0.25] * 2, [0.5] * 2, [0, 1, 2])
    for b in range(2):
        ref = ultralytics(predictions[b], SHAPES[b], 0.25, 0.5, None, False, spec.MAX_DET)
        assert_image_matches(det, b, ref, f"image {b}, classes=None")


def test_per_image_thresholds() -> None:
    """Each image of one batch is filtered and suppressed with its own CONF/IOU."""
    conf = [0.1, 0.25, 0.5, 0.75, 0.3, 0.05]
    iou = [0.3, 0.7, 0.5, 0.9, 0.45, 0.1]
    batch = len(conf)
    predictions = random_predictions(seed=11, batch=batch, num_classes=2, anchors=800)
    shapes = [*SHAPES, *SHAPES][:batch]
    det = run_detect(predictions, shapes, conf, iou, [0, 1])
    counts = []
    for b in range(batch):
        ref = ultralytics(predictions[b], shapes[b], f32(conf[b]), f32(iou[b]), [0, 1], False, spec.MAX_DET)
        assert_image_matches(det, b, ref, f"image {b}: conf={conf[b]}, iou={iou[b]}")
        counts.append(len(ref.scores))
    assert len(set(counts)) > 2, f"the thresholds should give different counts, got {counts}"


def test_scores_equal_to_conf_are_dropped() -> None:
    """Ultralytics keeps score > conf, strictly; scores sit exactly on 0.5 here."""
    predictions = random_predictions(seed=3, batch=1, num_classes=2, anchors=400, tie_step=1 / 4)
    assert (predictions[0, 4:].amax(0) == 0.5).any(), "no score sits exactly on the threshold"
    det = run_detect(predictions, SHAPES[:1], [0.5], [0.7], [0, 1])
    assert (det.scores[0, : int(det.num[0, 0])] > 0.5).all(), "a score equal to CONF_THRESHOLD was kept"
    assert_image_matches(det, 0, ultralytics(predictions[0], SHAPES[0], 0.5, f32(0.7), [0, 1], False, 300), "conf=0.5")


def test_empty_results() -> None:
    """Nothing above conf, or no person class: NUM 0 and all-zero outputs, for one image or all."""
    predictions = random_predictions(seed=5, batch=3, num_classes=2, anchors=300)
    predictions[1, 4:] = torch.clamp(predictions[1, 4:], max=0.2)  # image 1: nothing above 0.25
    det = run_detect(predictions, SHAPES[:3], [0.25, 0.25, 0.25], [0.7] * 3, [0, 1])
    assert det.num[:, 0].tolist()[1] == 0 and det.num[0, 0] > 0 and det.num[2, 0] > 0, det.num[:, 0].tolist()
    for b in range(3):
        ref = ultralytics(predictions[b], SHAPES[b], 0.25, f32(0.7), [0, 1], False, spec.MAX_DET)
        assert_image_matches(det, b, ref, f"image {b}, one empty")

    top = float(predictions[:, 4:].max())
    det = run_detect(predictions, SHAPES[:3], [top] * 3, [0.7] * 3, [0, 1])
    assert det.num.tolist() == [[0], [0], [0]], f"conf above every score gave {det.num.tolist()}"
    assert not (det.boxes.any() or det.scores.any() or det.classes.any()), "outputs are not all zero"

    only_one_class = random_predictions(seed=6, batch=2, num_classes=2, anchors=300)
    only_one_class[:, 4] = 0  # class 0 never wins
    det = run_detect(only_one_class, SHAPES[:2], [0.25] * 2, [0.7] * 2, [0])
    assert det.num.tolist() == [[0], [0]], f"no person class present, got {det.num.tolist()}"


@pytest.mark.parametrize("agnostic", [False, True])
def test_more_candidates_than_max_det(agnostic: bool) -> None:
    max_det = 5
    predictions = random_predictions(seed=9, batch=2, num_classes=3, anchors=600, clusters=60)
    det = run_detect(predictions, SHAPES[:2], [0.25] * 2, [0.7] * 2, [0, 1, 2], agnostic=agnostic, max_det=max_det)
    assert det.boxes.shape == (2, max_det, 4), f"BOXES shape {tuple(det.boxes.shape)} for max_det={max_det}"
    assert det.num[:, 0].tolist() == [max_det, max_det], f"expected {max_det} per image, got {det.num.tolist()}"
    for b in range(2):
        ref = ultralytics(predictions[b], SHAPES[b], 0.25, f32(0.7), [0, 1, 2], agnostic, max_det)
        assert_image_matches(det, b, ref, f"image {b}, max_det={max_det}")


def test_more_candidates_than_max_nms() -> None:
    """Past MAX_NMS candidates both keep the best-scoring MAX_NMS; the weak isolated boxes are lost."""
    rng = np.random.default_rng(13)
    crowded, isolated = spec.MAX_NMS, 400
    anchors = crowded + isolated
    rows = np.zeros((anchors, 5), np.float32)
    rows[:crowded, :2] = rng.uniform(300, 340, (crowded, 2))  # a crowd the top box suppresses
    rows[:crowded, 2:4] = 200
    rows[:crowded, 4] = rng.uniform(0.5, 0.9, crowded)
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2)
    rows[crowded:, :2] = 10 + grid * 31  # small, disjoint boxes
    rows[crowded:, 2:4] = 8
    rows[crowded:, 4] = 0.3
    predictions = torch.from_numpy(rows.T.copy())[None]
    det = run_detect(predictions, [(720, 1280)], [0.25], [0.7], [0])
    ref = ultralytics(predictions[0], (720, 1280), 0.25, f32(0.7), [0], False, spec.MAX_DET)
    assert_image_matches(det, 0, ref, "MAX_NMS cut")
    assert (ref.scores < 0.5).sum() < isolated, "the cut at MAX_NMS did not drop any isolated box; the test is vacuous"


@pytest.fixture(scope="module")
def photo_predictions() -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The exported detector's raw head on bus.jpg and zidane.jpg, letterboxed by Ultralytics."""
    path = render.REPOSITORY / spec.tier(spec.DEFAULT_TIER).model(spec.Step.DETECTOR) / "1" / "model.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.CPU_THREADS
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images, shapes = [], []
    for name in reference.PHOTOS:
        image, geometry = reference.letterbox(reference.photo(name))
        images.append(image)
        shapes.append((int(geometry[5]), int(geometry[4])))
    (out,) = session.run([spec.PREDICTIONS.name], {spec.IMAGES.name: np.stack(images)})
    return torch.from_numpy(out), shapes


@pytest.mark.parametrize(("conf", "persons"), [(0.25, [0, 1]), (0.01, [0, 1]), (0.25, [0]), (0.05, [1])])
def test_real_detector_output_matches_ultralytics(
    photo_predictions: tuple[torch.Tensor, list[tuple[int, int]]], conf: float, persons: list[int]
) -> None:
    predictions, shapes = photo_predictions
    iou = spec.DEFAULT_IOU_THRESHOLD
    det = run_detect(predictions, shapes, [conf] * 2, [iou] * 2, persons)
    for b, name in enumerate(reference.PHOTOS):
        ref = ultralytics(predictions[b], shapes[b], f32(conf), f32(iou), persons, False, spec.MAX_DET)
        assert_image_matches(det, b, ref, f"{name}, conf={conf}, classes={persons}")
    if persons == [0, 1] and conf == 0.25:
        counts = det.num[:, 0].tolist()
        assert counts[0] >= 3 and counts[1] >= 2, f"bus.jpg and zidane.jpg show several people, got {counts}"


def test_unletterbox_by_hand() -> None:
    """1280x720 -> r 0.5, 640x360 at top 140; 100x200 -> r 3.2, 320x640 at left 160."""
    geometry = torch.tensor([[0, 140, 640, 360, 1280, 720], [160, 0, 320, 640, 100, 200]], dtype=torch.float32)
    boxes = torch.tensor(
        [
            [[100, 150, 300, 400], [-10, 100, 700, 520]],  # the second spills over every edge: clipped
            [[192, 64, 480, 640], [100, 0, 150, 10]],  # the second lies in the left border
        ],
        dtype=torch.float32,
    )
    expected = torch.tensor(
        [
            [[200, 20, 600, 520], [0, 0, 1280, 720]],
            [[10, 20, 100, 200], [0, 0, 0, 3.125]],
        ]
    )
    got = detections.unletterbox(boxes, geometry)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4, msg=lambda m: f"unletterbox (atol 1e-4 px): {m}")


@pytest.mark.parametrize(("height", "width"), [(7, 3), (3, 7), (333, 517), (1, 5000), (1080, 1920)])
def test_unletterbox_maps_content_to_image_corners(height: int, width: int) -> None:
    """The letterboxed content rectangle maps onto the whole original image, per-axis gains included."""
    left, top, new_w, new_h, w, h = reference.geometry(height, width)
    content = torch.tensor([[[left, top, left + new_w, top + new_h]]], dtype=torch.float32)
    got = detections.unletterbox(content, torch.tensor([[left, top, new_w, new_h, w, h]]))
    torch.testing.assert_close(got, torch.tensor([[[0.0, 0.0, w, h]]]), rtol=0, atol=1e-4)

"""`pipelines.detections.detect` against Ultralytics' non_max_suppression + scale_boxes.

Thresholds reach the served model as FP32 tensors, so Ultralytics is called with
the same float32 values (float(np.float32(0.7)), not 0.7).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision  # Ultralytics uses torchvision's NMS only when it is imported, as detect does
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes, xywh2xyxy

from pipelines import detections, paths, spec
from tests.unit import reference

SIZE = spec.IMAGE_SIZE
BOX_ATOL = 1e-3  # pixels
SCORE_ATOL = 1e-6
PATHS = {"default": None, "batched": True, "per-image": False}  # detect(batched=...) for each NMS path


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
    """detect() with its default, batched and per-image NMS: all three must agree bit for bit."""
    geometry = torch.tensor([reference.geometry(h, w) for h, w in shapes], dtype=torch.float32)
    results = [
        detections.detect(
            predictions,
            geometry,
            torch.tensor(conf, dtype=torch.float32),
            torch.tensor(iou, dtype=torch.float32),
            torch.tensor(person_classes),
            agnostic=agnostic,
            max_det=max_det,
            batched=batched,
        )
        for batched in PATHS.values()
    ]
    for path, result in zip(PATHS, results, strict=True):
        for field in dataclasses.fields(detections.Detections):
            got, expected = getattr(result, field.name), getattr(results[0], field.name)
            assert got.dtype == expected.dtype and torch.equal(got, expected), f"{field.name}: {path} NMS != default"
    return results[0]


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


def assert_batch_matches(
    det: detections.Detections,
    predictions: torch.Tensor,
    shapes: list[tuple[int, int]],
    conf: list[float],
    iou: list[float],
    persons: list[int],
    agnostic: bool = spec.AGNOSTIC_NMS,
    max_det: int = spec.MAX_DET,
) -> list[int]:
    """Each image of the batch equals Ultralytics run on that image alone with its own thresholds; the counts."""
    counts = []
    for b in range(len(shapes)):
        ref = ultralytics(predictions[b], shapes[b], f32(conf[b]), f32(iou[b]), persons, agnostic, max_det)
        assert_image_matches(det, b, ref, f"image {b}: conf={conf[b]}, iou={iou[b]}, agnostic={agnostic}")
        counts.append(len(ref.scores))
    return counts


@pytest.mark.parametrize("agnostic", [False, True])
def test_mixed_thresholds_match_each_image_alone(agnostic: bool) -> None:
    """Twelve images in one batch, thresholds repeated and at their extremes (CONF 0 and 1, IOU 0 and 1)."""
    conf = [0.25, 0.0, 0.5, 0.25, 1.0, 0.1, 0.25, 0.75, 0.05, 0.25, 0.3, 0.0]
    iou = [0.7, 0.5, 0.7, 0.0, 0.7, 1.0, 0.45, 0.7, 0.3, 0.7, 0.9, 0.7]
    predictions = random_predictions(seed=17, batch=len(conf), num_classes=3, anchors=500)
    shapes = [*SHAPES, *SHAPES][: len(conf)]
    det = run_detect(predictions, shapes, conf, iou, [0, 1], agnostic=agnostic)
    counts = assert_batch_matches(det, predictions, shapes, conf, iou, [0, 1], agnostic)
    assert counts[4] == 0 and len(set(counts)) > 6, f"expected varied counts and none at CONF 1, got {counts}"


def test_images_without_candidates_inside_a_batch() -> None:
    """Empty images first, inside and last, each for another reason; the others are unaffected."""
    predictions = random_predictions(seed=19, batch=7, num_classes=2, anchors=400)
    predictions[0, 4:] = predictions[0, 4:].clamp(max=0.25)  # no score above CONF 0.25
    predictions[3, 4] = 0  # the person class never wins
    predictions[6, 4:] = predictions[6, 4:].clamp(max=0.2)
    conf = [0.25, 0.25, 0.25, 0.25, 1.0, 0.25, 0.25]  # image 4: CONF 1
    shapes = SHAPES[:7]
    det = run_detect(predictions, shapes, conf, [0.7] * 7, [0])
    counts = assert_batch_matches(det, predictions, shapes, conf, [0.7] * 7, [0])
    assert [c > 0 for c in counts] == [False, True, True, False, False, True, False], f"counts {counts}"


def test_max_nms_cut_inside_a_batch() -> None:
    """Image 0 has more than MAX_NMS candidates and the cut falls among equal scores; its neighbours do not.

    A crowd one box suppresses plus 400 disjoint boxes all scored 0.3: the cut keeps 100 of
    those, and which 100 (and their order) is whatever Ultralytics' unstable argsort gives.
    """
    rng = np.random.default_rng(29)
    crowd, isolated = spec.MAX_NMS - 100, 400
    anchors = crowd + isolated
    rows = np.zeros((3, 5, anchors), np.float32)
    rows[0, :2, :crowd] = rng.uniform(300, 340, (2, crowd))
    rows[0, 2:4, :crowd] = 200
    rows[0, 4, :crowd] = rng.uniform(0.5, 0.9, crowd)
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2)
    rows[0, :2, crowd:] = (10 + grid * 31).T
    rows[0, 2:4, crowd:] = 8
    rows[0, 4, crowd:] = 0.3
    rows[1, :, :600] = random_predictions(seed=31, batch=1, num_classes=1, anchors=600)[0].numpy()
    predictions = torch.from_numpy(rows)
    shapes = SHAPES[:3]
    det = run_detect(predictions, shapes, [0.25] * 3, [0.7] * 3, [0])
    counts = assert_batch_matches(det, predictions, shapes, [0.25] * 3, [0.7] * 3, [0])
    tied = int((det.scores[0] == np.float32(0.3)).sum())
    assert tied == spec.MAX_NMS - crowd, f"{tied} boxes scored 0.3 survive; the cut should keep exactly 100"
    assert counts[1] > 0 and counts[2] == 0, f"counts {counts}"


def test_more_survivors_than_max_det_inside_a_batch() -> None:
    """400 and 350 disjoint boxes (scores tie in eighths) next to an image with 20: MAX_DET keeps the best 300."""
    rng = np.random.default_rng(37)
    rows = np.zeros((3, 5, 1000), np.float32)
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2)
    for b, n in enumerate((400, 350, 20)):
        rows[b, :2, :n] = (16 + grid[:n] * 32).T
        rows[b, 2:4, :n] = 20
        rows[b, 4, :n] = np.round(rng.uniform(0.3, 1.0, n) * 8) / 8
    rows[1, :, 400:600] = rows[1, :, :200]  # duplicates of the first 200: suppressed (IoU 1)
    predictions = torch.from_numpy(rows)
    shapes = SHAPES[:3]
    det = run_detect(predictions, shapes, [0.25] * 3, [0.7] * 3, [0])
    counts = assert_batch_matches(det, predictions, shapes, [0.25] * 3, [0.7] * 3, [0])
    assert counts == [spec.MAX_DET, spec.MAX_DET, 20], f"counts {counts}"


def test_identical_images_tie_across_the_batch() -> None:
    """One head four times: scores tie within and across images; equal inputs give equal outputs."""
    predictions = random_predictions(seed=23, batch=1, num_classes=2, anchors=600, tie_step=1 / 8).repeat(4, 1, 1)
    conf, iou = [0.25, 0.25, 0.5, 0.25], [0.7, 0.7, 0.7, 0.3]
    shapes = [SHAPES[1]] * 4
    det = run_detect(predictions, shapes, conf, iou, [0, 1])
    counts = assert_batch_matches(det, predictions, shapes, conf, iou, [0, 1])
    assert torch.equal(det.boxes[0], det.boxes[1]) and torch.equal(det.scores[0], det.scores[1])
    assert len(set(counts)) == 3, f"other thresholds should give other counts, got {counts}"


def pairs_on_the_threshold(iou: float, seed: int, cells: int = 36) -> tuple[torch.Tensor, int, int, int]:
    """A head [4 + 1, 2 * cells]: per grid cell a box and a weaker box inside it whose float32 IoU,
    as Ultralytics' NMS computes it (xywh2xyxy, then torchvision's formula), is exactly `iou` (kept)
    or the next float32 above it (suppressed); where neither is found, the nearest. Also returns how
    many pairs are on, one above, and decided otherwise by the same IoU in float64."""
    threshold = np.float32(iou)
    above = np.nextafter(threshold, np.float32(1))
    rng = np.random.default_rng(seed)
    rows = np.zeros((5, 2 * cells), np.float32)
    found = {threshold: 0, above: 0}
    differ = 0
    for cell in range(cells):
        want = threshold if cell % 2 else above
        for _ in range(16):
            cx, cy = (40 + 100 * np.array(divmod(cell, 6)) + rng.uniform(-5, 5, 2)).astype(np.float32)
            wa, h = rng.uniform(30, 60, 2).astype(np.float32)
            wb = np.float32(threshold * wa) + np.arange(-40, 41, dtype=np.float32) * np.spacing(np.float32(wa))
            pair = np.array([[cx, cy, wa, h]] + [[cx, cy, w, h] for w in wb], np.float32)
            xyxy = xywh2xyxy(torch.from_numpy(pair))
            ovr = torchvision.ops.box_iou(xyxy[:1], xyxy[1:])[0].numpy()
            hits = np.flatnonzero(ovr == want)
            if hits.size:
                break
        pick = hits[0] if hits.size else int(np.argmin(np.abs(ovr - threshold)))
        found[ovr[pick]] = found.get(ovr[pick], 0) + 1
        exact = torchvision.ops.box_iou(xyxy[:1].double(), xyxy[1 + pick : 2 + pick].double())[0, 0]
        differ += int((float(ovr[pick]) > threshold) != bool(exact > float(threshold)))
        rows[:4, 2 * cell] = pair[0]
        rows[:4, 2 * cell + 1] = pair[1 + pick]
        rows[4, 2 * cell : 2 * cell + 2] = (0.9, 0.8)
    return torch.from_numpy(rows), found[threshold], found[above], differ


def test_iou_exactly_on_the_threshold() -> None:
    """Pairs whose IoU is the threshold or one float32 step above it, three thresholds in one batch.

    Only float32 arithmetic identical to torchvision's kernel decides these as Ultralytics does:
    the same IoUs in float64 (or of boxes shifted to separate images) fall on the other side.
    """
    iou = [0.7, 0.45, 0.5]
    heads = [pairs_on_the_threshold(t, seed=41 + i) for i, t in enumerate(iou)]
    predictions = torch.stack([head for head, *_ in heads])
    shapes = [(640, 640)] * 3
    det = run_detect(predictions, shapes, [0.25] * 3, iou, [0])
    counts = assert_batch_matches(det, predictions, shapes, [0.25] * 3, iou, [0])
    on, above, differ = (sum(h[i] for h in heads) for i in (1, 2, 3))
    assert on >= 10 and above >= 10, f"only {on} pairs on and {above} one step above the thresholds"
    assert differ > 0, "float64 decides every pair as float32 does: the case cannot tell them apart"
    assert 36 < min(counts) and max(counts) < 72, f"some pairs should survive and some not, got {counts}"


@pytest.fixture(scope="module")
def photo_predictions() -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The exported detector's raw head on bus.jpg and zidane.jpg, letterboxed by Ultralytics."""
    path = paths.REPOSITORY / spec.tier(spec.DEFAULT_TIER).model(spec.Step.DETECTOR) / "1" / "model.onnx"
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


@pytest.mark.gpu
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("path", list(PATHS))
def test_cuda_matches_cpu(path: str, photo_predictions: tuple[torch.Tensor, list[tuple[int, int]]]) -> None:
    """The GPU variant's tensors give bit for bit the host's results (which equal Ultralytics' above)."""
    photos, photo_shapes = photo_predictions
    cases = [
        (random_predictions(seed=43, batch=8, num_classes=2, anchors=2000), SHAPES, [0.25, 0.1, 0.5, 0.25] * 2),
        (photos, photo_shapes, [0.01, 0.25]),
    ]
    for predictions, shapes, conf in cases:
        batch = len(shapes)
        iou = [0.7, 0.45] * (batch // 2)
        geometry = torch.tensor([reference.geometry(h, w) for h, w in shapes], dtype=torch.float32)
        inputs = (predictions, geometry, torch.tensor(conf), torch.tensor(iou), torch.tensor([0, 1]))
        host = detections.detect(*inputs, batched=PATHS[path])
        cuda = detections.detect(*(t.cuda() for t in inputs), batched=PATHS[path])
        for field in dataclasses.fields(detections.Detections):
            got, expected = getattr(cuda, field.name).cpu(), getattr(host, field.name)
            assert torch.equal(got, expected), f"{field.name}: CUDA != CPU ({path} NMS, batch {batch})"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("agnostic", [False, True])
def test_detecting_low_then_keeping_above_equals_detecting_at_the_threshold(seed: int, agnostic: bool) -> None:
    """The track tier detects once at spec.TRACK_DETECTION_CONF and answers above the request's threshold:
    exactly what detect() at that threshold gives, and CANDIDATES holds every low box after them."""
    predictions = random_predictions(seed, 3, 2, 400)
    shapes = SHAPES[:3]
    conf = [0.25, 0.5, 0.125]
    low = run_detect(predictions, shapes, [spec.TRACK_DETECTION_CONF] * 3, [0.7] * 3, [0, 1], agnostic)
    direct = run_detect(predictions, shapes, conf, [0.7] * 3, [0, 1], agnostic)
    kept = detections.above(low, torch.tensor(conf))
    for field in dataclasses.fields(detections.Detections):
        assert torch.equal(getattr(kept, field.name), getattr(direct, field.name)), field.name
    assert (low.num > kept.num).any(), "the low threshold kept nothing more: the case proves nothing"
    rows = detections.candidates(low)
    assert rows.shape == (3, spec.MAX_DET, 5)
    for b, n in enumerate(low.num[:, 0].tolist()):
        assert torch.equal(rows[b, :n, 4], low.scores[b, :n]) and not rows[b, n:].any()

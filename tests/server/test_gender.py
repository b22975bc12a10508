"""Gender per person, classified in the server by BLS, against an in-process reference."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from pipelines import faces, gender, manifest, spec
from pipelines.detections import Detections
from pipelines.paths import ROOT
from tests.server.conftest import SAMPLES
from tools import render
from tools.client.people import PeopleClient
from tools.server.endpoints import Endpoints
from tools.server.triton import Server, ServerOptions

REPOSITORY = ROOT / "model_repository"
SCORE_TOLERANCE = 1e-4  # the same float32 code and models in the server and here
FACE_TOLERANCE = 0.01  # pixels


def _gender_manifest(tier: str) -> manifest.Classifier:
    return manifest.read(REPOSITORY / spec.tier(tier).model(spec.Step.GENDER) / "1", manifest.Classifier)


def _face_manifest(tier: str) -> manifest.FaceDetector:
    return manifest.read(REPOSITORY / spec.tier(tier).model(spec.Step.FACE) / "1", manifest.FaceDetector)


def _session(tier: str, step: spec.Step) -> ort.InferenceSession:
    return ort.InferenceSession(str(REPOSITORY / spec.tier(tier).model(step) / "1" / "model.onnx"))


def reference_gender(
    image: bytes, boxes: np.ndarray, tier: str, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GENDER, GENDER_SCORES and FACES for served boxes, computed in this process: OpenCV decodes, the
    project's face and crop code (pipelines.gender, unit-tested against independent references) runs on
    host tensors, and the tier's face detector and classifier ONNX run on ONNX Runtime. Equality with the
    server checks the wiring: BLS calls, chunks, devices, what goes where."""
    record = _gender_manifest(tier)
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    n = len(boxes)
    padded = torch.zeros((1, spec.MAX_DET, 4))
    padded[0, :n] = torch.tensor(boxes)
    found = Detections(torch.tensor([[n]], dtype=torch.int32), padded, torch.zeros((1, spec.MAX_DET)),
                       torch.zeros((1, spec.MAX_DET), dtype=torch.int32))  # fmt: skip
    detector = _session(tier, spec.Step.FACE)

    def run(regions: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(detector.run(None, {spec.FACE_REGIONS.name: regions.numpy()})[0])

    face = gender.FaceModel(_face_manifest(tier), run)
    geometry = torch.tensor([[0, 0, 0, 0, w, h]], dtype=torch.float32)
    chips = gender.gather(found, [torch.from_numpy(rgb)], geometry, record.preprocessing, face)
    probabilities = torch.zeros((0, len(record.labels)))
    if chips.pixels.shape[0]:
        (out,) = _session(tier, spec.Step.GENDER).run(None, {spec.CROPS.name: chips.pixels.numpy()})
        probabilities = torch.from_numpy(out)
    labels, scores = gender.labels(probabilities, torch.tensor(record.gender_values), chips,
                                   torch.tensor([threshold]), 1)  # fmt: skip
    return labels[0, :n].numpy(), scores[0, :n].numpy(), gender.face_boxes(chips, 1)[0, :n].numpy()


@pytest.mark.parametrize("tier", spec.IMAGE_TIER_NAMES)
@pytest.mark.parametrize("image", sorted(SAMPLES))
def test_gender_equals_in_process_reference(grpc_client: PeopleClient, tier: str, image: str) -> None:
    data = SAMPLES[image].read_bytes()
    raw = grpc_client.infer_raw(tier, grpc_client.inputs([data]))
    n = int(raw[spec.NUM_DETECTIONS.name][0, 0])
    gender, scores = raw[spec.GENDER.name][0], raw[spec.GENDER_SCORES.name][0]
    assert n > 0
    expected_gender, expected_scores, expected_faces = reference_gender(
        data, raw[spec.BOXES.name][0, :n], tier, spec.DEFAULT_GENDER_THRESHOLD
    )
    assert gender[:n].tolist() == expected_gender.tolist()
    np.testing.assert_allclose(scores[:n], expected_scores, atol=SCORE_TOLERANCE)
    faces = raw[spec.FACES.name][0]
    np.testing.assert_allclose(faces[:n], expected_faces, atol=FACE_TOLERANCE)
    assert not faces[n:].any(), "FACES past NUM_DETECTIONS"
    assert ((scores[:n] > 0) == faces[:n].any(axis=1)).all(), "classified exactly where a face was found"
    for g, s in zip(gender[:n], scores[:n], strict=True):
        # Every person: a label with its probability in [threshold, 1], or -1 with a reason:
        # not classified (score 0, crop too small) or unsure (score under the threshold).
        assert (g in (0, 1) and spec.DEFAULT_GENDER_THRESHOLD <= s <= 1) or (
            g == spec.UNDETERMINED and (s == 0 or s < spec.DEFAULT_GENDER_THRESHOLD)
        ), (g, s)
    assert (gender[n:] == spec.UNDETERMINED).all() and not scores[n:].any()


# The two men of zidane.jpg and the two men of bus.jpg whose faces are visible: every such person is
# labelled male or undetermined, never female (the Ultralytics samples show no woman).
VISIBLE_MEN = {"zidane.jpg": 2, "bus.jpg": 2}


@pytest.mark.parametrize("image", sorted(VISIBLE_MEN))
def test_sample_faces_are_labelled_right(grpc_client: PeopleClient, image: str) -> None:
    raw = grpc_client.infer_raw("balanced", grpc_client.inputs([SAMPLES[image].read_bytes()]))
    n = int(raw[spec.NUM_DETECTIONS.name][0, 0])
    gender_, faces = raw[spec.GENDER.name][0, :n], raw[spec.FACES.name][0, :n]
    assert (gender_ != spec.GENDER_LABELS.index("female")).all(), f"{image}: a man labelled female: {gender_}"
    males = int((gender_ == spec.GENDER_LABELS.index("male")).sum())
    assert males == VISIBLE_MEN[image], f"{image}: {males} men labelled, {VISIBLE_MEN[image]} faces visible"
    boxes = raw[spec.BOXES.name][0, :n]
    found = faces.any(axis=1)
    assert (faces[found, :2] >= boxes[found, :2]).all() and (faces[found, 2:] <= boxes[found, 2:]).all()


def test_gender_threshold_per_request(grpc_client: PeopleClient, sample_bytes: dict[str, bytes]) -> None:
    bus = sample_bytes["bus.jpg"]
    inputs = grpc_client.inputs([bus, bus], gender_threshold=0.0)
    inputs[-1].set_data_from_numpy(np.array([[0.0], [1.0]], dtype=np.float32))
    raw = grpc_client.infer_raw("balanced", inputs)
    n = int(raw[spec.NUM_DETECTIONS.name][0, 0])
    scores = raw[spec.GENDER_SCORES.name]
    classified = scores[0, :n] > 0
    assert classified.any()
    assert (raw[spec.GENDER.name][0, :n][classified] >= 0).all(), "threshold 0 labels every classified person"
    assert (raw[spec.GENDER.name][1, :n][scores[1, :n] < 1] == spec.UNDETERMINED).all()
    np.testing.assert_array_equal(scores[0], scores[1])


def test_no_person_makes_no_classifier_call(server: Server, grpc_client: PeopleClient) -> None:
    empty = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1].tobytes()
    model = spec.tier("streaming").model(spec.Step.GENDER)
    before = server.stats.counts(model)
    raw = grpc_client.infer_raw("streaming", grpc_client.inputs([empty]))
    assert raw[spec.NUM_DETECTIONS.name][0, 0] == 0
    assert (raw[spec.GENDER.name] == spec.UNDETERMINED).all()
    assert server.stats.counts(model) == before, "the classifier ran although nobody was found"


def test_more_persons_than_the_face_detector_batch_are_chunked(
    server: Server, grpc_client: PeopleClient, sample_bytes: dict[str, bytes]
) -> None:
    """More person regions than the face detector's max batch go in full chunks and one remainder, and
    every person is still labelled as in process."""
    tier = "batch"
    model = spec.tier(tier).model(spec.Step.FACE)
    limit = spec.FACE_BATCHING[spec.Variant.CPU].max_batch_size
    images = [sample_bytes["bus.jpg"]] * 6
    before = server.stats.batch_sizes(model)
    raw = grpc_client.infer_raw(tier, grpc_client.inputs(images, conf=0.01))
    chunks = server.stats.batch_sizes(model) - before
    regions = 0
    for i in range(len(images)):
        n = int(raw[spec.NUM_DETECTIONS.name][i, 0])
        boxes = torch.tensor(raw[spec.BOXES.name][i, :n])
        square = faces.regions(boxes, torch.tensor([[810, 1080]] * n))
        regions += int(((square[:, 2] - square[:, 0]) >= spec.MIN_FACE_PX).sum())
    assert regions > limit, f"only {regions} regions; the test needs more than {limit}"
    full, rest = divmod(regions, limit)
    expected = Counter({limit: full} | ({rest: 1} if rest else {}))
    assert chunks == expected, f"{regions} regions went in chunks {dict(chunks)}, expected {dict(expected)}"
    for i, data in enumerate(images):
        n = int(raw[spec.NUM_DETECTIONS.name][i, 0])
        expected_gender, expected_scores, _ = reference_gender(
            data, raw[spec.BOXES.name][i, :n], tier, spec.DEFAULT_GENDER_THRESHOLD
        )
        assert raw[spec.GENDER.name][i, :n].tolist() == expected_gender.tolist()
        np.testing.assert_allclose(raw[spec.GENDER_SCORES.name][i, :n], expected_scores, atol=SCORE_TOLERANCE)


def _always_female(size: int) -> onnx.ModelProto:
    """A classifier that answers [1, 0] (female) for any crop: a dynamic batch, CROPS -> PROBABILITIES."""
    chips = helper.make_tensor_value_info(spec.CROPS.name, TensorProto.FLOAT, ["N", 3, size, size])
    probs = helper.make_tensor_value_info(spec.PROBABILITIES.name, TensorProto.FLOAT, ["N", 2])
    nodes = [
        helper.make_node("ReduceMean", [spec.CROPS.name, "axes"], ["mean"], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one"], ["column"]),
        helper.make_node("Mul", ["column", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "female"], [spec.PROBABILITIES.name]),
    ]
    constants = [
        helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("female", TensorProto.FLOAT, [2], [1.0, 0.0]),
    ]
    graph = helper.make_graph(nodes, "always_female", [chips], [probs], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


# The classifier of the modified server below takes at most this many chips per call, fewer than
# postprocess sends in one chunk: a call with more persons is refused by Triton.
SMALL_CLASSIFIER_BATCH = 1
QUEUE_DELAY_US = 500_000


@pytest.fixture(scope="module")
def always_female_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The balanced tier alone, its gender model replaced by a classifier that always says female and
    takes at most SMALL_CLASSIFIER_BATCH chips per call; its steps wait up to QUEUE_DELAY_US for more
    requests, so requests sent together share every execution."""
    repo = tmp_path_factory.mktemp("repository")
    tier = spec.tier("balanced")
    for step in (*spec.MODELS, spec.Step.ENSEMBLE):
        shutil.copytree(REPOSITORY / tier.model(step), repo / tier.model(step), symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "model.onnx"))  # fmt: skip
    for step in (spec.Step.DETECTOR, spec.Step.FACE):
        (repo / tier.model(step) / "1" / "model.onnx").symlink_to(REPOSITORY / tier.model(step) / "1" / "model.onnx")
    gender_dir = repo / tier.model(spec.Step.GENDER) / "1"
    record = manifest.read(gender_dir, manifest.Classifier)
    onnx.save(_always_female(record.preprocessing.size), str(gender_dir / "model.onnx"))
    digest = manifest.sha256(gender_dir / "model.onnx")
    artifact = replace(record.artifact, source="tests: always female", onnx_sha256=digest)
    manifest.write(gender_dir, replace(record, artifact=artifact))
    config = gender_dir.parent / render.CONFIG_PATHS[spec.Variant.CPU]
    limit = spec.GENDER_BATCHING[spec.Variant.CPU].max_batch_size
    text = config.read_text()
    assert f"max_batch_size: {limit}\n" in text
    config.write_text(text.replace(f"max_batch_size: {limit}\n", f"max_batch_size: {SMALL_CLASSIFIER_BATCH}\n"))
    delay = tier.cpu.max_queue_delay_us
    for step in spec.PIPELINE:
        config = repo / tier.model(step) / render.CONFIG_PATHS[spec.Variant.CPU]
        text = config.read_text()
        assert f"max_queue_delay_microseconds: {delay}\n" in text
        config.write_text(text.replace(f"max_queue_delay_microseconds: {delay}\n",
                                       f"max_queue_delay_microseconds: {QUEUE_DELAY_US}\n"))  # fmt: skip
    log = tmp_path_factory.mktemp("triton") / "always-female.log"
    with Server(ServerOptions(repository=repo, endpoints=Endpoints.free()), log_path=log) as s:
        yield s


def test_served_classifier_is_the_one_used(always_female_server: Server, sample_bytes: dict[str, bytes]) -> None:
    client = PeopleClient(always_female_server.options.endpoints.grpc_url)
    zidane = cv2.imdecode(np.frombuffer(sample_bytes["zidane.jpg"], np.uint8), cv2.IMREAD_COLOR)
    one_face = cv2.imencode(".jpg", zidane[:, 640:])[1].tobytes()  # the man on the right only
    raw = client.infer_raw("balanced", client.inputs([one_face]))
    n = int(raw[spec.NUM_DETECTIONS.name][0, 0])
    scores = raw[spec.GENDER_SCORES.name][0, :n]
    assert 0 < (scores > 0).sum() <= SMALL_CLASSIFIER_BATCH, "the right half of zidane.jpg has one face: one call"
    assert (raw[spec.GENDER.name][0, :n][scores > 0] == 0).all(), "every classified person is female"
    np.testing.assert_array_equal(scores[scores > 0], 1.0)


def test_failed_classifier_call_fails_only_the_requests_it_carried(
    always_female_server: Server, sample_bytes: dict[str, bytes]
) -> None:
    """bus.jpg's two faces overflow the classifier's batch (the call fails); a request without persons,
    executed in the same batch, is answered. (Of the same size: Triton batches equal shapes only.)"""
    server = always_female_server
    client = PeopleClient(server.options.endpoints.grpc_url)
    height, width = cv2.imdecode(np.frombuffer(sample_bytes["bus.jpg"], np.uint8), cv2.IMREAD_COLOR).shape[:2]
    nobody = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))[1].tobytes()
    post = spec.tier("balanced").model(spec.Step.POSTPROCESS)
    for _ in range(3):  # until the two share one postprocess execution (they have QUEUE_DELAY_US to meet)
        before = server.stats.counts(post)
        with ThreadPoolExecutor(2) as pool:
            crowded = pool.submit(client.detect, [sample_bytes["bus.jpg"]], "balanced")
            empty = pool.submit(client.detect, [nobody], "balanced")
            with pytest.raises(InferenceServerException) as failed:
                crowded.result(timeout=120)
            answered = empty.result(timeout=120)
        inferences, executions = (a - b for a, b in zip(server.stats.counts(post), before, strict=True))
        if (inferences, executions) == (2, 1):
            break
    else:
        pytest.fail("the two requests never shared a postprocess execution in 3 tries")
    assert answered == [[]], "the request without persons is answered"
    assert failed.value.status() == "StatusCode.INTERNAL", failed.value
    message = failed.value.message()
    assert "gender classification failed" in message and spec.tier("balanced").model(spec.Step.GENDER) in message

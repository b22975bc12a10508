"""Each tier serves the same contract, batches under load and survives bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pipelines import spec
from pipelines.paths import ROOT
from tests.server.conftest import first_step_busy, wait_until
from tools.client.people import PeopleClient, unpack
from tools.server.triton import Server

DTYPES = {d: f"TYPE_{d.value}" for d in spec.DType}


@pytest.mark.parametrize("tier", spec.TIER_NAMES)
def test_ensemble_contract(server: Server, tier: str) -> None:
    """The served ensemble's inputs and outputs are exactly the spec's, for every tier."""
    c = grpcclient.InferenceServerClient(server.options.endpoints.grpc_url)
    config = c.get_model_config(spec.tier(tier).model(spec.Step.ENSEMBLE), as_json=True)["config"]

    def described(tensors: tuple[spec.Tensor, ...]) -> list[tuple]:
        return [(t.name, DTYPES[t.dtype], [str(d) for d in t.dims], t.optional) for t in tensors]

    served_inputs = [(i["name"], i["data_type"], i["dims"], i.get("optional", False)) for i in config["input"]]
    served_outputs = [(o["name"], o["data_type"], o["dims"], False) for o in config["output"]]
    assert served_inputs == described(spec.ENSEMBLE_INPUTS)
    assert served_outputs == [(n, d, dims, False) for n, d, dims, _ in described(spec.tier(tier).outputs)]


def test_outputs_are_padded_to_max_det(grpc_client: PeopleClient, sample_bytes: dict[str, bytes]) -> None:
    raw = grpc_client.infer_raw("streaming", grpc_client.inputs([sample_bytes["zidane.jpg"]]))
    n = int(raw[spec.NUM_DETECTIONS.name][0, 0])
    assert raw[spec.BOXES.name].shape == (1, spec.MAX_DET, 4)
    assert raw[spec.SCORES.name].shape == (1, spec.MAX_DET)
    assert raw[spec.CLASSES.name].shape == (1, spec.MAX_DET)
    assert 0 < n < spec.MAX_DET
    assert not raw[spec.BOXES.name][0, n:].any() and not raw[spec.SCORES.name][0, n:].any()
    assert (raw[spec.SCORES.name][0, :n] > 0).all()
    boxes = raw[spec.BOXES.name][0, :n]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 1280 and boxes[:, [1, 3]].max() <= 720


@pytest.mark.parametrize("tier", ["balanced", "batch"])
def test_dynamic_batching_forms_batches(server: Server, sample_bytes: dict[str, bytes], tier: str) -> None:
    """Single-image requests that queue together are executed in fewer, larger batches, at every step."""
    models = [spec.tier(tier).model(step) for step in spec.PIPELINE]
    client = PeopleClient(server.options.endpoints.grpc_url)
    bus = sample_bytes["bus.jpg"]
    (alone,) = client.detect([bus], tier)
    before = {m: server.stats.counts(m) for m in models}
    batch = spec.tier(tier).cpu.max_batch_size
    requests = 2 * batch
    with first_step_busy(client, tier, bus), ThreadPoolExecutor(requests) as pool:
        results = list(pool.map(lambda _: client.detect([bus], tier), range(requests)))
    assert results == [[alone]] * requests
    # Triton counts an execution once the model returns, which can be just after its answers went out.
    last = models[-1]
    wait_until(lambda: server.stats.counts(last)[0] - before[last][0] >= requests + batch, 30, f"{last}'s statistics")
    for m in models:
        inferences, executions = (a - b for a, b in zip(server.stats.counts(m), before[m], strict=True))
        assert inferences == requests + batch, m  # with the blocker's rows
        assert executions < requests, f"{m}: {executions} executions for {requests} requests and the blocker"


def test_different_thresholds_batched_together_get_their_own(server: Server, bus: bytes) -> None:
    """Requests with different thresholds sent together share executions, and each gets its own answer.

    Our client sends all three thresholds (defaults where not asked), so its requests batch together;
    Triton does not batch requests with different sets of inputs (triton-inference-server/common PR #35).
    """
    client = PeopleClient(server.options.endpoints.grpc_url)
    tier = "balanced"
    asks: list[dict[str, float]] = [{}, {"conf": 0.5}, {}, {"iou": 0.3}, {"conf": 0.05, "iou": 0.5},
                                    {"gender_threshold": 0.99}, {}, {"conf": 0.9, "gender_threshold": 0.0}]  # fmt: skip
    alone = [client.detect([bus], tier, **a) for a in asks]
    assert len({str(a) for a in alone}) >= 5, "the thresholds must give different answers"
    post = spec.tier(tier).model(spec.Step.POSTPROCESS)
    before = server.stats.counts(post)
    with first_step_busy(client, tier, bus), ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(lambda a: client.detect([bus], tier, **a), asks))
    assert together == alone
    executions = server.stats.counts(post)[1] - before[1]
    assert executions < 1 + len(asks), f"{executions} postprocess executions for the blocker and {len(asks)} requests"


def test_requests_without_thresholds_next_to_requests_with_them(server: Server, bus: bytes) -> None:
    """Requests that leave thresholds out (the server's defaults apply) among requests that send them."""
    client = PeopleClient(server.options.endpoints.grpc_url)
    tier = "balanced"
    asks = [({}, False), ({"conf": 0.5}, False), ({}, True), ({"iou": 0.3, "gender_threshold": 0.9}, False)]
    alone = [client.detect([bus], tier, **a) for a, _ in asks]
    assert alone[0] == alone[2], "a left-out threshold takes the same default the client sends"
    with first_step_busy(client, tier, bus), ThreadPoolExecutor(len(asks)) as pool:
        futures = [pool.submit(client.infer_raw, tier, client.inputs([bus], **a, send_defaults=d)) for a, d in asks]
        together = [unpack(f.result(timeout=120)) for f in futures]
    assert together == alone


@pytest.mark.parametrize("tensor", [spec.CONF_THRESHOLD, spec.IOU_THRESHOLD, spec.GENDER_THRESHOLD])
@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan")])
def test_out_of_range_threshold_is_rejected(grpc_client: PeopleClient, bus: bytes, tensor: spec.Tensor,
                                            value: float) -> None:  # fmt: skip
    keyword = {spec.CONF_THRESHOLD: "conf", spec.IOU_THRESHOLD: "iou", spec.GENDER_THRESHOLD: "gender_threshold"}
    with pytest.raises(InferenceServerException) as e:
        grpc_client.detect([bus], **{keyword[tensor]: value})
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
    assert f"{tensor.name} must lie in [0, 1]" in e.value.message()


def test_http_and_grpc_answer_the_same(server: Server, sample_bytes: dict[str, bytes]) -> None:
    """The same requests over both protocols: identical outputs, identical errors (with each one's code)."""
    e = server.options.endpoints
    with PeopleClient(e.grpc_url, "grpc") as grpc, PeopleClient(e.http_url, "http") as http:
        images = [sample_bytes["bus.jpg"], sample_bytes["zidane.jpg"]]
        for tier in spec.IMAGE_TIER_NAMES:
            a = grpc.infer_raw(tier, grpc.inputs(images, conf=0.1, iou=0.6, gender_threshold=0.5))
            b = http.infer_raw(tier, http.inputs(images, conf=0.1, iou=0.6, gender_threshold=0.5))
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{tier} {name}")
        bad_image = ([b"not an image"], {})
        bad_threshold = ([sample_bytes["bus.jpg"]], {"iou": 2.0})
        for images, thresholds in (bad_image, bad_threshold):
            errors = []
            for client, code in ((grpc, "StatusCode.INVALID_ARGUMENT"), (http, "400")):
                with pytest.raises(InferenceServerException) as error:
                    client.detect(images, **thresholds)
                assert error.value.status() == code
                errors.append(error.value.message())
            assert errors[0] == errors[1], errors


CORRUPT = {
    "random bytes": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "text": b"this is not an image",
    "truncated JPEG": None,  # filled from bus.jpg
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
@pytest.mark.parametrize("tier", spec.IMAGE_TIER_NAMES)
def test_corrupt_image_fails_alone(server: Server, sample_bytes: dict[str, bytes], kind: str, tier: str) -> None:
    """A bad image gets INVALID_ARG; good images sent at the same time are answered correctly."""
    bad = CORRUPT[kind] or sample_bytes["bus.jpg"][:2000]
    client = PeopleClient(server.options.endpoints.grpc_url)
    (expected,) = client.detect([sample_bytes["zidane.jpg"]], tier)
    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(client.detect, [bad if i % 3 == 1 else sample_bytes["zidane.jpg"]], tier) for i in range(6)
        ]
        for i, f in enumerate(futures):
            if i % 3 == 1:
                with pytest.raises(InferenceServerException) as e:
                    f.result()
                assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
                assert "IMAGE" in e.value.message()
            else:
                assert f.result() == [expected]
    assert server.ready()


def test_corrupt_image_over_http_is_400(server: Server) -> None:
    data = np.frombuffer(b"\xff\xd8\xff\xe0garbage-after-a-jpeg-signature", dtype=np.uint8)[None]
    i = httpclient.InferInput(spec.IMAGE.name, list(data.shape), "UINT8")
    i.set_data_from_numpy(data)
    with (
        httpclient.InferenceServerClient(server.options.endpoints.http_url) as c,
        pytest.raises(InferenceServerException) as e,
    ):
        c.infer(spec.tier("balanced").model(spec.Step.ENSEMBLE), [i])
    assert e.value.status() == "400", e.value
    assert server.ready()


def test_client_command_line(server: Server, tmp_path: Path) -> None:
    """`python -m tools.client` prints one JSON object per image and draws the boxes when asked."""
    from tests.server.conftest import SAMPLES

    images = [str(p) for p in SAMPLES.values()]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.client",
            *images,
            "--tier",
            "streaming",
            "--url",
            server.options.endpoints.grpc_url,
            "--annotate",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in records] == images
    for r in records:
        assert r["count"] == len(r["persons"]) > 0
        assert Path(r["annotated"]).is_file()

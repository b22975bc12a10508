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
from tools.client.people import PeopleClient
from tools.server.triton import ROOT, Server

DTYPES = {spec.DType.UINT8: "TYPE_UINT8", spec.DType.INT32: "TYPE_INT32", spec.DType.FP32: "TYPE_FP32"}


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
    assert served_outputs == [(n, d, dims, False) for n, d, dims, _ in described(spec.ENSEMBLE_OUTPUTS)]


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


def _stats(server: Server, model: str) -> tuple[int, int]:
    c = grpcclient.InferenceServerClient(server.options.endpoints.grpc_url)
    s = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


@pytest.mark.parametrize("tier", ["balanced", "batch"])
def test_dynamic_batching_forms_batches(server: Server, sample_bytes: dict[str, bytes], tier: str) -> None:
    """Concurrent single-image requests are executed in fewer, larger batches."""
    models = [spec.tier(tier).model(step) for step in spec.PIPELINE]
    before = {m: _stats(server, m) for m in models}
    client = PeopleClient(server.options.endpoints.grpc_url)
    requests = 16
    with ThreadPoolExecutor(requests) as pool:
        results = list(pool.map(lambda _: client.detect([sample_bytes["bus.jpg"]], tier), range(requests)))
    assert all(r == results[0] for r in results)
    for m in models:
        inferences = _stats(server, m)[0] - before[m][0]
        executions = _stats(server, m)[1] - before[m][1]
        assert inferences == requests, m
        assert executions < inferences, f"{m}: {executions} executions for {inferences} inferences"


CORRUPT = {
    "random bytes": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "text": b"this is not an image",
    "truncated JPEG": None,  # filled from bus.jpg
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
@pytest.mark.parametrize("tier", spec.TIER_NAMES)
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
    c = httpclient.InferenceServerClient(server.options.endpoints.http_url)
    data = np.frombuffer(b"\xff\xd8\xff\xe0garbage-after-a-jpeg-signature", dtype=np.uint8)[None]
    i = httpclient.InferInput(spec.IMAGE.name, list(data.shape), "UINT8")
    i.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as e:
        c.infer(spec.tier("balanced").model(spec.Step.ENSEMBLE), [i])
    assert e.value.status() == "400", e.value
    assert server.ready()


def test_out_of_range_threshold_is_rejected(grpc_client: PeopleClient, sample_bytes: dict[str, bytes]) -> None:
    with pytest.raises(InferenceServerException) as e:
        grpc_client.detect([sample_bytes["bus.jpg"]], conf=1.5)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "CONF_THRESHOLD" in e.value.message()


def test_client_command_line(server: Server, tmp_path: Path) -> None:
    """tools/client.py prints one JSON object per image and draws the boxes when asked."""
    from tests.server.conftest import SAMPLES

    images = [str(p) for p in SAMPLES.values()]
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "client.py"),
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
    )
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in records] == images
    for r in records:
        assert r["count"] == len(r["persons"]) > 0
        assert Path(r["annotated"]).is_file()

"""Access control: an API key guards inference and admin APIs; shared memory is locked; loopback only."""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pipelines import spec
from tests.server.conftest import SAMPLES, tier_repository, write_clip
from tools.client.people import PeopleClient
from tools.client.video import cli as video
from tools.client.video.media import FileSink
from tools.server.endpoints import Endpoints
from tools.server.triton import Server, ServerOptions

KEY = "test-key-" + "0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own with a key, and the two tiers the tests call."""
    repository = tier_repository(tmp_path_factory.mktemp("repository"), "streaming", "balanced")
    log = tmp_path_factory.mktemp("triton") / "keyed.log"
    with Server(ServerOptions(repository=repository, endpoints=Endpoints.free(), api_key=KEY), log_path=log) as s:
        yield s


def _http_status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_inference_needs_the_key(keyed: Server, protocol: str, key: str | None) -> None:
    with (
        PeopleClient(keyed.options.endpoints.url(protocol), protocol, api_key=key) as client,
        pytest.raises(InferenceServerException) as error,
    ):
        client.detect([SAMPLES["bus.jpg"].read_bytes()])
    assert "restricted" in str(error.value).lower() or "x-api-key" in str(error.value), error.value


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_inference_with_the_key_passes(keyed: Server, protocol: str) -> None:
    with PeopleClient(keyed.options.endpoints.url(protocol), protocol, api_key=KEY) as client:
        (persons,) = client.detect([SAMPLES["bus.jpg"].read_bytes()])
    assert persons


def test_video_sends_the_key_as_grpc_expects(keyed: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11: the video client once sent gRPC metadata `x-api-key`, and every frame failed on a keyed server.
    With the key every frame is answered; without it every frame fails with the restricted-protocol error."""
    clip, n = tmp_path / "bus.mp4", 3
    write_clip(clip, [cv2.imread(str(SAMPLES["bus.jpg"]))] * n)
    run = [str(clip), "--url", keyed.options.endpoints.grpc_url, "--tier", "streaming", "--max-inflight", "1"]
    assert video.main([*run, "--out", str(tmp_path / "with"), "--api-key", KEY, "--no-progress"]) == 0
    assert video.main([*run, "--out", str(tmp_path / "without"), "--no-progress"]) == 1
    with_key, without = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (with_key["sent"], with_key["ok"], with_key["errors"]) == (n, n, 0)
    assert (without["sent"], without["ok"], without["errors"]) == (n, 0, n)
    answered = [json.loads(line) for line in (tmp_path / "with" / FileSink.JSONL).read_text().splitlines()]
    assert len(answered) == n and all(line["count"] > 0 for line in answered)  # people in every frame
    failed = [json.loads(line) for line in (tmp_path / "without" / FileSink.JSONL).read_text().splitlines()]
    # Every frame fails, and the user is told why: the server's reason (the header it expects) reaches the
    # frames even when a send found the stream already ended before its reason arrived.
    assert len(failed) == n and all("error" in f for f in failed)
    assert any(f"expecting header '{spec.GRPC_API_KEY_HEADER}'" in f["error"] for f in failed), failed


def test_health_and_metadata_stay_open_admin_apis_do_not(keyed: Server) -> None:
    base = f"http://{keyed.options.endpoints.http_url}/v2"
    ensemble = spec.tier("balanced").model(spec.Step.ENSEMBLE)
    assert _http_status(f"{base}/health/live") == 200
    assert _http_status(f"{base}/health/ready") == 200
    assert _http_status(f"{base}/models/{ensemble}") == 200  # metadata: what a client needs to build requests
    for path in (f"/models/{ensemble}/config", f"/models/{ensemble}/stats", "/systemsharedmemory/status"):
        assert _http_status(base + path) in (401, 403), path
        assert _http_status(base + path, {"x-api-key": KEY}) == 200, path
    c = grpcclient.InferenceServerClient(keyed.options.endpoints.grpc_url)
    with pytest.raises(InferenceServerException):
        c.get_model_config(ensemble)
    assert c.get_model_config(ensemble, headers={"triton-grpc-protocol-x-api-key": KEY}).config.name == ensemble


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_shared_memory_registration_is_refused_without_a_key(server: Server, protocol: str) -> None:
    """Without API_KEY, inference is open but registering a client shared-memory region is refused."""
    import tritonclient.utils.shared_memory as shm

    e = server.options.endpoints
    key = f"/people-test-{protocol}-{os.getpid()}"
    region = shm.create_shared_memory_region(f"people-{protocol}", key, 1024)
    try:
        with PeopleClient(e.url(protocol), protocol) as people:
            with pytest.raises(InferenceServerException) as error:
                people.client.register_system_shared_memory(f"people-{protocol}", key, 1024)
            assert "restricted" in str(error.value).lower() or "401" in str(error.value.status()), error.value
    finally:
        shm.destroy_shared_memory_region(region)
    with PeopleClient(e.grpc_url) as client:
        (persons,) = client.detect([SAMPLES["bus.jpg"].read_bytes()])
    assert persons, "inference stays open"


def test_binds_loopback_only(server: Server) -> None:
    assert server.process is not None
    listening = [
        c.laddr.ip for c in psutil.Process(server.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]  # fmt: skip

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        mapped = getattr(address, "ipv4_mapped", None)
        return address.is_loopback or (mapped is not None and mapped.is_loopback)

    assert listening and all(loopback(ip) for ip in listening), listening

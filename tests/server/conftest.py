"""One real tritonserver (cpu variant) per test session, on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import ultralytics

from pipelines import manifest, spec
from tools.client.people import PeopleClient
from tools.server.triton import ROOT, Endpoints, Server, ServerOptions

ASSETS = Path(ultralytics.__file__).parent / "assets"
SAMPLES = {name: ASSETS / name for name in ("bus.jpg", "zidane.jpg")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/server" in str(item.fspath):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def detector_manifest() -> manifest.Detector:
    """The export record of the served detector (fails with `make export` advice when missing)."""
    return manifest.read(ROOT / "model_repository" / spec.TIERS[0].model(spec.Step.DETECTOR) / "1", manifest.Detector)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, detector_manifest: manifest.Detector) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    options = ServerOptions(endpoints=Endpoints.free())
    with Server(options, log_path=log) as s:
        yield s
    if os.environ.get("CI"):
        print(f"tritonserver log: {log}")


@pytest.fixture(scope="session", params=["grpc", "http"])
def client(request: pytest.FixtureRequest, server: Server) -> PeopleClient:
    e = server.options.endpoints
    return PeopleClient(e.grpc_url if request.param == "grpc" else e.http_url, request.param)


@pytest.fixture(scope="session")
def grpc_client(server: Server) -> PeopleClient:
    return PeopleClient(server.options.endpoints.grpc_url, "grpc")


@pytest.fixture(scope="session")
def sample_bytes() -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in SAMPLES.items()}

"""One real tritonserver (cpu variant) per test session, on free loopback ports."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics

from pipelines import manifest, spec
from pipelines.paths import REPOSITORY
from tools.client.people import PeopleClient
from tools.server.endpoints import Endpoints
from tools.server.triton import Server, ServerOptions

ASSETS = Path(ultralytics.__file__).parent / "assets"
SAMPLES = {name: ASSETS / name for name in ("bus.jpg", "zidane.jpg")}


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.02) -> None:
    """Poll until `predicate()` holds; fail naming `what` after `timeout_s` (every wait in the tests has one)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: float = 10) -> Path:
    """An mp4v video of BGR frames, all of the first frame's size."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def tier_repository(directory: Path, *tiers: str) -> Path:
    """A model repository of only `tiers` (links to model_repository/'s models): a server that loads a
    fraction of the models starts in a fraction of the time, for tests that need a server of their own."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in tiers:
        tier = spec.tier(name)
        for step in (*tier.models, spec.Step.ENSEMBLE):
            (directory / tier.model(step)).symlink_to(REPOSITORY / tier.model(step), target_is_directory=True)
    return directory


@contextmanager
def first_step_busy(client: PeopleClient, tier: str, image: bytes) -> Iterator[Future]:
    """Inside, the tier's preprocess works on a full batch sent first: requests sent meanwhile queue behind it
    and are batched together, however slowly the test's threads start (no need to arrive within the
    queue delay). Yields the blocker's future; it must be answered too."""
    batch = spec.tier(tier).batching(spec.Variant.CPU).max_batch_size
    with ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(client.detect, [image] * batch, tier)
        yield blocker
        assert len(blocker.result(timeout=300)) == batch


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/server" in str(item.fspath):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def detector_manifest() -> manifest.Detector:
    """The export record of the served detector (fails with `make export` advice when missing)."""
    return manifest.read(REPOSITORY / spec.TIERS[0].model(spec.Step.DETECTOR) / "1", manifest.Detector)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, detector_manifest: manifest.Detector) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    options = ServerOptions(endpoints=Endpoints.free())
    with Server(options, log_path=log) as s:
        yield s
    if os.environ.get("CI"):
        print(f"tritonserver log: {log}")


@pytest.fixture(scope="session", params=["grpc", "http"])
def client(request: pytest.FixtureRequest, server: Server) -> Iterator[PeopleClient]:
    with PeopleClient(server.options.endpoints.url(request.param), request.param) as c:
        yield c


@pytest.fixture(scope="session")
def grpc_client(server: Server) -> Iterator[PeopleClient]:
    with PeopleClient(server.options.endpoints.grpc_url, "grpc") as c:
        yield c


@pytest.fixture(scope="session")
def bus() -> bytes:
    return SAMPLES["bus.jpg"].read_bytes()


@pytest.fixture(scope="session")
def sample_bytes() -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in SAMPLES.items()}

"""Stopping drains: every request that reached the server before the stop is answered, whatever step it is in.

Triton alone refuses the next step of an ensemble request in flight once it gets SIGTERM
("Server is stopping"); Server.stop() first cuts every tier with a drain request queued behind the
requests already there, waits for them, then sends SIGTERM. These tests stop servers with requests
queued at preprocess and past it, single- and multi-image, with an API key (the drain request
must carry it) and without waiting at all (requests still on their way).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from tritonclient.utils import InferenceServerException

from pipelines import spec
from tests.server.conftest import SAMPLES, tier_repository, wait_until
from tools.client.people import PeopleClient, Person
from tools.server.endpoints import Endpoints
from tools.server.triton import Server, ServerOptions

KEY = "stop-test-key-0123456789"
TIER = "batch"  # the deepest queues and batches: requests spread over every step
OVERLOADED = "balanced"  # the case: 48 clients against a queue of 32
MODELS = {step: spec.tier(TIER).model(step) for step in (*spec.PIPELINE, spec.Step.ENSEMBLE)}


@pytest.fixture()
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own with only the tiers under test: the test stops it."""
    repository = tier_repository(tmp_path_factory.mktemp("repository"), TIER, OVERLOADED)
    log = tmp_path_factory.mktemp("triton") / "stop.log"
    server = Server(ServerOptions(repository=repository, endpoints=Endpoints.free(), api_key=KEY), log_path=log)
    with server:
        yield server


def _load(client: PeopleClient) -> tuple[list[list[bytes]], dict[int, list[list[Person]]]]:
    """Eight single-image and four four-image requests, and each one's answer when the server is idle."""
    bus, zidane = SAMPLES["bus.jpg"].read_bytes(), SAMPLES["zidane.jpg"].read_bytes()
    requests = [[zidane]] * 8 + [[bus, zidane, bus, zidane]] * 4
    expected = {len(r): client.detect(r, TIER) for r in (requests[0], requests[-1])}
    return requests, expected


def _counts(server: Server) -> tuple[float, float, float]:
    """(queued at preprocess, admitted by preprocess, answered by postprocess) for the tier."""
    m = server.stats.metrics()
    return (
        m.get(("nv_inference_pending_request_count", MODELS[spec.Step.PREPROCESS]), 0.0),
        m.get((spec.ADMITTED_METRIC, MODELS[spec.Step.PREPROCESS]), 0.0),
        m.get((spec.ANSWERED_METRIC, MODELS[spec.Step.POSTPROCESS]), 0.0),
    )


def test_stop_answers_every_request_already_in_the_server(fresh: Server) -> None:
    client = PeopleClient(fresh.options.endpoints.grpc_url, api_key=KEY)
    requests, expected = _load(client)
    _, admitted_before, _ = _counts(fresh)
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        futures = [pool.submit(client.detect, r, TIER) for r in requests]

        def spread_over_the_steps() -> bool:
            queued, admitted, answered = _counts(fresh)
            inside = queued + admitted - admitted_before  # none executing in preprocess: all are counted
            return inside == len(requests) and queued > 0 and admitted - answered > 0

        wait_until(spread_over_the_steps, 120, "all requests inside, some queued at preprocess and some past it")
        stopping = pool.submit(fresh.stop)
        results = [f.result(timeout=120) for f in futures]
        stopped = stopping.result(timeout=120)
    assert [r == expected[len(q)] for r, q in zip(results, requests, strict=True)] == [True] * len(requests)
    assert stopped.clean, stopped


def _outcome(future: Future) -> str:
    try:
        future.result(timeout=120)
    except InferenceServerException as e:
        return f"{e.status()} {e.message()}"
    return "ok"


def test_stop_at_once_answers_or_refuses_each_request_cleanly(fresh: Server) -> None:
    """Stopped while requests are still on their way or in preprocess: each is answered or refused as draining."""
    client = PeopleClient(fresh.options.endpoints.grpc_url, api_key=KEY)
    requests, _ = _load(client)
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(client.detect, r, TIER) for r in requests]
        stopped = fresh.stop()
        outcomes = [_outcome(f) for f in futures]
    refused = [o for o in outcomes if o != "ok"]
    assert all(o.startswith("StatusCode.UNAVAILABLE") and spec.DRAINING_MESSAGE in o for o in refused), outcomes
    assert stopped.clean, stopped
    assert fresh.process is not None and fresh.process.returncode == 0


REFUSALS = ("Exceeds maximum queue size", spec.TIER_FULL_MESSAGE, "Request timeout expired", spec.DRAINING_MESSAGE)


@dataclass
class Overload:
    """Clients sending back to back until told to stop; each outcome kept."""

    client: PeopleClient
    image: bytes
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[str] = field(default_factory=list)

    def _one_client(self) -> None:
        while not self.stop.is_set():
            try:
                self.client.detect([self.image], OVERLOADED)
                self.outcomes.append("ok")
            except InferenceServerException as e:
                self.outcomes.append(f"{e.status()} {e.message()}")

    def refused(self) -> list[str]:
        return [o for o in self.outcomes if o != "ok"]

    def run(self, clients: int) -> ThreadPoolExecutor:
        pool = ThreadPoolExecutor(clients)
        for _ in range(clients):
            pool.submit(self._one_client)
        return pool


def _tier_counters(server: Server) -> tuple[float, float, float]:
    """(admitted by preprocess, answered by postprocess, queued at any step) of the overloaded tier."""
    m = server.stats.metrics()
    t = spec.tier(OVERLOADED)
    queued = sum(m.get(("nv_inference_pending_request_count", t.model(s)), 0.0) for s in spec.PIPELINE)
    return (m.get((spec.ADMITTED_METRIC, t.model(spec.Step.PREPROCESS)), 0.0),
            m.get((spec.ANSWERED_METRIC, t.model(spec.Step.POSTPROCESS)), 0.0), queued)  # fmt: skip


def _assert_only_expected_refusals(load: Overload) -> None:
    unexpected = [o for o in load.refused() if not (o.startswith("StatusCode.UNAVAILABLE") and
                                                    any(r in o for r in REFUSALS))]  # fmt: skip
    assert unexpected == [], unexpected[:5]


def test_after_an_overload_a_stop_finds_nothing_in_flight(fresh: Server) -> None:
    """48 clients against the tier until its queue refuses many, then idle: everything it admitted was
    answered (no work thrown away at an inner step), and the stop says so without waiting out the drain."""
    client = PeopleClient(fresh.options.endpoints.grpc_url, api_key=KEY)
    admitted_before, answered_before, _ = _tier_counters(fresh)
    load = Overload(client, SAMPLES["zidane.jpg"].read_bytes())
    pool = load.run(48)
    wait_until(lambda: len(load.refused()) >= 40 and load.outcomes.count("ok") >= 10, 300, "an overload")
    load.stop.set()
    pool.shutdown(wait=True)
    _assert_only_expected_refusals(load)
    admitted, answered, queued = _tier_counters(fresh)
    assert queued == 0 and admitted - admitted_before == answered - answered_before == load.outcomes.count("ok")
    assert fresh.stats.admitted_in_flight() == 0
    stopped = fresh.stop()
    assert stopped.clean, stopped


def test_a_stop_during_an_overload_answers_every_admitted_request(fresh: Server) -> None:
    """Stopped while 48 clients keep the tier full: each request is answered or refused as designed
    (queue full, tier full, draining), never lost at an inner step, and the stop is clean."""
    client = PeopleClient(fresh.options.endpoints.grpc_url, api_key=KEY)
    load = Overload(client, SAMPLES["zidane.jpg"].read_bytes())
    pool = load.run(48)

    def full() -> bool:
        admitted, answered, queued = _tier_counters(fresh)
        return queued > 0 and admitted - answered > 0 and len(load.refused()) > 0

    wait_until(full, 300, "the tier full and refusing")
    load.stop.set()  # no new requests after this; the ones on their way still arrive
    stopped = fresh.stop()
    pool.shutdown(wait=True)
    _assert_only_expected_refusals(load)
    assert load.outcomes.count("ok") > 0
    assert stopped.clean, stopped

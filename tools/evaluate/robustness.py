"""`make robustness`: bad inputs, overload and faults against a real server, and a short report.

Every case of tools/corpus.py goes to every tier over gRPC and HTTP, alone and
at the same time as good requests that the server batches with it; then the
tiers are driven at three times what they sustain (goodput: the answers per second that
still get done, and the work admitted then thrown away); then a python stub
is killed under load and the supervisor must bring the tier back. Targets:
0 crashes, 0 good requests failed or changed, 0 hangs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from pipelines import spec
from tools.client.people import PeopleClient, Person, outputs, unpack
from tools.evaluate.corpus import ASSETS, Case, Expect, cases, large_image
from tools.server.endpoints import Endpoints
from tools.server.stats import Remote
from tools.server.triton import REPOSITORY, Server, ServerOptions

log = logging.getLogger("robustness")

# What each protocol calls the two statuses a client must be able to act on.
STATUS = {
    "grpc": {"invalid": "StatusCode.INVALID_ARGUMENT", "unavailable": "StatusCode.UNAVAILABLE"},
    "http": {"invalid": "400", "unavailable": "503"},
}


@dataclass
class Outcome:
    kind: str  # ok, invalid, unavailable, other
    message: str = ""
    persons: list[Person] = field(default_factory=list)
    seconds: float = 0.0


Request = bytes | list[bytes] | np.ndarray  # one image, several, or a raw IMAGE tensor


def _inputs(client: PeopleClient, data: Request) -> list[Any]:
    """Encoded images as the client sends them, or a raw IMAGE tensor (the dtype and shape cases)."""
    if isinstance(data, bytes):
        return client.inputs([data])
    if isinstance(data, list):
        return client.inputs(data)
    tensor = client.client_module.InferInput(spec.IMAGE.name, list(data.shape), np_to_triton_dtype(data.dtype))
    tensor.set_data_from_numpy(data)
    return [tensor]


def _outcome(client: PeopleClient, error: InferenceServerException | None, raw: dict | None, start: float) -> Outcome:
    """An answer classified by what a client should do with it."""
    if error is not None:
        status = str(error.status())
        kind = next((k for k, v in STATUS[client.protocol].items() if v == status), "other")
        return Outcome(kind, error.message() or str(error), seconds=time.monotonic() - start)
    persons = unpack(raw)[0] if raw else []  # the first image's
    return Outcome("ok", persons=persons, seconds=time.monotonic() - start)


def send(client: PeopleClient, tier: str, data: Request) -> Outcome:
    """One request (the client's timeout bounds it); the answer classified by what a client should do."""
    start = time.monotonic()
    try:
        raw = client.infer_raw(tier, _inputs(client, data))
    except InferenceServerException as e:
        return _outcome(client, e, None, start)
    return _outcome(client, None, None if isinstance(data, np.ndarray) else raw, start)


def send_alone(url: str, protocol: str, tier: str, data: Request) -> Outcome:
    """`send` on a client of its own, opened and closed in the calling thread.

    tritonclient's HTTP client is not thread-safe (gevent): one per thread, and closed there, since
    closing it from another thread (the garbage collector's) raises in gevent.
    """
    with PeopleClient(url, protocol) as client:
        return send(client, tier, data)


def server_rss(server: Server | Remote) -> int:
    """Memory of tritonserver and its python stubs together (proportional set size: shared pages counted once);
    0 for a server of another machine or container."""
    if isinstance(server, Remote):
        return 0
    assert server.process is not None
    root = psutil.Process(server.process.pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            continue
    return total


@dataclass
class CorpusReport:
    tried: int = 0
    crashes: int = 0
    wrong: list[str] = field(default_factory=list)  # a case answered otherwise than expected
    good_harmed: list[str] = field(default_factory=list)  # a good request failed or changed next to a bad one
    not_batched: list[str] = field(default_factory=list)  # a bad request that never shared a batch with a good one
    rss_before: int = 0
    rss_after: int = 0


def _in_order(client: PeopleClient, tier: str, requests: list[Request]) -> list[Outcome]:
    """gRPC requests sent one after another on one channel without waiting: they usually arrive in that order,
    though only a stream guarantees it (docs/tracking.md "Order"), and a stream's failed requests carry no
    status code to classify."""
    start = time.monotonic()
    answers: list[tuple[Any, Any] | None] = [None] * len(requests)
    all_done = threading.Semaphore(0)

    def callback(k: int, result: Any, error: Any) -> None:
        answers[k] = (result, error)
        all_done.release()

    for k, data in enumerate(requests):
        client.infer_async(tier, _inputs(client, data), partial(callback, k))
    for _ in requests:
        assert all_done.acquire(timeout=client.timeout_s + 10), "no answer within the client's timeout"
    outcomes = []
    for answer, data in zip(answers, requests, strict=True):
        assert answer is not None
        result, error = answer
        raw = outputs(result) if error is None and not isinstance(data, np.ndarray) else None
        outcomes.append(_outcome(client, error, raw, start))
    return outcomes


def batched_pair(
    server: Server | Remote, url: str, protocol: str, tier: str, good: bytes, bad: bytes | np.ndarray
) -> tuple[list[Outcome], Outcome, bool | None]:
    """A bad request between two good ones, sent behind a two-image request that keeps the first step busy.

    Over gRPC the four go out in order on one channel (see `_in_order`), and Triton batches them in arrival
    order, so its batches cut [2, 1, 1, 1] (images per request) into runs. The bad one (the third) ran alone only
    when two executions of one image happened ([2, 1] [1] [1] or [2] [1] [1] [1]); every other cut puts it
    next to a good request. Returns the good neighbours' and the bad one's outcomes, and whether sharing
    was shown (None: not judged: over HTTP the order is not fixed, or the bad one never reached the model).
    """
    requests: list[Request] = [[large_image()] * 2, good, bad, good]
    first_step = spec.tier(tier).model(spec.Step.PREPROCESS)
    before = server.stats.batch_sizes(first_step)
    if protocol == "grpc":
        with PeopleClient(url, protocol) as client:
            outcomes = _in_order(client, tier, requests)
    else:
        with ThreadPoolExecutor(len(requests)) as pool:
            outcomes = list(pool.map(partial(send_alone, url, protocol, tier), requests))
    blocker, first, got, second = outcomes
    assert blocker.kind == "ok", blocker.message
    batches = server.stats.batch_sizes(first_step) - before
    images = sum(size * count for size, count in batches.items())
    shared = batches[1] < 2 if protocol == "grpc" and images == 5 else None
    return [first, second], got, shared


# A pair judged not shared is sent again: the judgement assumes the arrival order of unary gRPC calls,
# which Triton does not guarantee (see `_in_order`), so one judgement can be wrong; a tier that never
# batches a bad request with good ones is judged so every time.
PAIR_ATTEMPTS = 3


def corpus_round(server: Server | Remote, tiers: tuple[str, ...], protocols: tuple[str, ...]) -> CorpusReport:
    """Every case alone, then in one batch with a good request, on every tier and protocol.

    A local server that became unhealthy is counted as a crash and restarted; a remote one (the GPU
    variant's, served by the image) only counted."""
    e = server.stats.endpoints
    report = CorpusReport()
    good = (ASSETS / "zidane.jpg").read_bytes()
    all_cases = cases()
    for protocol in protocols:
        url = e.url(protocol)
        with PeopleClient(url, protocol) as client:
            for tier in tiers:
                expected_good = send(client, tier, good)
                assert expected_good.kind == "ok", expected_good.message
                if not report.rss_before:
                    report.rss_before = server_rss(server)
                for case in all_cases:
                    label = f"{protocol}/{tier}/{case.name}"
                    report.tried += 1
                    _judge(report, case, send(client, tier, case.data), f"{label}/alone", client, tier)
                    for _ in range(PAIR_ATTEMPTS):
                        neighbours, got, shared = batched_pair(server, url, protocol, tier, good, case.data)
                        _judge(report, case, got, f"{label}/batched", client, tier)
                        for n in neighbours:
                            if n.kind != "ok" or n.persons != expected_good.persons:
                                report.good_harmed.append(f"{label}: {n.kind} {n.message}")
                        if shared is not False:
                            break
                    else:
                        report.not_batched.append(label)
                    if not server.healthy():
                        report.crashes += 1
                        log.error("server unhealthy after %s", label)
                        if isinstance(server, Server):
                            server.stop(drain=False)
                            server.start()
    report.rss_after = server_rss(server)
    return report


def _judge(report: CorpusReport, case: Case, got: Outcome, label: str, client: PeopleClient, tier: str) -> None:
    if got.kind != case.expect.value:
        report.wrong.append(f"{label}: expected {case.expect.value}, got {got.kind} {got.message[:120]}")
    elif case.expect is Expect.INVALID and spec.IMAGE.name not in got.message and "input" not in got.message:
        report.wrong.append(f"{label}: the message does not say what is wrong: {got.message[:120]}")
    elif case.upright is not None:
        upright = send(client, tier, case.upright)
        if got.persons != upright.persons:
            report.wrong.append(f"{label}: boxes differ from the upright image's")


@dataclass
class LoadReport:
    tier: str
    offered_per_s: float
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    other: list[str] = field(default_factory=list)
    accepted_latency_s: list[float] = field(default_factory=list)
    rejected_latency_s: list[float] = field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    seconds: float = 0.0
    admitted: float = 0.0  # requests preprocess let into the tier (spec.ADMITTED_METRIC)
    answered: float = 0.0  # responses the tier sent (spec.ANSWERED_METRIC)

    @property
    def goodput_per_s(self) -> float:
        """Answers per second while offered `offered_per_s`: what the overload still got done."""
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def thrown_away(self) -> float:
        """Requests the tier admitted (decoded, letterboxed) and then refused at a later step: wasted work."""
        return self.admitted - self.answered


def _tier_counters(server: Server, tier: str) -> tuple[float, float]:
    metrics = server.stats.metrics()
    t = spec.tier(tier)
    return (metrics.get((spec.ADMITTED_METRIC, t.model(spec.Step.PREPROCESS)), 0.0),
            metrics.get((spec.ANSWERED_METRIC, t.model(t.answers)), 0.0))  # fmt: skip


def sustainable_rate(client: PeopleClient, tier: str, image: bytes, seconds: float = 5.0) -> float:
    """Requests per second the tier answers back to back with a few in flight (what it sustains)."""
    done = 0
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(4) as pool:
        while time.monotonic() < deadline:
            list(pool.map(lambda _: client.detect([image], tier), range(4)))
            done += 4
    return done / seconds


def overload(
    server: Server, tier: str, factor: float = 3.0, seconds: float = 10.0, protocol: str = "grpc",
    sustainable_per_s: float | None = None,
) -> LoadReport:
    """Offer `factor` times the sustainable rate (open loop) and record what happened. The sustainable rate is
    measured first unless given (to offer two servers the same load)."""
    e = server.options.endpoints
    url = e.url(protocol)
    image = (ASSETS / "bus.jpg").read_bytes()
    rate = (sustainable_per_s or sustainable_rate(PeopleClient(e.grpc_url), tier, image)) * factor
    report = LoadReport(tier, rate, rss_before=server_rss(server))
    lock = threading.Lock()

    def one() -> None:
        outcome = send_alone(url, protocol, tier, image)
        with lock:
            if outcome.kind == "ok":
                report.accepted += 1
                report.accepted_latency_s.append(outcome.seconds)
            elif outcome.kind == "unavailable":
                report.rejected += 1
                report.rejected_latency_s.append(outcome.seconds)
            else:
                report.other.append(f"{outcome.kind}: {outcome.message[:120]}")

    admitted, answered = _tier_counters(server, tier)
    start = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        while (elapsed := time.monotonic() - start) < seconds:
            if report.sent < elapsed * rate:
                pool.submit(one)
                report.sent += 1
                report.rss_peak = max(report.rss_peak, server_rss(server)) if report.sent % 10 == 0 else report.rss_peak
            else:
                time.sleep(0.002)
    report.seconds = time.monotonic() - start  # every request answered or refused: the pool waited for them
    admitted_after, answered_after = _tier_counters(server, tier)
    report.admitted, report.answered = admitted_after - admitted, answered_after - answered
    report.rss_after = server_rss(server)
    return report


def kill_stub_under_load(server: Server, tier: str, supervise: bool = True) -> dict[str, Any]:
    """Kill the tier's postprocess stub while requests flow; in-flight ones must fail clearly, not hang."""
    from tools.server.health import stubs

    assert server.process is not None
    client = PeopleClient(server.options.endpoints.grpc_url)
    image = (ASSETS / "bus.jpg").read_bytes()
    model = spec.tier(tier).model(spec.Step.POSTPROCESS)
    victim = next(s.process for s in stubs(psutil.Process(server.process.pid)) if s.model == model)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, client, tier, image) for _ in range(8)]
        time.sleep(0.2)
        victim.kill()
        outcomes = [f.result(timeout=90) for f in futures]
    during = send(client, tier, image)
    result = {
        "in_flight": len(outcomes),
        # Clear answers: the dead stub named, or UNAVAILABLE (a queue that filled or timed out meanwhile).
        "in_flight_failed_clearly": sum(
            o.kind == "unavailable" or (o.kind == "other" and "not healthy" in o.message) for o in outcomes
        ),
        "in_flight_ok": sum(o.kind == "ok" for o in outcomes),
        "hung": 0,  # f.result(timeout=...) above raises if one hangs
        "after_kill": f"{during.kind}: {during.message[:100]}",
        "healthy_after_kill": server.healthy(),
        "dead_stubs": server.dead_stubs(),
    }
    if supervise:
        server.stop(drain=False)
        server.start()
        result["recovered"] = server.healthy() and send(client, tier, image).kind == "ok"
    return result


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate.robustness", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one tier, gRPC only, short load (as in make test)")
    parser.add_argument("--log", type=Path, default=Path("build/robustness-tritonserver.log"))
    parser.add_argument("--repository", type=Path, default=REPOSITORY,
                        help="the model repository to serve (default: model_repository/)")  # fmt: skip
    parser.add_argument("--overload-only", action="store_true",
                        help="only the overload of every tier at 3x (goodput and work thrown away)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    tiers = ("balanced",) if args.quick else spec.IMAGE_TIER_NAMES
    protocols = ("grpc",) if args.quick else ("grpc", "http")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    options = ServerOptions(repository=args.repository, endpoints=Endpoints.free())
    with Server(options, log_path=args.log) as server:
        if not args.overload_only:
            log.info("bad inputs: %d cases x %s x %s, alone and batched with good requests",
                     len(cases()), "/".join(tiers), "/".join(protocols))  # fmt: skip
            corpus = corpus_round(server, tiers, protocols)
        loads = []
        for tier in ("streaming",) if args.quick else spec.IMAGE_TIER_NAMES:
            log.info("overload: %s tier at 3x its sustainable rate", tier)
            loads.append(overload(server, tier, seconds=5 if args.quick else 20))
        if not args.overload_only:
            log.info("fault: kill the streaming postprocess stub under load")
            fault = kill_stub_under_load(server, "streaming")
    mib = 1 << 20
    print("\n== robustness report ==")
    for load in loads:
        print(
            f"overload ({load.tier}, {load.offered_per_s:.1f} req/s offered = 3x sustainable): sent {load.sent}, "
            f"accepted {load.accepted}, rejected UNAVAILABLE {load.rejected}, other {len(load.other)}; "
            f"goodput {load.goodput_per_s:.2f} answers/s; admitted then thrown away {load.thrown_away:.0f}"
        )
        print(
            f"  accepted latency p50 {_p(load.accepted_latency_s, 50):.3f} s, "
            f"p99 {_p(load.accepted_latency_s, 99):.3f} s; rejected in p99 {_p(load.rejected_latency_s, 99):.3f} s; "
            f"memory {load.rss_before / mib:.0f} MiB before, {load.rss_peak / mib:.0f} MiB peak, "
            f"{load.rss_after / mib:.0f} MiB after"
        )
    if args.overload_only:
        return 1 if any(load.other for load in loads) else 0
    print(f"inputs tried: {corpus.tried} cases x alone/batched ({', '.join(tiers)}; {', '.join(protocols)})")
    print(f"crashes: {corpus.crashes}")
    print(f"wrong answers: {len(corpus.wrong)}")
    for w in corpus.wrong:
        print(f"  - {w}")
    print(f"bad requests that never shared a batch with a good one: {len(corpus.not_batched)}")
    for n in corpus.not_batched:
        print(f"  - {n}")
    print(f"good requests harmed: {len(corpus.good_harmed)}")
    for h in corpus.good_harmed:
        print(f"  - {h}")
    print(f"server memory: {corpus.rss_before / mib:.0f} MiB before the corpus, {corpus.rss_after / mib:.0f} MiB after")
    print(f"faults survived: stub killed under load -> {fault}")
    failed = (corpus.crashes or corpus.wrong or corpus.good_harmed or corpus.not_batched
              or any(load.other for load in loads) or not fault.get("recovered"))  # fmt: skip
    print("result:", "FAIL" if failed else "PASS (0 crashes, 0 good requests harmed, 0 hangs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

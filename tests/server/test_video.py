"""python -m tools.client.video: videos through the streaming tier in frame order, drops, errors, a restart.

Every wait has a timeout and every assertion is about outcomes: a test that needs the client to fall behind
makes it fall behind (a sink that blocks), whatever the machine's speed.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import manifest, spec
from tests.server.conftest import SAMPLES, tier_repository, write_clip
from tools.client.people import PeopleClient
from tools.client.video import cli as video
from tools.client.video.media import FileSink, FrameResult, Source, encode_jpeg
from tools.client.video.session import DropPolicy, OnError, StreamOptions, StreamSession
from tools.server.endpoints import Endpoints, free_port
from tools.server.triton import Server, ServerOptions

# The streaming tier rejects a request that queued 2 s on cpu, so the tests that use it keep at most two
# requests in the server: one waits at most one small frame's run, far less, however loaded the machine.
TIER = "streaming"
# Files are archives: their tier delays requests instead of rejecting them, so 3 sources x 2 in flight are
# all answered however slow the machine (seen: the streaming tier rejected some under load).
FILES_TIER = "batch"
QUALITY = 85
# Several sizes, as a video has one.
VIDEOS = {"wide": ((1280, 720), 6), "vga": ((640, 480), 7), "small": ((352, 288), 5)}
INFLIGHT = 2
WAIT_S = 120  # the longest any test waits for one event (a timeout, not a pace)


def frames(size: tuple[int, int], n: int) -> list[np.ndarray]:
    """bus, gray (nobody), zidane, ... all resized to one (width, height)."""
    photos = [cv2.resize(cv2.imread(str(SAMPLES[name])), size, interpolation=cv2.INTER_AREA) for name in SAMPLES]
    gray = np.full((size[1], size[0], 3), 128, dtype=np.uint8)
    cycle = [photos[0], gray, photos[1]]
    return [cycle[i % len(cycle)] for i in range(n)]


def decoded(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} is not readable"
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(frame)
    capture.release()
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    paths = {}
    for name, (size, n) in VIDEOS.items():
        paths[name] = write_clip(root / f"{name}.mp4", frames(size, n))
    return paths


class Recorder:
    """A sink that keeps results (without pixels) in memory and lets a test wait on them."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.closed = False
        self._cond = threading.Condition()

    def write(self, result: FrameResult) -> None:
        with self._cond:
            self.results.append(dataclasses.replace(result, image=None))
            self._cond.notify_all()

    def close(self) -> None:
        self.closed = True

    def wait_for(self, what: str, predicate: Callable[[list[FrameResult]], bool], timeout_s: float) -> int:
        """Wait until predicate(results); returns how many results there were then."""
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.results), timeout_s), f"timed out waiting for {what}"
            return len(self.results)


def assert_in_order(results: list[FrameResult]) -> None:
    indices = [r.index for r in results]
    assert indices == sorted(set(indices)), "results must reach the sink once each, in frame order"


def test_videos_answered_in_order_like_single_requests(
    server: Server,
    grpc_client: PeopleClient,
    videos: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three videos at once (the CLI): every frame answered, in frame order although the tier does not promise
    it, with the same persons as a single request of the same bytes (box, score, class, gender and its score:
    the same server on the same bytes answers exactly)."""
    batching = spec.tier(FILES_TIER).batching(spec.Variant.CPU)
    assert batching.timeout_action is spec.TimeoutAction.DELAY and batching.max_queue_size >= len(VIDEOS) * INFLIGHT
    out = tmp_path / "results"
    argv = [str(p) for p in videos.values()]
    argv += ["--url", server.options.endpoints.grpc_url, "--tier", FILES_TIER, "--out", str(out)]
    argv += ["--max-inflight", str(INFLIGHT), "--jpeg-quality", str(QUALITY), "--no-progress"]
    assert video.main(argv) == 0
    summaries = {Path(s["source"]).stem: s for s in map(json.loads, capsys.readouterr().out.splitlines())}

    for name, path in videos.items():
        sent = decoded(path)  # the tool read the same frames with the same decoder
        size, n = VIDEOS[name]
        assert len(sent) == n
        s = summaries[name]
        assert (s["mode"], s["produced"], s["sent"], s["ok"]) == ("file", n, n, n)
        assert (s["dropped"], s["errors"]) == (0, 0)
        assert 1 <= s["max_inflight"] <= INFLIGHT and s["latency_ms"]["p99"] >= s["latency_ms"]["mean"] > 0
        assert json.loads((out / name / "summary.json").read_text()) == s

        lines = [json.loads(line) for line in (out / name / FileSink.JSONL).read_text().splitlines()]
        assert [line["frame"] for line in lines] == list(range(n))
        for line, frame in zip(lines, sent, strict=True):
            (expected,) = grpc_client.detect([encode_jpeg(frame, QUALITY)], FILES_TIER)
            assert line["persons"] == [p.as_json() for p in expected], f"{name} frame {line['frame']}"
            assert line["count"] == len(expected) == sum(line["genders"].values())
        assert lines[1]["count"] == 0 and lines[1]["persons"] == []  # a gray frame
        assert lines[0]["count"] > 0 and lines[0]["timestamp"] == 0.0 and lines[1]["timestamp"] == 0.1

        annotated = decoded(out / name / FileSink.VIDEO)
        assert len(annotated) == n and annotated[0].shape == (size[1], size[0], 3)


@pytest.mark.parametrize("drop", list(DropPolicy))
def test_live_source_drops_instead_of_queueing(server: Server, drop: DropPolicy) -> None:
    """A camera faster than the client: what does not fit the window and the buffer is dropped by policy.

    The sink holds frame 0 until the camera has produced every frame, and the camera produces frame 1 only
    once frame 0 reached the sink: whatever the machine's speed, frame 0 is sent, the buffer (2) keeps two
    of the other eleven by the policy, and nine are dropped.
    """
    pictures = frames((640, 480), 3)
    produced = 12
    first_written, all_produced = threading.Event(), threading.Event()

    def camera() -> Iterator[np.ndarray]:
        yield pictures[0]
        assert first_written.wait(WAIT_S), "frame 0 never reached the sink"
        for i in range(1, produced):
            yield pictures[i % 3]
        all_produced.set()  # runs when the reader asks for a 13th frame: the 12th is buffered or dropped

    class BlockingSink(Recorder):
        def write(self, result: FrameResult) -> None:
            super().write(result)
            first_written.set()
            assert all_produced.wait(WAIT_S), "the camera never finished"

    sink = BlockingSink()
    options = StreamOptions(
        url=server.options.endpoints.grpc_url, tier=TIER, max_inflight=1, max_pending=2, drop=drop, jpeg_quality=QUALITY
    )
    stats = StreamSession(Source("camera", camera(), live=True), sink, options).run()

    kept = [produced - 2, produced - 1] if drop is DropPolicy.OLDEST else [1, 2]  # oldest: the freshest survive
    assert [r.index for r in sink.results] == [0, *kept]
    assert (stats.produced, stats.sent, stats.dropped) == (produced, 3, produced - 3)
    assert stats.ok == 3 and stats.errors == 0 and sink.closed
    assert (stats.max_inflight_seen, stats.max_pending_seen) == (1, 2)  # bounded
    for r in sink.results:  # the bytes sent are the deterministic encoding of the captured frame
        assert r.jpeg == encode_jpeg(pictures[r.index % 3], QUALITY)


@pytest.mark.parametrize("on_error", list(OnError))
def test_bad_frame_fails_alone_or_stops(server: Server, on_error: OnError, tmp_path: Path) -> None:
    """An unencodable frame is one error; `continue` answers the rest, `stop` ends the run with playable files.

    The window (2) holds frame 1's error behind frame 0, so `stop` halts once both are written: 2 frames sent.
    """
    good = frames((320, 240), 3)
    stream = [good[0], np.zeros((0, 0, 3), np.uint8), *good, *good, *good]
    options = StreamOptions(url=server.options.endpoints.grpc_url, tier=TIER, max_inflight=2, on_error=on_error)
    sink = FileSink(tmp_path, fps=10)
    stats = StreamSession(Source("bad", iter(stream), live=False), sink, options).run()

    lines = [json.loads(line) for line in (tmp_path / FileSink.JSONL).read_text().splitlines()]
    assert stats.errors == 1 and lines[1]["frame"] == 1 and "bad frame" in lines[1]["error"]
    assert [line["frame"] for line in lines] == list(range(stats.sent))
    assert stats.dropped == 0 and stats.produced == stats.sent
    if on_error is OnError.CONTINUE:
        assert stats.sent == stats.ok + 1 == len(stream) and stats.stopped is None
    else:
        assert stats.sent == 2 and stats.ok == 1 and "stop" in (stats.stopped or "")
    assert len(decoded(tmp_path / FileSink.VIDEO)) == stats.ok  # the empty frame has no picture


def test_stop_leaves_playable_files(server: Server, tmp_path: Path) -> None:
    """What Ctrl-C does (the stop event): sending ends, answers on their way are written, both files are valid."""
    stop = threading.Event()

    class StopAfterThree(FileSink):
        def write(self, result: FrameResult) -> None:
            super().write(result)
            if self.frames == 3:
                stop.set()

    stream = frames((320, 240), 30)
    options = StreamOptions(url=server.options.endpoints.grpc_url, tier=TIER, max_inflight=2)
    stats = StreamSession(
        Source("stopped", iter(stream), live=False), StopAfterThree(tmp_path, 10), options, stop
    ).run()

    assert stats.stopped == "interrupted" and 3 <= stats.ok <= stats.sent < len(stream)
    assert stats.sent <= 2 + options.max_inflight  # frames 0-2, then only what the window still held
    assert stats.sent == stats.ok + stats.errors  # each either answered within the grace or failed
    lines = [json.loads(line) for line in (tmp_path / FileSink.JSONL).read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(stats.sent))
    assert len(decoded(tmp_path / FileSink.VIDEO)) == stats.sent


def test_server_gone_fails_frames(tmp_path: Path) -> None:
    """No server at all: every frame is an error (continue) or the first one ends the run (stop)."""
    url = f"127.0.0.1:{free_port()}"
    stream = frames((320, 240), 4)
    for on_error, expected_sent in ((OnError.CONTINUE, 4), (OnError.STOP, 1)):
        options = StreamOptions(url=url, tier=TIER, on_error=on_error, backoff_s=(0.01, 0.05))
        sink = Recorder()
        stats = StreamSession(Source("gone", iter(stream), live=False), sink, options).run()
        assert (stats.sent, stats.errors, stats.ok) == (expected_sent, expected_sent, 0)
        assert all("server unavailable" in (r.error or "") for r in sink.results)


def test_server_restart_is_survived(detector_manifest: manifest.Detector, tmp_path: Path) -> None:
    """A live run outlives a restart of its server on the same ports: answers, errors during the outage, answers."""
    # Only the streaming tier: faster starts. The same ports after the restart.
    options = ServerOptions(repository=tier_repository(tmp_path / "repository", TIER), endpoints=Endpoints.free())
    server = Server(options, log_path=tmp_path / "tritonserver.log", ready_timeout_s=240)
    pictures = frames((480, 360), 3)
    done = threading.Event()

    def camera() -> Iterator[np.ndarray]:  # 10 frames/s, the camera's own pace: no assertion depends on it
        i = 0
        while not done.wait(0.1):
            yield pictures[i % 3]
            i += 1

    def answered_since_last_error(results: list[FrameResult]) -> int:
        errors = [i for i, r in enumerate(results) if not r.ok]
        return len(results) - 1 - errors[-1] if errors else 0

    sink = Recorder()
    session = StreamSession(
        Source("camera", camera(), live=True),
        sink,
        StreamOptions(url=options.endpoints.grpc_url, tier=TIER, max_inflight=2, backoff_s=(0.2, 1.0)),
    )
    runner = threading.Thread(target=session.run)
    server.start()
    try:
        runner.start()
        sink.wait_for("answers", lambda rs: sum(r.ok for r in rs) >= 3, WAIT_S)
        # SIGTERM as an orchestrator sends it, without Server.stop()'s drain: it waits for the traffic to
        # stop, and a live client does not stop sending.
        assert server.process is not None
        server.process.terminate()
        server.process.wait(60)
        sink.wait_for("errors after the stop", lambda rs: any(not r.ok for r in rs), WAIT_S)
        server.start()
        seen = sink.wait_for("3 answers after the last error", lambda rs: answered_since_last_error(rs) >= 3, WAIT_S)
    finally:
        done.set()
        runner.join(WAIT_S)
        server.stop()
    assert not runner.is_alive()

    stats, results = session.stats, sink.results
    assert_in_order(results)
    assert stats.errors > 0 and stats.reconnects >= 1 and stats.stopped is None
    assert stats.sent + stats.dropped == stats.produced and stats.sent == len(results) == stats.ok + stats.errors
    story = [r.ok for r in results[:seen]]  # when the third answer after the restart came
    assert story[:3] == [True] * 3 and not all(story) and story[-3:] == [True] * 3

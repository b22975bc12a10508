"""The track tier end to end: each camera a sequence, ids as Ultralytics' BYTETracker gives them, limits.

The video is tests/tracking_video.py's (persons of the sample photos crossing and passing behind a
pillar), JPEG-encoded and sent as a camera's frames. The reference is Ultralytics' own BYTETracker fed,
frame by frame, the served detections down to the tracker's threshold (the streaming tier's answer at
CONF_THRESHOLD = spec.TRACK_DETECTION_CONF: the same detector, letterbox and NMS).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from pipelines import paths, spec
from tests import tracking_video
from tests.server.conftest import SAMPLES, wait_until
from tests.tracking_reference import reference, reference_ids
from tools import render
from tools.client.people import PeopleClient
from tools.server.endpoints import Endpoints
from tools.server.triton import Server, ServerOptions

TIER = "track"
Answer = dict[str, np.ndarray]


def jpeg(frame: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return [jpeg(f) for f in tracking_video.video().frames]


def send(client: PeopleClient, camera: str, frames: list[bytes], start: bool = True, end: bool = True) -> list[Answer]:
    """A camera's frames one after another, as one sequence."""
    last = len(frames) - 1
    flags = [{"sequence_start": start and k == 0, "sequence_end": end and k == last} for k in range(len(frames))]
    return [client.infer_raw(TIER, client.inputs([f]), sequence_id=camera, **flags[k]) for k, f in enumerate(frames)]


def send_in_flight(client: PeopleClient, camera: str, frames: list[bytes], window: int) -> list[Answer]:
    """The same with `window` frames in flight at once on one gRPC stream: Triton receives a stream's
    requests in the order they were sent (separate calls, even on one channel, may arrive in any order)."""
    answers: list[Answer | None] = [None] * len(frames)
    errors: list[Exception] = []  # tritonclient drops a failed request's id
    room = threading.Semaphore(window)
    done = threading.Semaphore(0)

    def callback(result: Any, error: Exception | None) -> None:
        if error is not None:
            errors.append(error)
        else:
            answers[int(result.get_response().id)] = {t.name: result.as_numpy(t.name) for t in spec.tier(TIER).outputs}
        room.release()
        done.release()

    model = spec.tier(TIER).model(spec.Step.ENSEMBLE)
    client.client.start_stream(callback=callback)
    try:
        for k, f in enumerate(frames):
            assert room.acquire(timeout=120)
            flags = {"sequence_id": camera, "sequence_start": k == 0, "sequence_end": k == len(frames) - 1}
            client.client.async_stream_infer(model, client.inputs([f]), request_id=str(k), **flags)
        for _ in frames:
            assert done.acquire(timeout=120)
    finally:
        client.client.stop_stream()
    assert all(isinstance(a, dict) for a in answers), errors
    return answers  # type: ignore[return-value]


def ids(answers: list[Answer]) -> list[list[int]]:
    """Each frame's TRACK_IDS of its answered persons."""
    return [a[spec.TRACK_IDS.name][0, : int(a[spec.NUM_DETECTIONS.name][0, 0])].tolist() for a in answers]


@pytest.fixture(scope="module")
def alone(grpc_client: PeopleClient, frames: list[bytes]) -> list[Answer]:
    return send(grpc_client, "camera-alone", frames)


def test_ids_are_ultralytics_bytetrack_on_the_served_detections(
    grpc_client: PeopleClient, frames: list[bytes], alone: list[Answer]
) -> None:
    tracker = reference()
    seen = set()
    for k, (frame, answer) in enumerate(zip(frames, alone, strict=True)):
        low = grpc_client.infer_raw("streaming", grpc_client.inputs([frame], conf=spec.TRACK_DETECTION_CONF))
        kept = int(low[spec.NUM_DETECTIONS.name][0, 0])
        boxes, scores = low[spec.BOXES.name][0, :kept], low[spec.SCORES.name][0, :kept]
        expected = reference_ids(tracker, boxes, scores)
        n = int(answer[spec.NUM_DETECTIONS.name][0, 0])
        np.testing.assert_array_equal(answer[spec.BOXES.name][0, :n], boxes[:n], err_msg=f"frame {k}: boxes")
        assert ids([answer])[0] == expected[:n].tolist(), f"frame {k}: ids {ids([answer])[0]}, Ultralytics {expected}"
        assert (answer[spec.TRACK_IDS.name][0, n:] == -1).all(), f"frame {k}: padding"
        seen |= set(expected[:n].tolist()) - {-1}
    assert len(seen) >= len(tracking_video.PERSONS), f"the video's persons were not all tracked: {seen}"


def test_frames_in_flight_reach_the_tracker_in_order(
    grpc_client: PeopleClient, frames: list[bytes], alone: list[Answer]
) -> None:
    """Six of a camera's frames in flight at once on a stream: every step keeps their order, so the ids are a
    lone run's."""
    assert ids(send_in_flight(grpc_client, "camera-in-flight", frames, window=6)) == ids(alone)


def test_cameras_interleaved_never_share_or_swap_ids(
    grpc_client: PeopleClient, frames: list[bytes], alone: list[Answer]
) -> None:
    late = frames[5:]
    late_alone = send(grpc_client, "camera-late-alone", late)
    a, b = [], []
    for k in range(max(len(frames), len(late))):  # two cameras' frames alternate on one server
        if k < len(frames):
            a.append(grpc_client.infer_raw(TIER, grpc_client.inputs([frames[k]]), sequence_id="camera-a",
                                           sequence_start=k == 0, sequence_end=k == len(frames) - 1))  # fmt: skip
        if k < len(late):
            b.append(grpc_client.infer_raw(TIER, grpc_client.inputs([late[k]]), sequence_id=7,
                                           sequence_start=k == 0, sequence_end=k == len(late) - 1))  # fmt: skip
    assert ids(a) == ids(alone)
    assert ids(b) == ids(late_alone), "a numeric sequence id works as a camera too"


def test_end_then_start_starts_fresh_ids(grpc_client: PeopleClient, frames: list[bytes], alone: list[Answer]) -> None:
    first = send(grpc_client, "camera-again", frames[:6])
    again = send(grpc_client, "camera-again", frames[:6])
    assert ids(first) == ids(again) == ids(alone)[:6]


def test_the_voted_gender_stays_while_the_face_is_hidden(grpc_client: PeopleClient) -> None:
    """zidane.jpg with the persons' heads covered every other frame: GENDER goes undetermined there, while
    each track keeps the gender voted over the frames where its face was read."""
    photo = cv2.imread(str(SAMPLES["zidane.jpg"]), cv2.IMREAD_COLOR)
    (found,) = grpc_client.detect([SAMPLES["zidane.jpg"].read_bytes()], "streaming")
    covered = photo.copy()
    for person in found:
        x1, y1, x2, y2 = (int(v) for v in person.box)
        cv2.rectangle(covered, (x1, y1), (x2, y1 + (y2 - y1) // 3), (128, 128, 128), thickness=-1)
    answers = send(grpc_client, "camera-faces", [jpeg(covered if k % 2 else photo) for k in range(8)])
    voted: dict[int, set[int]] = {}
    hidden = 0
    for k, a in enumerate(answers):
        n = int(a[spec.NUM_DETECTIONS.name][0, 0])
        for track, gender, per_frame in zip(a[spec.TRACK_IDS.name][0, :n], a[spec.TRACK_GENDER.name][0, :n],
                                            a[spec.GENDER.name][0, :n], strict=True):  # fmt: skip
            if k % 2 and per_frame == spec.UNDETERMINED and gender != spec.UNDETERMINED:
                hidden += 1
            if track >= 0 and gender != spec.UNDETERMINED:
                voted.setdefault(int(track), set()).add(int(gender))
    assert voted and all(len(g) == 1 for g in voted.values()), f"a track's voted gender changed: {voted}"
    assert hidden > 0, "no frame had a hidden face with a voted gender: the case proves nothing"


# --- Limits: a server of its own, with two camera slots and a short idle timeout -------------------------------

LIMITS = replace(spec.TRACKING[spec.Variant.CPU], cameras=2, idle_timeout_us=3_000_000)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Server]:
    """The track tier alone, rendered with LIMITS (its models copied from model_repository/)."""
    repository = tmp_path_factory.mktemp("track-repository")
    tier = spec.tier(TIER)
    for step in (*tier.models, spec.Step.ENSEMBLE):
        shutil.copytree(paths.REPOSITORY / tier.model(step), repository / tier.model(step),
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    monkeypatch_module.setitem(spec.TRACKING, spec.Variant.CPU, LIMITS)
    for relative, text in render.files():
        if relative.parts[0] in {tier.model(spec.Step.PREPROCESS), tier.model(spec.Step.TRACKER)}:
            (repository / relative).write_text(text)
    log = tmp_path_factory.mktemp("triton") / "limits.log"
    with Server(ServerOptions(repository=repository, endpoints=Endpoints.free()), log_path=log) as server:
        yield server
        stopped = server.stop()
        assert stopped.clean, f"refused cameras must leave nothing unfinished: {stopped}"


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as m:
        yield m


def _refused(client: PeopleClient, frame: bytes, camera: str, start: bool) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        client.infer_raw(TIER, client.inputs([frame]), sequence_id=camera, sequence_start=start)
    return e.value


def _tracker_gauge(server: Server, metric: str) -> float:
    return server.stats.metrics()[metric, spec.tier(TIER).model(spec.Step.TRACKER)]


def test_cameras_beyond_the_slots_are_refused_and_idle_ones_freed(
    limited: Server, frames: list[bytes], alone: list[Answer]
) -> None:
    """Two slots: a third camera is refused with a clear error and harms nobody; ending one frees its slot;
    a camera silent past the idle timeout is forgotten (it must start again), and its slot goes to the next
    camera, which starts with fresh ids while a busy camera keeps its own: no state leaks through a slot
    that timed out under load (triton-inference-server/server #7117)."""
    client = PeopleClient(limited.options.endpoints.grpc_url)
    first = send(client, "first", frames[:4], end=False)
    idle = send(client, "idle", frames[:4], end=False)
    assert _tracker_gauge(limited, "people_track_cameras") == 2, "the tracker publishes the cameras it holds"
    assert _tracker_gauge(limited, "people_track_state_bytes") > 0
    full = _refused(client, frames[0], "third", start=True)
    assert full.status() == "StatusCode.UNAVAILABLE" and "camera slots are in use" in full.message(), full
    rest = send(client, "first", frames[4:8], start=False, end=True)  # the refusal harmed nobody; END frees
    assert ids(first + rest) == ids(alone)[:8]
    assert ids(send(client, "third", frames[:4])) == ids(alone)[:4], "the freed slot takes a fresh camera"

    # A busy camera sends while the idle one stays silent past the timeout.
    silent_until = time.monotonic() + LIMITS.idle_timeout_us / 1e6 + 1.0
    busy = []
    for k, frame in enumerate(frames):
        busy.append(client.infer_raw(TIER, client.inputs([frame]), sequence_id="busy", sequence_start=k == 0))
        if time.monotonic() > silent_until:
            break
    time.sleep(max(silent_until - time.monotonic(), 0))
    assert ids(busy) == ids(alone)[: len(busy)]
    gone = _refused(client, frames[4], "idle", start=False)
    assert gone.status() == "StatusCode.INVALID_ARGUMENT" and "START" in gone.message().upper(), gone
    assert ids(send(client, "newcomer", frames[:4])) == ids(alone)[:4], "fresh ids in the slot that timed out"
    assert ids(idle) == ids(alone)[:4]
    assert _tracker_gauge(limited, "people_track_cameras") == 1, "ended and idle cameras are not held: only busy"
    wait_until(limited.healthy, 30, "the server healthy after the refusals")

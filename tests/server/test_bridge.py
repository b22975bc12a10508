"""The camera-fleet bridge against a real tritonserver, a real Redis 7 and a real Kafka-protocol broker (Tansu).

Each guarantee of docs/camera-fleets.md is judged from outcomes: the ids on the topic, the group's
pending list in Redis, the bridge's own metrics and exit status. Every wait polls a condition with a
generous timeout; nothing depends on the machine's speed.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from pipelines import spec
from tests import tracking_video
from tests.server.bridge_rig import BridgeProcess, Events, group_state, publish, stop_all
from tests.server.conftest import SAMPLES, tier_repository, wait_until
from tests.tracking_reference import served_reference_ids
from tools.bridge import event
from tools.bridge.local import LocalBroker, LocalRedis
from tools.client.people import PeopleClient
from tools.server.endpoints import Endpoints, free_port
from tools.server.triton import Server, ServerOptions

TIER = "streaming"
WAIT_S = 240  # for every id of a run on a busy 2-core machine; runs take seconds here


def _small_jpegs() -> list[bytes]:
    """The sample photos at 320 pixels wide: small entries, the same persons to find."""
    out = []
    for path in SAMPLES.values():
        image = cv2.imread(str(path))
        h, w = image.shape[:2]
        ok, data = cv2.imencode(".jpg", cv2.resize(image, (320, round(h * 320 / w))), [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        out.append(data.tobytes())
    return out


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A Redis 7 and a Tansu broker for the session, on free ports, their files in a temporary folder."""
    workdir = tmp_path_factory.mktemp("bridge-services")
    with LocalRedis(workdir) as r, LocalBroker(workdir) as k:
        client = redis.Redis.from_url(r.url)
        assert int(client.info("server")["redis_version"].split(".")[0]) >= 7, "KEDA's lagCount needs Redis 7"
        yield SimpleNamespace(redis=r, broker=k, client=client, dir=workdir)
        client.close()


@pytest.fixture(scope="session")
def jpegs() -> list[bytes]:
    return _small_jpegs()


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[list[BridgeProcess]]:
    """Bridges a test starts; any still running at the end is killed (and its log kept in tmp_path)."""
    started: list[BridgeProcess] = []
    yield started
    stop_all(started)


def start_bridge(started: list[BridgeProcess], tmp: Path, services: SimpleNamespace, url: str, topic: str,
                 streams: list[str], *extra: str, kafka: str | None = None, tier: str = TIER
                 ) -> BridgeProcess:  # fmt: skip
    args = ["--redis", services.redis.url, "--kafka", kafka or services.broker.address, "--topic", topic,
            "--url", url, "--tier", tier, *(a for s in streams for a in ("--stream", s)), *extra]  # fmt: skip
    b = BridgeProcess(tmp / f"bridge-{len(started)}.log", *args)
    started.append(b)
    return b


def entry_order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.rsplit("/", 1)[-1].split("-")
    return int(ms), int(seq)


# --- Three cameras, bad entries mixed in: one run, judged by several tests ------------------------------


@pytest.fixture(scope="module")
def fleet(services: SimpleNamespace, server: Server, jpegs: list[bytes],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:  # fmt: skip
    """Two streams: `fleet-a` carries cameras cam-0 and cam-1 (a `camera` field), `fleet-b` one camera named by
    the stream. 40 frames each, published before the bridge starts (so it fills its slots at once), and five
    bad entries: no jpeg, not an image, over --max-bytes, a threshold the server refuses, one that is no number."""
    r = services.client
    good: dict[str, tuple[str, bytes]] = {}  # id -> (camera, jpeg)
    bad: dict[str, tuple[str, str]] = {}  # id -> (what, expected text in the message)
    for i in range(40):
        for stream, camera in (("fleet-a", "cam-0"), ("fleet-a", "cam-1"), ("fleet-b", None)):
            jpeg = jpegs[(i + len(good)) % len(jpegs)]
            (entry,) = publish(r, stream, [jpeg], camera)
            good[f"{stream}/{entry}"] = (camera or stream, jpeg)
        if i == 5:
            bad[f"fleet-a/{publish(r, 'fleet-a', [None], 'cam-0')[0]}"] = ("bridge", "no 'jpeg' field")
        if i == 11:
            bad[f"fleet-a/{publish(r, 'fleet-a', [b'not a picture at all'], 'cam-1')[0]}"] = ("server", "IMAGE")
        if i == 17:
            big = jpegs[0] + bytes(100_001 - len(jpegs[0]))
            bad[f"fleet-b/{publish(r, 'fleet-b', [big])[0]}"] = ("bridge", "over the limit")
        if i == 23:
            bad[f"fleet-a/{publish(r, 'fleet-a', [jpegs[0]], 'cam-0', conf='1.5')[0]}"] = (
                "server", spec.CONF_THRESHOLD.name)  # fmt: skip
        if i == 29:
            bad[f"fleet-b/{publish(r, 'fleet-b', [jpegs[1]], None, iou='wide')[0]}"] = ("bridge", "not a number")
    tmp = tmp_path_factory.mktemp("fleet")
    started: list[BridgeProcess] = []
    bridge = start_bridge(started, tmp, services, server.options.endpoints.grpc_url, "fleet", ["fleet-a", "fleet-b"],
                          "--max-inflight", "3", "--max-bytes", "100000")  # fmt: skip
    events = Events(services.broker.address, "fleet")
    try:
        events.wait_for([*good, *bad], WAIT_S)
        wait_until(lambda: bridge.metric("bridge_entries_acked_total") >= len(good) + len(bad), 60, "acks")
        metrics = bridge.metrics()
        bridge.signal(signal.SIGTERM)
        code = bridge.wait(90)
        state = {s: group_state(r, s) for s in ("fleet-a", "fleet-b")}
        yield SimpleNamespace(good=good, bad=bad, items=list(events.items), metrics=metrics, code=code, state=state,
                              log=bridge.output())  # fmt: skip
    finally:
        events.close()
        stop_all(started)


def test_one_event_per_entry_in_camera_order(fleet: SimpleNamespace) -> None:
    """Every entry has exactly one event; a camera's events are in one partition, in stream order, keyed by it."""
    ids = [e["id"] for _, _, e in fleet.items]
    assert sorted(ids) == sorted([*fleet.good, *fleet.bad]), "one event per entry, none missing, none twice"
    by_camera: dict[str, list[tuple[str, int, dict[str, Any]]]] = defaultdict(list)
    for key, partition, e in fleet.items:
        assert key == e["camera"], "the Kafka key is the camera"
        by_camera[e["camera"]].append((key, partition, e))
    assert set(by_camera) == {"cam-0", "cam-1", "fleet-b"}, "camera from the field, else the stream's name"
    for camera, items in by_camera.items():
        assert len({p for _, p, _ in items}) == 1, f"{camera}: one partition"
        order = [entry_order(e["id"]) for _, _, e in items]
        assert order == sorted(order), f"{camera}: events out of stream order"


def test_events_carry_the_clients_persons(fleet: SimpleNamespace, grpc_client: PeopleClient) -> None:
    """A good frame's persons are what `python -m tools.client` prints for the same bytes, face boxes included."""
    expected: dict[bytes, list[dict[str, Any]]] = {}
    for jpeg in {j for _, j in fleet.good.values()}:
        (persons,) = grpc_client.detect([jpeg], TIER)
        found = event.persons(grpc_client.infer_raw(TIER, grpc_client.inputs([jpeg])))
        assert found == [p.as_json() for p in persons]
        assert any(p["face"] for p in found), "the sample photos have visible faces"
        expected[jpeg] = found
    for _, _, e in fleet.items:
        if e["id"] in fleet.good:
            camera, jpeg = fleet.good[e["id"]]
            assert e["error"] is None and e["tier"] == TIER and e["camera"] == camera
            assert e["persons"] == expected[jpeg] and e["count"] == len(expected[jpeg])
            assert e["latency_ms"] >= 0 and e["ts"] > 0


def test_bad_entries_become_error_events(fleet: SimpleNamespace) -> None:
    events = {e["id"]: e for _, _, e in fleet.items}
    for entry_id, (who, text) in fleet.bad.items():
        e = events[entry_id]
        assert e["error"]["code"] == "INVALID_ARGUMENT", e
        assert text in e["error"]["message"], (who, e["error"])
        assert e["count"] is None and e["persons"] is None
    m = fleet.metrics
    assert m["bridge_errors_total{kind=invalid_entry}"] == 3, "no jpeg, too big, not a number: the bridge's checks"
    assert m["bridge_errors_total{kind=invalid_argument}"] == 2, "not an image, conf 1.5: the server's answers"


def test_nothing_pending_and_metrics_add_up(fleet: SimpleNamespace) -> None:
    """Every entry read was acknowledged after its event; at most --max-inflight held, and that many reached."""
    total = len(fleet.good) + len(fleet.bad)
    for stream, state in fleet.state.items():
        assert state["pending"] == 0 and state["lag"] == 0, (stream, state)
    m = fleet.metrics
    assert m["bridge_entries_read_total"] == m["bridge_entries_acked_total"] == total
    assert m["bridge_events_produced_total{outcome=ok}"] == len(fleet.good)
    assert m["bridge_events_produced_total{outcome=error}"] == len(fleet.bad)
    assert m["bridge_max_inflight"] == 3
    assert m["bridge_inflight_peak"] == 3, "never above --max-inflight, and the backlog filled every slot"
    assert m["bridge_latency_seconds_count"] == total
    assert fleet.code == 0 and "stopped cleanly" in fleet.log


# --- The track tier: each camera a sequence -------------------------------------------------------------


@pytest.fixture(scope="module")
def tracked(services: SimpleNamespace, server: Server, grpc_client: PeopleClient,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:  # fmt: skip
    """tests/tracking_video.py's camera through the track tier: `track-a` carries cameras `lobby` (its 20 frames)
    and `gate` (frames 5 on), interleaved; `track-b` one camera named by the stream (frames 0-9). A bridge
    with four slots delivers them all and stops; then frames 10-19 of `track-b` are published and the bridge
    starts again (the same consumer): its first frame starts the camera's sequence again, although the
    server still holds the old one. `expected`: Ultralytics' ids per camera on the served detections."""
    r = services.client
    frames = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
              for f in tracking_video.video().frames]  # fmt: skip
    ids: dict[str, list[str]] = defaultdict(list)  # camera -> its event ids, in stream order
    for k, jpeg in enumerate(frames):
        ids["lobby"] += [f"track-a/{i}" for i in publish(r, "track-a", [jpeg], "lobby")]
        if k >= 5:
            ids["gate"] += [f"track-a/{i}" for i in publish(r, "track-a", [jpeg], "gate")]
    ids["track-b"] = [f"track-b/{i}" for i in publish(r, "track-b", frames[:10])]
    tmp = tmp_path_factory.mktemp("tracked")
    started: list[BridgeProcess] = []
    args = (services, server.options.endpoints.grpc_url, "tracked", ["track-a", "track-b"],
            "--max-inflight", "4", "--consumer", "tracker")  # fmt: skip
    try:
        first = start_bridge(started, tmp, *args, tier="track")
        events = Events(services.broker.address, "tracked")
        try:
            events.wait_for([i for camera in ids.values() for i in camera], WAIT_S)
            first_metrics = first.metrics()
            first.signal(signal.SIGTERM)
            assert first.wait(90) == 0
            restarted = [f"track-b/{i}" for i in publish(r, "track-b", frames[10:])]
            second = start_bridge(started, tmp, *args, tier="track")
            events.wait_for(restarted, WAIT_S, "the restarted bridge's events")
            second_metrics = second.metrics()
        finally:
            events.close()
        ids["track-b"] += restarted
        full = served_reference_ids(grpc_client, frames)
        expected = {"lobby": full, "gate": served_reference_ids(grpc_client, frames[5:]),
                    "track-b": full[:10] + served_reference_ids(grpc_client, frames[10:])}  # fmt: skip
        yield SimpleNamespace(ids=ids, events={e["id"]: e for _, _, e in events.items}, expected=expected,
                              restarted=restarted, metrics=(first_metrics, second_metrics))  # fmt: skip
    finally:
        stop_all(started)


def test_tracked_events_carry_ultralytics_ids_per_camera(tracked: SimpleNamespace) -> None:
    """Each camera's events carry the ids Ultralytics' BYTETracker gives its frames in stream order (so they
    reached the tracker one by one, in order, interleaved with another camera's), and the voted gender."""
    for camera, ids in tracked.ids.items():
        for k, (entry_id, expected) in enumerate(zip(ids, tracked.expected[camera], strict=True)):
            e = tracked.events[entry_id]
            assert e["error"] is None and e["tier"] == "track" and e["camera"] == camera, e
            served = [p["track_id"] for p in e["persons"]]
            assert served == expected[: len(served)].tolist(), f"{camera} frame {k}: {served}, Ultralytics {expected}"
            assert all("track_gender" in p and "face" in p for p in e["persons"])
    seen = {p["track_id"] for i in tracked.ids["lobby"] for p in tracked.events[i]["persons"]} - {-1}
    assert len(seen) >= len(tracking_video.PERSONS), "the video's persons were tracked"


def test_a_camera_is_one_sequence_until_its_bridge_restarts(tracked: SimpleNamespace) -> None:
    """Every event names its camera's sequence: the first event of the camera, and after the bridge restarted,
    its first event since (a fresh sequence: ids from 1 again, as the reference fed only those frames)."""
    sequences = {camera: [tracked.events[i]["sequence"] for i in ids] for camera, ids in tracked.ids.items()}
    assert sequences["lobby"] == [tracked.ids["lobby"][0]] * len(tracked.ids["lobby"])
    assert sequences["gate"] == [tracked.ids["gate"][0]] * len(tracked.ids["gate"])
    assert sequences["track-b"] == [tracked.ids["track-b"][0]] * 10 + [tracked.restarted[0]] * 10
    before, after = (m["bridge_sequence_starts_total"] for m in tracked.metrics)
    assert (before, after) == (3, 1), "one start per camera, none again while it ran"


# --- Crashes, outages, stops and peers ------------------------------------------------------------------


def test_sigkill_then_a_peer_delivers_everything(services: SimpleNamespace, server: Server, jpegs: list[bytes],
                                                 bridges: list[BridgeProcess], tmp_path: Path) -> None:  # fmt: skip
    """A bridge killed mid-run leaves what it held pending; another takes it over (XAUTOCLAIM): every id arrives."""
    ids = [f"kill/{i}" for i in publish(services.client, "kill", jpegs * 12, "door")]
    url = server.options.endpoints.grpc_url
    claim = ("--claim-idle", "3", "--claim-interval", "0.5")
    first = start_bridge(bridges, tmp_path, services, url, "kill", ["kill"], "--consumer", "first", *claim)
    events = Events(services.broker.address, "kill")
    try:
        wait_until(lambda: len(events.ids()) >= 4, WAIT_S, "the first bridge's first events")
        first.signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        held = group_state(services.client, "kill")["consumers"].get("first", 0)
        assert held > 0, "the killed bridge held entries (the case to prove)"
        second = start_bridge(bridges, tmp_path, services, url, "kill", ["kill"], "--consumer", "second", *claim)
        events.wait_for(ids, WAIT_S)
        wait_until(lambda: group_state(services.client, "kill")["pending"] == 0, 60, "nothing pending")
        assert second.metric("bridge_reclaimed_total") >= held, "the peer took over what the dead one held"
        assert {e["id"] for _, _, e in events.items} == set(ids), "duplicates, if any, carry an id of the stream"
    finally:
        events.close()


def test_broker_down_at_start_then_back(services: SimpleNamespace, server: Server, jpegs: list[bytes],
                                        bridges: list[BridgeProcess], tmp_path: Path) -> None:  # fmt: skip
    """No broker at start: deliveries fail and are retried, nothing is acknowledged, reading stops at the
    slots; once the broker is up, every id is delivered."""
    port = free_port()
    ids = [f"nobroker/{i}" for i in publish(services.client, "nobroker", jpegs * 6, "gate")]
    bridge = start_bridge(bridges, tmp_path, services, server.options.endpoints.grpc_url, "nobroker", ["nobroker"],
                          "--max-inflight", "2", "--kafka-config", "message.timeout.ms=2000",
                          kafka=f"127.0.0.1:{port}")  # fmt: skip
    wait_until(lambda: bridge.metric("bridge_retries_total{target=kafka}") >= 2, WAIT_S, "failed deliveries")
    state = group_state(services.client, "nobroker")
    assert bridge.metric("bridge_entries_acked_total") == 0, "nothing acknowledged while Kafka is down"
    assert 1 <= state["pending"] <= 2 and state["lag"] == len(ids) - state["pending"], f"held only its slots: {state}"
    with LocalBroker(tmp_path / "late-broker", port=port):
        events = Events(f"127.0.0.1:{port}", "nobroker")
        try:
            events.wait_for(ids, WAIT_S)
            wait_until(lambda: group_state(services.client, "nobroker")["pending"] == 0, 60, "nothing pending")
        finally:
            events.close()


def _streaming_only(tmp_path: Path) -> Server:
    """A server of its own (it is stopped mid-test) with only the streaming tier, on ports that stay the same."""
    options = ServerOptions(repository=tier_repository(tmp_path / "repository", TIER), endpoints=Endpoints.free())
    return Server(options, log_path=tmp_path / "tritonserver.log", ready_timeout_s=300)


def test_triton_restarted_mid_run(services: SimpleNamespace, jpegs: list[bytes], bridges: list[BridgeProcess],
                                  tmp_path: Path) -> None:  # fmt: skip
    """Triton stops mid-run: requests are retried, nothing is acknowledged while it is down, reading stops at
    the slots; after the restart on the same ports every id arrives."""
    triton = _streaming_only(tmp_path)
    triton.start()
    try:
        before = [f"restart/{i}" for i in publish(services.client, "restart", jpegs * 4, "hall")]
        bridge = start_bridge(bridges, tmp_path, services, triton.options.endpoints.grpc_url, "restart", ["restart"],
                              "--max-inflight", "3")  # fmt: skip
        events = Events(services.broker.address, "restart")
        try:
            events.wait_for(before, WAIT_S, "the events before the outage")
            wait_until(lambda: bridge.metric("bridge_entries_acked_total") == len(before), 60, "their acks")
            triton.stop()
            during = [f"restart/{i}" for i in publish(services.client, "restart", jpegs * 5, "hall")]
            wait_until(lambda: bridge.metric("bridge_retries_total{target=triton}") >= 3, WAIT_S, "retries")
            state = group_state(services.client, "restart")
            # Reading stops at the first failed request: it holds 1 to 3 entries and has read no others.
            assert 1 <= state["pending"] <= 3 and state["lag"] == len(during) - state["pending"], state
            assert bridge.metric("bridge_entries_acked_total") == len(before), "nothing acknowledged while down"
            triton.start()
            events.wait_for([*before, *during], WAIT_S)
            wait_until(lambda: group_state(services.client, "restart")["pending"] == 0, 60, "nothing pending")
        finally:
            events.close()
    finally:
        triton.stop(drain=False)


def test_sigterm_finishes_what_it_read(services: SimpleNamespace, server: Server, jpegs: list[bytes],
                                       bridges: list[BridgeProcess], tmp_path: Path) -> None:  # fmt: skip
    """SIGTERM mid-run: it stops reading, delivers and acknowledges what it held, exits 0."""
    ids = [f"term/{i}" for i in publish(services.client, "term", jpegs * 12, "gate")]
    bridge = start_bridge(bridges, tmp_path, services, server.options.endpoints.grpc_url, "term", ["term"])
    events = Events(services.broker.address, "term")
    try:
        wait_until(lambda: len(events.ids()) >= 4, WAIT_S, "the first events")
        bridge.signal(signal.SIGTERM)
        assert bridge.wait(90) == 0
        state = group_state(services.client, "term")
        assert state["pending"] == 0, f"it left entries it read unacknowledged: {state}"
        assert 0 < state["lag"] < len(ids), f"stopped mid-run (the case to prove): {state}"
        read = ids[: len(ids) - state["lag"]]
        events.wait_for(read, 60, "an event for every entry it read")
        assert "stopped cleanly" in bridge.output()
    finally:
        events.close()


def test_second_signal_leaves_the_rest_to_peers(services: SimpleNamespace, jpegs: list[bytes],
                                                bridges: list[BridgeProcess], tmp_path: Path) -> None:  # fmt: skip
    """With no server to answer, a first SIGTERM waits for what is held; a second one exits at once (status 1),
    its entries still pending for a peer."""
    publish(services.client, "twice", jpegs * 3, "gate")
    nowhere = f"127.0.0.1:{free_port()}"
    bridge = start_bridge(bridges, tmp_path, services, nowhere, "twice", ["twice"], "--max-inflight", "2",
                          "--stop-timeout", "600")  # fmt: skip
    wait_until(lambda: bridge.metric("bridge_retries_total{target=triton}") >= 1, WAIT_S, "failed requests")
    bridge.signal(signal.SIGTERM)
    wait_until(lambda: "finishing 2 entr(ies) held" in bridge.output(), 60, "the first signal's stop")
    assert bridge.process.poll() is None, "it waits for what it holds"
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 1
    state = group_state(services.client, "twice")
    assert state["consumers"] and sum(state["consumers"].values()) == 2, f"left pending for peers: {state}"


def test_two_bridges_share_the_work(services: SimpleNamespace, server: Server, jpegs: list[bytes],
                                    bridges: list[BridgeProcess], tmp_path: Path) -> None:  # fmt: skip
    ids = [f"pair/{i}" for i in publish(services.client, "pair", jpegs * 10, "yard")]
    url = server.options.endpoints.grpc_url
    pair = [start_bridge(bridges, tmp_path, services, url, "pair", ["pair"], "--consumer", name, "--max-inflight", "2")
            for name in ("left", "right")]  # fmt: skip
    events = Events(services.broker.address, "pair")
    try:
        events.wait_for(ids, WAIT_S)
        wait_until(lambda: group_state(services.client, "pair")["pending"] == 0, 60, "nothing pending")
        done = [b.metric("bridge_entries_acked_total") for b in pair]
        assert all(n > 0 for n in done) and sum(done) >= len(ids), f"both did work: {done}"
        assert {e["id"] for _, _, e in events.items} == set(ids)
    finally:
        events.close()


def test_an_entry_delivered_too_often_is_dead_lettered(services: SimpleNamespace, server: Server,
                                                       jpegs: list[bytes], bridges: list[BridgeProcess],
                                                       tmp_path: Path) -> None:  # fmt: skip
    """An entry that bridges kept taking and never finished (as if each crashed on it) goes, past
    --max-deliveries, to the dead-letter stream with its reason and data, with an error event; no loop."""
    r = services.client
    r.xgroup_create("poison", "people", id="0", mkstream=True)
    (entry,) = publish(r, "poison", [jpegs[0]], "gate")
    r.xreadgroup("people", "crashed", {"poison": ">"})
    r.xclaim("poison", "people", "crashed", 0, [entry], retrycount=5)  # four more crashed deliveries
    (fine,) = publish(r, "poison", [jpegs[1]], "gate")
    start_bridge(bridges, tmp_path, services, server.options.endpoints.grpc_url, "poison", ["poison"],
                 "--max-deliveries", "5", "--claim-idle", "1", "--claim-interval", "0.5")  # fmt: skip
    events = Events(services.broker.address, "poison")
    try:
        events.wait_for([f"poison/{entry}", f"poison/{fine}"], WAIT_S)
        wait_until(lambda: group_state(r, "poison")["pending"] == 0, 60, "nothing pending")
    finally:
        events.close()
    by_id = {e["id"]: e for _, _, e in events.items}
    assert (by_id[f"poison/{entry}"]["error"] or {}).get("code") == "DEAD_LETTER", by_id[f"poison/{entry}"]
    assert by_id[f"poison/{fine}"]["error"] is None
    ((_, dead),) = r.xrange("poison:dead")
    assert dead[b"source_id"].decode() == entry and dead[b"jpeg"] == jpegs[0]
    assert b"delivered 6 times" in dead[b"reason"] and dead[b"deliveries"] == b"6"


def test_frames_published_from_a_video(services: SimpleNamespace, tmp_path: Path) -> None:
    """`python -m tools.bridge.publish` reads a video as the video client does; MAXLEN caps the stream."""
    import subprocess
    import sys

    from tests.server.conftest import write_clip
    from tools.server.triton import ROOT

    frames = [np.full((120, 160, 3), i * 20, np.uint8) for i in range(12)]
    clip = write_clip(tmp_path / "clip.mp4", frames)
    out = subprocess.run([sys.executable, "-m", "tools.bridge.publish", str(clip), "--redis", services.redis.url,
                          "--stream", "video", "--camera", "door", "--maxlen", "5", "--conf", "0.3"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"published": 12' in out.stdout
    entries = services.client.xrange("video")
    assert len(entries) == 5, "capped at --maxlen, the oldest frames dropped"
    _, f = entries[-1]
    assert f[b"camera"] == b"door" and f[b"conf"] == b"0.3" and f[b"jpeg"][:3] == b"\xff\xd8\xff"

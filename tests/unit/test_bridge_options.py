"""The bridge's options, an entry's fields and the event, without a server (tools/bridge)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from pipelines import spec
from tools.bridge import event
from tools.bridge.entry import BadEntry, Entry, capture_ts, frame
from tools.bridge.inference import Outcome, classify, code_of
from tools.bridge.options import REQUIRED_KAFKA, Options, parse
from tools.bridge.redis_in import RedisIn


def test_defaults_are_the_issues() -> None:
    options, _ = parse([])
    assert options.redis == "redis://127.0.0.1:6379" and options.streams == ("frames",)
    assert options.group == "people" and options.topic == "people.detections" and options.tier == "streaming"
    assert options.consumer.rsplit("-", 1)[1].isdigit(), "host name and pid"
    config = options.producer_config()
    assert config["enable.idempotence"] == "true" and config["acks"] == "all"
    assert config["partitioner"] == "murmur2_random"


def test_kafka_config_adds_but_cannot_weaken_delivery() -> None:
    options, _ = parse(["--kafka-config", "security.protocol=SASL_SSL", "--kafka-config", "sasl.mechanism=PLAIN",
                        "--stream", "a", "--stream", "b", "--stream", "a"])  # fmt: skip
    assert options.producer_config()["security.protocol"] == "SASL_SSL" and options.streams == ("a", "b")
    for key in REQUIRED_KAFKA:
        with pytest.raises(SystemExit):
            parse(["--kafka-config", f"{key}=0"])
    for bad in (["--kafka-config", "novalue"], ["--max-inflight", "0"], ["--redis", "127.0.0.1:6379"]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_reads_never_ask_for_more_than_the_free_slots() -> None:
    """XREADGROUP's COUNT is per stream: the streams asked at once, times COUNT, stay within the free slots."""
    r = RedisIn(Options(streams=("a", "b", "c")), client=object())  # type: ignore[arg-type]
    seen = set()
    for free in range(1, 8):
        for _ in range(3):
            streams, each = r._share(list(r.options.streams), free)
            assert len(streams) * each <= free and each >= 1
            seen.update(streams)
    assert seen == {"a", "b", "c"}, "streams take turns"


def entry(**fields: str | bytes) -> Entry:
    return Entry("frames", "1700000000123-0", {k.encode(): v if isinstance(v, bytes) else v.encode()
                                                for k, v in fields.items()})  # fmt: skip


def test_entry_fields() -> None:
    f = frame(entry(jpeg=b"\xff\xd8\xff", camera="door", ts="1700000000.5", conf="0.4"))
    assert (f.camera, f.ts, f.conf, f.iou) == ("door", 1700000000.5, 0.4, None)
    assert entry(jpeg=b"x").camera == "frames", "the stream names a camera without the field"
    assert entry(jpeg=b"x").added_s == 1700000000.123 and entry(jpeg=b"x").event_id == "frames/1700000000123-0"
    assert capture_ts(entry(ts="soon")) is None, "a bad ts still lets the error event say when"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"camera": "door"}, "no 'jpeg' field"),
        ({"jpeg": b""}, "is empty"),
        ({"jpeg": b"\xff" * 11}, "over the limit of 10 bytes"),
        ({"jpeg": b"\xff", "iou": "wide"}, "'iou' is not a number"),
        ({"jpeg": b"\xff", "conf": "nan"}, "must be finite"),
        ({"jpeg": b"\xff", "camera": b"\xff\xfe"}, "not UTF-8"),
    ],
)
def test_bad_entries_say_why(fields: dict[str, str | bytes], message: str) -> None:
    with pytest.raises(BadEntry, match=message):
        frame(entry(**fields), max_bytes=10)


def test_failures_are_classified() -> None:
    def err(status: str) -> InferenceServerException:
        return InferenceServerException("m", status=f"StatusCode.{status}")

    assert classify(err("INVALID_ARGUMENT")) is Outcome.BAD
    for status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED"):
        assert classify(err(status)) is Outcome.RETRY, status
    assert classify(err("INTERNAL")) is Outcome.FAIL and classify(ValueError("x")) is Outcome.FAIL
    assert code_of(err("INVALID_ARGUMENT")) == "INVALID_ARGUMENT"


def outputs(boxes: list[list[float]], faces: list[list[float]], track_ids: list[int] | None = None
            ) -> dict[str, np.ndarray]:  # fmt: skip
    """One image's padded ensemble outputs with these persons (male, 0.9); with `track_ids`, the track tier's
    (each voted female, 0.7)."""
    n = len(boxes)
    types = {spec.DType.FP32: np.float32, spec.DType.INT32: np.int32, spec.DType.INT64: np.int64}
    tensors = spec.ENSEMBLE_OUTPUTS if track_ids is None else (*spec.ENSEMBLE_OUTPUTS, *spec.TRACK_OUTPUTS)
    out = {t.name: np.zeros((1, *t.dims), types[t.dtype]) for t in tensors}
    if track_ids is not None:
        out[spec.TRACK_IDS.name][0, :n] = track_ids
        out[spec.TRACK_GENDER.name][0, :n] = 0
        out[spec.TRACK_GENDER_SCORES.name][0, :n] = 0.7
    out[spec.NUM_DETECTIONS.name][0, 0] = n
    out[spec.BOXES.name][0, :n] = boxes
    out[spec.FACES.name][0, :n] = faces
    out[spec.SCORES.name][0, :n] = 0.8
    out[spec.GENDER.name][0, :n] = 1
    out[spec.GENDER_SCORES.name][0, :n] = 0.9
    return out


def test_event_persons_have_faces_or_null() -> None:
    found = event.persons(outputs([[1, 2, 30, 40], [5, 6, 7, 8]], [[2, 3, 10, 12], [0, 0, 0, 0]]))
    assert found[0]["face"] == [2.0, 3.0, 10.0, 12.0] and found[1]["face"] is None
    assert found[0]["box"] == [1.0, 2.0, 30.0, 40.0] and found[0]["gender"] == "male"
    e = event.build(entry(jpeg=b"x"), "door", None, "streaming", found)
    assert e["id"] == "frames/1700000000123-0" and e["count"] == 2 and e["error"] is None
    assert e["ts"] == 1700000000.123, "without ts, the entry's own time"
    bad = event.build(entry(), "door", 5.0, "streaming", error=("INVALID_ARGUMENT", "no jpeg"))
    assert bad["error"] == {"code": "INVALID_ARGUMENT", "message": "no jpeg"} and bad["persons"] is None


def test_secrets_from_files(tmp_path: Path) -> None:
    """The Redis URL and librdkafka's settings from mounted files: no password on the command line."""
    (tmp_path / "url").write_text("rediss://:pw@redis:6380/1\n")
    (tmp_path / "kafka.properties").write_text("# SASL\nsasl.mechanism=PLAIN\nsasl.password = s3cret\n")
    files = ["--redis-file", str(tmp_path / "url"), "--kafka-config-file", str(tmp_path / "kafka.properties")]
    options, _ = parse([*files, "--kafka-config", "sasl.mechanism=SCRAM-SHA-512"])
    assert options.redis == "rediss://:pw@redis:6380/1"
    assert options.kafka_config == {"sasl.mechanism": "SCRAM-SHA-512", "sasl.password": "s3cret"}
    (tmp_path / "bad.properties").write_text("acks=1\n")
    for bad in (["--redis-file", str(tmp_path / "missing")], ["--kafka-config-file", str(tmp_path / "bad.properties")]):
        with pytest.raises(SystemExit):
            parse(bad)

"""The clients on the track tier: the video client and the image client send a camera as one sequence.

The camera is tests/tracking_video.py's (persons of the sample photos crossing and passing behind a
pillar). The reference is Ultralytics' own BYTETracker fed, frame by frame, the served detections of the
same bytes (tests/tracking_reference.py), so equal ids also say the frames reached the tracker in order.
The bridge on the track tier is in test_bridge.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from pipelines import spec
from tests import tracking_video
from tests.server.conftest import write_clip
from tests.server.test_video import decoded
from tests.tracking_reference import served_reference_ids
from tools.client import images as image_client
from tools.client.people import PeopleClient, gender_counts
from tools.client.video import cli as video
from tools.client.video.media import FileSink, encode_jpeg
from tools.server.triton import Server

TIER = "track"
QUALITY = 90


def track_ids(persons: list[dict[str, Any]]) -> list[int]:
    return [p["track_id"] for p in persons]


def people(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """What a summary says of these lines: the distinct ids, counted by the gender last voted for each."""
    last = {p["track_id"]: p["track_gender"] for line in lines for p in line.get("persons", ()) if p["track_id"] >= 0}
    values = [spec.GENDER_LABELS.index(label) if label else spec.UNDETERMINED for label in last.values()]
    return {"unique": len(last), "genders": gender_counts(values)}


def test_video_client_sends_a_file_as_one_sequence(
    server: Server, grpc_client: PeopleClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--tier track` with three frames in flight on one stream: every frame answered in the one sequence
    that its first frame started, each frame's ids Ultralytics' on the same bytes, and the summary counts
    the distinct ids (at least the video's persons) by the gender last voted for each."""
    clip = write_clip(tmp_path / "walk.mp4", tracking_video.video().frames)
    out = tmp_path / "tracked"
    argv = [str(clip), "--url", server.options.endpoints.grpc_url, "--tier", TIER, "--out", str(out),
            "--max-inflight", "3", "--jpeg-quality", str(QUALITY), "--no-progress"]  # fmt: skip
    assert video.main(argv) == 0
    (summary,) = map(json.loads, capsys.readouterr().out.splitlines())
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["ok"] == tracking_video.FRAMES and summary["errors"] == 0
    assert summary["max_inflight"] >= 2, "frames were in flight together (the case to prove)"

    lines = [json.loads(line) for line in (out / FileSink.JSONL).read_text().splitlines()]
    expected = served_reference_ids(grpc_client, [encode_jpeg(frame, QUALITY) for frame in decoded(clip)])
    assert [line["frame"] for line in lines] == list(range(tracking_video.FRAMES))
    for line, ids in zip(lines, expected, strict=True):
        served = track_ids(line["persons"])
        assert line["sequence"] == 0, f"frame {line['frame']}: the sequence started again"
        assert served == ids[: len(served)].tolist(), f"frame {line['frame']}: {served}, Ultralytics {ids}"
        assert all(p["track_gender"] in ("female", "male", None) and "face" in p for p in line["persons"])
    assert summary["people"] == people(lines)
    assert summary["people"]["unique"] >= len(tracking_video.PERSONS)
    assert len(decoded(out / FileSink.VIDEO)) == tracking_video.FRAMES
    # The camera id is the file's name, and the last frame ended its sequence: the server holds none for it.
    with pytest.raises(InferenceServerException, match="START flag"):
        grpc_client.track(encode_jpeg(decoded(clip)[0], QUALITY), TIER, "walk")


@pytest.fixture(scope="module")
def frame_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The camera's frames as JPEG files in a folder named `door-3`, and a file that is no image before them."""
    folder = tmp_path_factory.mktemp("cameras") / "door-3"
    folder.mkdir()
    bad = folder / "0000-broken.jpg"
    bad.write_bytes(b"not a picture at all")
    paths = [bad]
    for k, frame in enumerate(tracking_video.video().frames):
        paths.append(folder / f"{k + 1:04d}.jpg")
        cv2.imwrite(str(paths[-1]), frame, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    return paths


@pytest.fixture(scope="module")
def frame_files_expected(grpc_client: PeopleClient, frame_files: list[Path]) -> list[np.ndarray]:
    return served_reference_ids(grpc_client, [p.read_bytes() for p in frame_files[1:]])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_image_client_sends_the_images_as_one_sequence(
    server: Server,
    protocol: str,
    frame_files: list[Path],
    frame_files_expected: list[np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The images are one camera's frames (the folder's name): the first is no image, so the sequence it
    started was refused and the next image starts it again; from there each image's ids are Ultralytics'
    on the same bytes, one sequence. `--annotate` draws every answered image."""
    argv = [*map(str, frame_files), "--tier", TIER, "--protocol", protocol,
            "--url", server.options.endpoints.url(protocol), "--annotate", str(tmp_path)]  # fmt: skip
    assert image_client.main(argv) == 1, "one image failed"
    broken, *lines = map(json.loads, capsys.readouterr().out.splitlines())
    assert "error" in broken and (broken["camera"], broken["sequence"]) == ("door-3", 0)
    for k, (line, ids) in enumerate(zip(lines, frame_files_expected, strict=True)):
        assert "error" not in line, f"image {k + 1}: {line['error']}"
        served = track_ids(line["persons"])
        assert (line["camera"], line["sequence"]) == ("door-3", 1), f"image {k + 1}: started again by image 1"
        assert served == ids[: len(served)].tolist(), f"image {k + 1}: {served}, Ultralytics {ids}"
        assert Path(line["annotated"]).is_file()
    assert people(lines)["unique"] >= len(tracking_video.PERSONS)

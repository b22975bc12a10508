"""The cameras a tracking tier lets in (pipelines.cameras): the tier's limit, shared by its preprocess instances."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipelines import cameras
from pipelines.cameras import Cameras, Verdict

LET_IN, FULL, UNKNOWN = Verdict.LET_IN, Verdict.FULL, Verdict.UNKNOWN


def start(camera: int | str) -> tuple[int | str, bool, bool]:
    return camera, True, False


def then(camera: int | str) -> tuple[int | str, bool, bool]:
    return camera, False, False


def end(camera: int | str) -> tuple[int | str, bool, bool]:
    return camera, False, True


def test_the_limit_is_shared_by_every_instance(tmp_path: Path) -> None:
    """Each preprocess instance holds its own cameras' sequences; the tier's limit counts them all."""
    one, two = Cameras(tmp_path / "tier", 2, 60), Cameras(tmp_path / "tier", 2, 60)
    assert one.enter([start("a")]) == [LET_IN]
    assert two.enter([start("b"), start("c")]) == [LET_IN, FULL]
    assert one.enter([start("d"), then("a")]) == [FULL, LET_IN]
    assert one.held == two.held == 2


def test_frames_after_a_refused_start_are_refused_until_it_starts_again(tmp_path: Path) -> None:
    table = Cameras(tmp_path / "tier", 1, 60)
    assert table.enter([start("a"), start("b"), then("b"), then("a")]) == [LET_IN, FULL, UNKNOWN, LET_IN]
    assert table.enter([end("a"), then("b"), start("b"), then("b")]) == [LET_IN, UNKNOWN, LET_IN, LET_IN]


def test_a_start_of_a_camera_let_in_starts_it_again_in_its_slot(tmp_path: Path) -> None:
    table = Cameras(tmp_path / "tier", 1, 60)
    assert table.enter([start("a"), start("a"), then("a")]) == [LET_IN] * 3
    assert table.held == 1


def test_a_camera_idle_for_the_timeout_is_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = Cameras(tmp_path / "tier", 1, idle_s=5)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now)
    assert table.enter([start("a")]) == [LET_IN]
    now += 4
    assert table.enter([then("a")]) == [LET_IN], "a frame keeps it"
    now += 5.5
    assert table.enter([start("b"), then("a")]) == [LET_IN, UNKNOWN], "idle past the timeout: its slot is free"


def test_numbers_and_strings_are_different_cameras(tmp_path: Path) -> None:
    """As for Triton: sequence id 7 and sequence id "7" are two sequences."""
    assert cameras.key(7) != cameras.key("7")
    table = Cameras(tmp_path / "tier", 1, 60)
    assert table.enter([start(7), then("7")]) == [LET_IN, UNKNOWN]

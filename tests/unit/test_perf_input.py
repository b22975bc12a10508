"""`python -m tools.evaluate.perf_input`: a folder of images -> perf_analyzer's --input-data file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import spec
from tools.evaluate import perf_input
from tools.evaluate.corpus import ASSETS


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "b.jpg").write_bytes((ASSETS / "bus.jpg").read_bytes())
    (photos / "a.png").write_bytes(cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))[1].tobytes())
    (photos / ".hidden").write_text("skipped")
    (photos / "sub").mkdir()
    return photos


def test_writes_one_entry_per_image_in_name_order(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "input.json"
    assert perf_input.main([str(folder), "-o", str(out)]) == 0
    entries = json.loads(out.read_text())["data"]
    expected = [(folder / "a.png").read_bytes(), (folder / "b.jpg").read_bytes()]
    assert [base64.b64decode(e[spec.IMAGE.name]["b64"]) for e in entries] == expected
    assert [e[spec.IMAGE.name]["shape"] for e in entries] == [[len(b)] for b in expected]


def test_limit_keeps_the_first_files(folder: Path) -> None:
    (folder / "c.txt").write_text("beyond the limit: never read")
    assert perf_input.read_folder(folder, limit=1) == [(folder / "a.png").read_bytes()]


def test_names_every_file_the_server_would_refuse(folder: Path) -> None:
    (folder / "notes.txt").write_text("not an image")
    (folder / "cut.jpg").write_bytes((ASSETS / "bus.jpg").read_bytes()[:-2])
    with pytest.raises(ValueError, match="refuse 2 of 4") as refused:
        perf_input.read_folder(folder)
    assert "notes.txt: not a JPEG or PNG" in str(refused.value)
    assert "cut.jpg: " in str(refused.value)


def test_empty_or_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="holds no files"):
        perf_input.read_folder(tmp_path)
    with pytest.raises(SystemExit) as exited:
        perf_input.main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "input.json")])
    assert exited.value.code == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "input.json").exists()


def test_limit_must_be_positive(folder: Path) -> None:
    with pytest.raises(SystemExit):
        perf_input.main([str(folder), "--limit", "0"])

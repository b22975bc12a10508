"""`make gpu-check`'s tool (tools/evaluate/gpu_check.py and its parts, tools/evaluate/gpu/) in its CPU smoke mode, here.

The smoke run takes the same code paths as the GPU run except the device: the DALI graph serialized
and built as the GPU preprocess builds it (the CPU graph, as a GPU graph cannot build here), the
detector's .pt in PyTorch against Ultralytics' predict, the postprocess on the device against the
CPU, the throughput table and the report. On the CPU every comparison but the one with Ultralytics
must be exact. The GPU checks themselves are tests/gpu (skipped without a GPU).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import nvidia.dali
import pytest
import torch

from pipelines import paths, spec
from pipelines.dali import letterbox
from tools.evaluate import gpu_check
from tools.evaluate.gpu import parity, pieces, timing
from tools.evaluate.gpu.images import bench_images, parity_images

ROOT = paths.ROOT

IMAGES = ("bus.jpg", "zidane-517x333.jpg", "bus.png")  # a few of the parity images: the CPU detector is slow
BATCHES = (1, 2)


def smoke_args(out: Path, images: tuple[str, ...] = IMAGES, batches: tuple[int, ...] = BATCHES) -> list[str]:
    return [
        "--device", "cpu", "--images", ",".join(images), "--batches", ",".join(map(str, batches)),
        "--min-seconds", "0", "--min-runs", "1", "--out", str(out), "--work", str(out.parent / "work"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu_check") / "GPU_REPORT.md"


@pytest.fixture(scope="module")
def smoke(smoke_out: Path) -> tuple[int, str]:
    """The default run: exports the models into --work, then checks, times and reports."""
    status = gpu_check.main(smoke_args(smoke_out))
    return status, smoke_out.read_text()


def table(report: str, header: str) -> list[list[str]]:
    """The rows (cells) of the markdown table whose header row starts with `header`."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_smoke_run_passes_every_check(smoke: tuple[int, str]) -> None:
    status, report = smoke
    checks = table(report, "| check |")
    assert status == 0, f"exit status {status}; checks: {checks}"
    names = [c[0] for c in checks]
    assert len(checks) == 10, f"expected 3 graph, 2 Ultralytics and 5 postprocess checks, got {names}"
    assert all(c[1] == "pass" for c in checks), f"failed checks: {[c for c in checks if c[1] != 'pass']}"
    graph = [c for c in checks if c[0].startswith("DALI CPU graph")]
    assert len(graph) == 3 and all(c[3].startswith(("exact", "max 0,", "mean 0 ")) for c in graph), graph
    assert "KB serialized, as served" in graph[0][0], graph[0][0]


def test_report_per_image_rows(smoke: tuple[int, str]) -> None:
    """Every chosen image, its size, geometry equal, and the same persons as Ultralytics within 1 px."""
    _, report = smoke
    rows = table(report, "| image |")
    assert [r[0] for r in rows] == list(IMAGES)
    photos = parity_images()
    for name, size, geometry, _, _, counts, boxes in rows:
        decoded = cv2.imdecode(np.frombuffer(photos[name], np.uint8), cv2.IMREAD_COLOR)
        assert size == f"{decoded.shape[1]}x{decoded.shape[0]}", f"{name}: size {size}"
        assert geometry == "equal", f"{name}: GEOMETRY {geometry}"
        ultralytics, ours = (int(v) for v in counts.split(" / "))
        assert ultralytics == ours and ours >= 2, f"{name}: persons {counts} (the photos show several people)"
        assert float(boxes) <= parity.CPU_TOLERANCES.box_px, f"{name}: boxes {boxes} px"


def test_report_throughput_table(smoke: tuple[int, str]) -> None:
    """One column per batch size, one row per step that runs on the CPU (no fp16 there), every rate positive."""
    _, report = smoke
    lines = report.splitlines()
    assert f"| step | {' | '.join(f'batch {b}' for b in BATCHES)} |" in lines
    rows = table(report, "| step |")
    assert [r[0] for r in rows] == [s for s in timing.STEPS if s != "detector fp16"]
    for row in rows:
        assert len(row) == 1 + len(BATCHES) and all(float(v) > 0 for v in row[1:]), f"row {row}"
    targets = table(report, "| target |")
    assert [t[1] for t in targets] == [f"batch {timing.TARGET_BATCH} not measured"] * 2, targets


def test_report_says_what_ran(smoke: tuple[int, str]) -> None:
    """A smoke run says so, and names the versions it ran with."""
    _, report = smoke
    assert "Nothing here was measured on a GPU." in report
    machine = dict((r[0], r[1]) for r in table(report, "| what |"))
    assert machine["torch"] == torch.__version__, machine
    assert re.fullmatch(rf"{re.escape(nvidia.dali.__version__)} \(nvidia-dali-cuda1\d0\)", machine["DALI"]), machine
    assert "GPU" not in machine, "a CPU run must not name a GPU"


@pytest.mark.usefixtures("smoke")  # it exports the models this run reads
def test_a_failed_check_fails_the_run(smoke_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Boxes must match Ultralytics within 0 px: bus.jpg's are 0.17 px apart, so the run fails and says which.

    Reads the smoke run's export (--repository) rather than exporting again."""
    repository = smoke_out.parent / "work" / "model_repository"
    assert repository.is_dir(), f"the smoke run exported nothing into {repository}"
    monkeypatch.setattr(parity, "CPU_TOLERANCES", replace(parity.CPU_TOLERANCES, box_px=0.0))
    out = tmp_path / "report.md"
    argv = [*smoke_args(out, images=("bus.jpg",), batches=(1,)), "--repository", str(repository)]
    assert gpu_check.main(argv) == 1
    assert not (tmp_path / "work").exists(), "--repository must not export"
    failed = [c for c in table(out.read_text(), "| check |") if c[1] != "pass"]
    assert [c[0] for c in failed] == ["detector fp32 + NMS vs Ultralytics predict (fp32, rect=False): boxes"]
    assert failed[0][1] == "**FAIL**" and re.fullmatch(r"max \d+\.\d\d px", failed[0][2]), failed


@pytest.mark.usefixtures("smoke")  # it exports the models this run reads
def test_a_broken_graph_fails_the_run(smoke_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The served graph padded with 0 instead of Ultralytics' 114: the run fails, naming the IMAGES check."""

    def broken(batch: int, device: torch.device, fancy_upsampling: bool = True) -> tuple[pieces.Graph, int]:
        with monkeypatch.context() as m:
            m.setattr(spec, "PAD_VALUE", 0)
            pipe = letterbox.cpu_pipeline(batch)
        return pipe, len(pipe.serialize())

    monkeypatch.setattr(pieces, "served_graph", broken)
    repository = smoke_out.parent / "work" / "model_repository"
    out = tmp_path / "report.md"
    assert gpu_check.main([*smoke_args(out, images=("bus.jpg",), batches=(1,)), "--repository", str(repository)]) == 1
    failed = [c[0] for c in table(out.read_text(), "| check |") if c[1] != "pass"]
    assert any(name.endswith("vs the CPU graph: IMAGES") for name in failed), failed


def test_a_skipped_gpu_test_fails_a_gpu_check_run(tmp_path: Path) -> None:
    """tests/conftest.py: with PEOPLE_GPU_CHECK=1 (make gpu-image-check) a GPU test that skips fails; without
    it, it skips. Run here, where every GPU test skips."""
    command = [sys.executable, "-m", "pytest", "tests/gpu/test_gpu_preprocess.py", "-q", "-p", "no:cacheprovider"]
    env = {k: v for k, v in os.environ.items() if k != "PEOPLE_GPU_CHECK"}
    plain = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "skipped" in plain.stdout, plain.stdout[-2000:]
    check = subprocess.run(command, cwd=ROOT, env=env | {"PEOPLE_GPU_CHECK": "1"}, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert check.returncode == 1, check.stdout[-2000:]
    assert "a GPU test skipped on a GPU check run" in check.stdout and "failed" in check.stdout, check.stdout[-2000:]


def test_box_difference_pairs_nearest_boxes_of_a_class() -> None:
    """Boxes are paired by distance within their class, whatever their order; a forced cross-class pair is inf."""
    boxes = np.array([[0, 0, 10, 20], [100, 0, 110, 20]], np.float32)
    reference = parity.People(boxes, np.array([0.9, 0.8]), np.array([0.0, 1.0]))
    moved = boxes[::-1] + np.array([[0.5, 0, 0, 0], [0, 2, 0, 0]], np.float32)  # listed in the other order
    swapped = parity.People(moved, np.array([0.8, 0.9]), np.array([1, 0], np.int32))
    assert parity.box_difference(swapped, reference) == pytest.approx(2.0)
    relabelled = replace(swapped, classes=np.array([0, 1], np.int32))  # each box now pairs with the far one
    assert parity.box_difference(relabelled, reference) == pytest.approx(100.5)
    one_class = replace(swapped, classes=np.array([0, 0], np.int32))
    assert parity.box_difference(one_class, reference) == float("inf")
    alone = parity.People(boxes[:1], reference.scores[:1], reference.classes[:1])
    assert parity.box_difference(alone, reference) == 0.0, "an unpaired box is the counts' business"


@pytest.mark.parametrize(("batch", "tier"), [(1, "streaming"), (8, "streaming"), (9, "balanced"), (128, "batch")])
def test_tier_for_batch(batch: int, tier: str) -> None:
    assert pieces.tier_for(batch).name == tier
    assert pieces.tier_for(batch).gpu.max_batch_size >= batch


def test_batches_beyond_every_tier_are_refused() -> None:
    largest = max(t.gpu.max_batch_size for t in spec.TIERS)
    with pytest.raises(SystemExit):
        gpu_check.main(["--batches", f"1,{largest + 1}"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where no CUDA device is")
def test_cuda_without_a_gpu_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    assert gpu_check.main(["--device", "cuda", "--out", str(out)]) == 2
    assert not out.exists()


def test_parity_images_are_what_their_names_say() -> None:
    images = parity_images()
    assert len(images) == 10
    for name, data in images.items():
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        size = re.search(r"(\d+)x(\d+)", name)
        if size:
            assert decoded.shape[1::-1] == tuple(int(v) for v in size.groups()), name
        if name.endswith(".png"):
            assert data.startswith(b"\x89PNG"), name
    assert images["zidane-gray.jpg"].count(b"\xff\xc0\x00\x0b\x08") == 1, "a one-component baseline JPEG"
    assert b"\xff\xc2" in images["bus-progressive.jpg"], "a progressive JPEG (SOF2)"
    bench = [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) for d in bench_images()]
    assert [b.shape for b in bench] == [(1080, 1920, 3)] * 2, "the targets are stated for 1080p JPEGs"

"""The server's GPU pieces without Triton, as `make gpu-check` checks them (tools/evaluate/gpu/).

The DALI GPU graph built as the GPU preprocess builds it against the CPU graph, the
detector in PyTorch (fp32, fp16) plus the postprocess against Ultralytics' predict, and the
postprocess on CUDA tensors against the same code on the CPU (NMS, faces, chips, labels), on every
parity image, with the tolerances the report states; the models exported as `make gpu-check` exports
them. Skipped where torch sees no CUDA device or DALI cannot build its GPU graph. Written and
statically checked where the project is developed (no GPU there): not yet run.
"""

from __future__ import annotations

import pytest
import torch

from tools.evaluate.gpu.images import parity_images
from tools.evaluate.gpu.models import Models, export_models
from tools.evaluate.gpu.parity import GPU_TOLERANCES, Check, ImageRow, check_parity
from tools.evaluate.gpu.pieces import served_graph
from tools.evaluate.gpu.timing import STEPS, throughput

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda", 0)
    served_graph(1, device)  # a GPU whose DALI graph does not build fails here, never skips
    return device


@pytest.fixture(scope="module")
def models(device: torch.device, tmp_path_factory: pytest.TempPathFactory) -> Models:
    """The default models, exported as `make gpu-check` exports them (no plans)."""
    return Models.load(export_models(tmp_path_factory.mktemp("gpu_check")), device)


@pytest.fixture(scope="module")
def parity(models: Models, device: torch.device) -> tuple[list[ImageRow], list[Check]]:
    return check_parity(models, parity_images(), device, GPU_TOLERANCES)


def checks_starting(parity: tuple[list[ImageRow], list[Check]], prefix: str) -> list[str]:
    """The failed checks whose name starts with prefix; fails when no check does (nothing was compared)."""
    chosen = [c for c in parity[1] if c.name.startswith(prefix)]
    assert chosen, f"no check named {prefix}...: {[c.name for c in parity[1]]}"
    return [f"{c.name}: {c.measured} (tolerance {c.tolerance})" for c in chosen if not c.ok]


def test_gpu_graph_matches_the_cpu_graph(
    parity: tuple[list[ImageRow], list[Check]],
) -> None:
    """GEOMETRY exactly; IMAGES and ORIGINAL within nvJPEG-vs-libjpeg-turbo tolerances."""
    rows, _ = parity
    assert [r.name for r in rows if not r.geometry_equal] == [], "GEOMETRY differs from the CPU graph"
    assert checks_starting(parity, "DALI CUDA graph") == []


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_detector_and_postprocess_match_ultralytics(parity: tuple[list[ImageRow], list[Check]], precision: str) -> None:
    """Same person count on every image, boxes within the GPU tolerance, detector in fp32 and in fp16, then NMS."""
    rows, _ = parity
    assert all(r.counts["ultralytics"] > 0 for r in rows), f"every parity image shows people: {rows}"
    assert checks_starting(parity, f"detector {precision} ") == []


def test_postprocess_on_cuda_matches_the_cpu(parity: tuple[list[ImageRow], list[Check]]) -> None:
    """NMS and labels bit for bit; the face detector's and classifier's inputs, and FACES, within tolerance."""
    assert checks_starting(parity, "postprocess on cuda") == []


def test_every_step_is_timed(models: Models, device: torch.device) -> None:
    """One batch of the throughput table: every step runs on the GPU and gives a rate."""
    rates = throughput(models, 8, device, min_seconds=0.0, min_runs=1)
    assert set(rates) == set(STEPS), rates
    assert all(v > 0 for v in rates.values()), rates

"""The GPU variant's preprocess letterbox (pipelines/dali/gpu.py) on a GPU: what preprocess_<tier> runs.

Its outputs stay on the GPU, its geometry equals the CPU graph's, and after a batch DALI fails it is
rebuilt and takes the next batch. Skipped without CUDA; written and statically checked where the
project is developed (no GPU there): not yet run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.dali import letterbox
from tests.server.conftest import SAMPLES

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_letterbox() -> object:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    from pipelines.dali.gpu import GpuLetterbox

    return GpuLetterbox("balanced", 0)


def encoded() -> list[np.ndarray]:
    return [np.frombuffer(p.read_bytes(), np.uint8) for p in SAMPLES.values()]


def test_outputs_on_the_gpu_geometry_as_the_cpu_graph(gpu_letterbox: object) -> None:
    images, geometry, original = gpu_letterbox.run(encoded())
    assert images.is_cuda and original.is_cuda and images.dtype == torch.float32 and original.dtype == torch.uint8
    cpu = letterbox.cpu_pipeline(batch_size=len(SAMPLES))
    _, cpu_geometry, _ = (np.array(o.as_tensor()) for o in cpu.run(IMAGE=encoded()))
    np.testing.assert_array_equal(geometry, cpu_geometry)


def test_a_failed_batch_is_rebuilt(gpu_letterbox: object) -> None:
    bus = SAMPLES["bus.jpg"].read_bytes()
    broken = np.frombuffer(bus[: len(bus) // 3], np.uint8)  # header intact, data cut short
    with pytest.raises(RuntimeError):
        gpu_letterbox.run([*encoded(), broken])
    gpu_letterbox.rebuild()
    images, _, _ = gpu_letterbox.run(encoded())
    assert images.shape[0] == len(SAMPLES)

"""The GPU variant's letterbox as the python backend runs it: the DALI graph with nvJPEG, answers as torch tensors.

Run by `preprocess_<tier>` (python backend, one instance per GPU) rather than by Triton's DALI backend,
because the DALI backend answers every request of a batch with the same error when one image fails
(dali_backend src/dali_model_instance.cc, ExecuteBatched: one caught error copied into every
response) and DALI cannot swap a bad sample out of a batch (NVIDIA/DALI issues #3913, #1727, #5489).
Here the headers are checked first (pipelines.validate), and a batch that still fails is rebuilt and
retried request by request. Written and statically checked; not yet run on a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
from nvidia.dali.backend import TensorListGPU
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from pipelines import spec
from pipelines.dali.letterbox import gpu_pipeline

Outputs = tuple[torch.Tensor, np.ndarray, torch.Tensor]  # IMAGES (GPU), GEOMETRY (host), ORIGINAL (GPU)


class GpuLetterbox:
    """One tier's graph on one GPU: `run` letterboxes a batch of encoded images; `rebuild` after a failure."""

    def __init__(self, tier: str, device_id: int, fancy_upsampling: bool = spec.GPU_JPEG_FANCY_UPSAMPLING):
        self.tier = tier
        self.fancy_upsampling = fancy_upsampling
        self.device = torch.device("cuda", device_id)
        # The stub reads the handed-over tensors on the thread's current device (see
        # pipelines.triton.tensors.to_triton); this instance's GPU, not device 0.
        torch.cuda.set_device(self.device)
        self.pipe = self._build()

    def _build(self) -> Pipeline:
        # prefetch_queue_depth=1: fed by run(IMAGE=...) one batch at a time (DALI refuses named inputs
        # with a deeper queue in the pipelined executor: seen on an H200 with DALI 2.4, docs/gpu.md).
        pipe = gpu_pipeline(self.tier, self.device.index, self.fancy_upsampling)(prefetch_queue_depth=1)
        pipe.build()
        return pipe

    def rebuild(self) -> None:
        """A failed batch leaves the pipeline unusable (DALI); the next run needs a new one."""
        self.pipe = self._build()

    def run(self, images: list[np.ndarray]) -> Outputs:
        """IMAGES [N, 3, S, S] float32 and ORIGINAL [N, H, W, 3] uint8 on the GPU, GEOMETRY [N, 6] on the host."""
        letterboxed, geometry, original = self.pipe.run(**{spec.IMAGE.name: images})
        return (self._torch(letterboxed, torch.float32), np.array(geometry.as_tensor()),
                self._torch(original, torch.uint8))  # fmt: skip

    def _torch(self, output: TensorListGPU, dtype: torch.dtype) -> torch.Tensor:
        """A copy the next run cannot overwrite, made on torch's stream after DALI's work (feed_ndarray)."""
        tensor = output.as_tensor()
        copy = torch.empty(tensor.shape(), dtype=dtype, device=self.device)
        feed_ndarray(tensor, copy, cuda_stream=torch.cuda.current_stream(self.device))
        return copy

"""The one BLS helper: call another model of the server with torch tensors, check the answer."""

from __future__ import annotations

import torch
import triton_python_backend_utils as pb_utils

from pipelines.triton.tensors import to_torch, to_triton


class BlsError(RuntimeError):
    """The called model answered with an error; the message names it."""


def infer(model: str, inputs: dict[str, torch.Tensor], output: str, device: torch.device) -> torch.Tensor:
    """One synchronous call; inputs go as they are (DLPack for GPU tensors), the output is asked on `device`.

    Without `preferred_memory` the output stays where the called model produced it (python_backend
    README, "BLS": preferred_memory, since 23.04), which for a CPU-placed model would be the host.
    """
    memory = (
        pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_GPU, device.index or 0)
        if device.type == "cuda"
        else pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
    )
    request = pb_utils.InferenceRequest(
        model_name=model,
        requested_output_names=[output],
        inputs=[to_triton(name, value) for name, value in inputs.items()],
        preferred_memory=memory,
    )
    response = request.exec()
    if response.has_error():
        raise BlsError(f"{model}: {response.error().message()}")
    # Copy out of the response, whose buffers are released with it: on the GPU that release is not
    # ordered with torch's stream (python_backend src/pb_memory.cc, ~PbMemory's release callback
    # frees it at once), so the copy must be finished before the response goes.
    copy = to_torch(pb_utils.get_output_tensor_by_name(response, output)).to(device).clone()
    if copy.is_cuda:
        torch.cuda.current_stream(copy.device).synchronize()
    return copy

"""The one BLS helper: call another model of the server with torch tensors, check the answer."""

from __future__ import annotations

import torch
import triton_python_backend_utils as pb_utils

from pipelines.triton.tensors import to_torch, to_triton


class BlsError(RuntimeError):
    """The called model answered with an error; the message names it."""


def infer(model: str, inputs: dict[str, torch.Tensor], output: str) -> torch.Tensor:
    """One synchronous call; tensors stay on their device both ways (DLPack)."""
    request = pb_utils.InferenceRequest(
        model_name=model,
        requested_output_names=[output],
        inputs=[to_triton(name, value) for name, value in inputs.items()],
    )
    response = request.exec()
    if response.has_error():
        raise BlsError(f"{model}: {response.error().message()}")
    # Copy out of the response, whose buffers are released with it.
    return to_torch(pb_utils.get_output_tensor_by_name(response, output)).clone()

"""Moving tensors between Triton requests and numpy/torch, shared by the python-backend models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipelines import spec


def to_torch(tensor: Any) -> torch.Tensor:
    """A Triton tensor as torch, on the device where Triton placed it (no copy)."""
    if tensor.is_cpu():
        return torch.from_numpy(tensor.as_numpy())
    return torch.from_dlpack(tensor.to_dlpack())


def as_torch(request: Any, name: str) -> torch.Tensor:
    """A request's input as torch (see to_torch)."""
    return to_torch(pb_utils.get_input_tensor_by_name(request, name))


def to_host(tensor: Any) -> np.ndarray:
    """A small Triton tensor's values on the host, wherever Triton placed it.

    `as_numpy()` raises for a tensor in GPU memory ("Tensor is stored in GPU and cannot be converted
    to NumPy", python_backend src/pb_tensor.cc), which a model with FORCE_CPU_ONLY_INPUT_TENSORS=no
    gets when a client sends the input through CUDA shared memory or a GPU step produced it.
    """
    if tensor.is_cpu():
        return tensor.as_numpy()
    return torch.from_dlpack(tensor.to_dlpack()).cpu().numpy()


def per_image(request: Any, tensor: spec.Tensor, default: float, rows: int) -> list[float]:
    """An optional [1] input as one value per image of the request (Triton gives it the batch axis)."""
    given = pb_utils.get_input_tensor_by_name(request, tensor.name)
    if given is None:
        return [default] * rows
    return [float(v) for v in to_host(given).reshape(rows)]


def to_triton(name: str, value: torch.Tensor | np.ndarray) -> Any:
    """A Triton output tensor; torch tensors stay on their device through DLPack.

    A CUDA tensor is handed over as the tensor itself, not as a DLPack capsule: for an object with
    `__dlpack__` the stub passes its own stream and synchronizes it, so the tensor's pending kernels
    are finished before Triton reads it; a bare capsule is taken as it is, with no synchronization
    (python_backend src/pb_tensor.cc, PbTensor::FromDLPack, r23.05 to r26.05).
    """
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            return pb_utils.Tensor.from_dlpack(name, value.contiguous())
        value = value.numpy()
    return pb_utils.Tensor(name, np.ascontiguousarray(value))


def split_sizes(requests: Sequence[Any], name: str) -> list[int]:
    """How many batch rows each request contributed for input `name`."""
    return [pb_utils.get_input_tensor_by_name(r, name).shape()[0] for r in requests]

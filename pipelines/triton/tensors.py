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


def per_image(request: Any, tensor: spec.Tensor, default: float, rows: int) -> list[float]:
    """An optional [1] input as one value per image of the request (Triton gives it the batch axis)."""
    given = pb_utils.get_input_tensor_by_name(request, tensor.name)
    if given is None:
        return [default] * rows
    return [float(v) for v in given.as_numpy().reshape(rows)]


def to_triton(name: str, value: torch.Tensor | np.ndarray) -> Any:
    """A Triton output tensor; torch tensors stay on their device through DLPack."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.contiguous()))
        value = value.numpy()
    return pb_utils.Tensor(name, np.ascontiguousarray(value))


def split_sizes(requests: Sequence[Any], name: str) -> list[int]:
    """How many batch rows each request contributed for input `name`."""
    return [pb_utils.get_input_tensor_by_name(r, name).shape()[0] for r in requests]

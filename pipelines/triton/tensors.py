"""Moving tensors between Triton requests and numpy/torch, shared by the python-backend models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipelines import spec


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def parameter(config: dict[str, Any], key: str) -> str:
    """A `parameters { key: ... }` entry of the model config; a missing one is a config bug."""
    try:
        return config["parameters"][key]["string_value"]
    except KeyError as e:
        raise pb_utils.TritonModelException(f"model config lacks parameter {key!r}") from e


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


def invalid(message: str) -> Any:
    """A response that fails one request with INVALID_ARG (HTTP 400) and leaves the others alone."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


class Counter:
    """A counter on Triton's metrics endpoint, labelled with the model.

    Holds its MetricFamily: Triton refuses to update a Metric whose family was garbage-collected.
    """

    def __init__(self, name: str, description: str, model: str):
        self.family = pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
        self.metric = self.family.Metric(labels={"model": model})

    def increment(self, value: int) -> None:
        if value:
            self.metric.increment(value)

"""cpu variant of `preprocess_<tier>`: the OpenCV letterbox (`pipelines.opencv.letterbox`) in the python backend.

Each request's images are checked from their headers, then decoded and
letterboxed one after another: an image that fails fails only its own request.

It is also where a drain cuts the tier (see spec.DRAIN_PARAMETER): requests
queued before the launcher's drain request are answered, those after refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines import spec, validate
from pipelines.opencv import letterbox
from pipelines.triton.errors import invalid, unavailable
from pipelines.triton.metrics import Counter

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # IMAGES, GEOMETRY, ORIGINAL


@dataclass(frozen=True)
class Refusal:
    """A request answered with an error instead of outputs."""

    message: str
    draining: bool = False  # UNAVAILABLE (send it elsewhere); otherwise INVALID_ARG (the request is bad)

    def response(self) -> Any:
        return unavailable(self.message) if self.draining else invalid(self.message)


def problem(images: list[np.ndarray]) -> str | None:
    """Why a request's images cannot be decoded, judged from their headers, or None."""
    if not images:
        return f"{spec.IMAGE.name}: the request holds no image"
    for k, image in enumerate(images):
        data = image.tobytes().rstrip(b"\0")  # rows of a multi-image request are zero-padded
        try:
            validate.check(data)
        except validate.InvalidImage as e:
            where = f" (image {k} of {len(images)})" if len(images) > 1 else ""
            return f"{spec.IMAGE.name}{where}: {e}"
    return None


def _letterbox(images: list[np.ndarray]) -> Outputs | Refusal:
    try:
        return letterbox.letterbox(images)
    except letterbox.Undecodable as e:
        where = f" (image {e.index} of {len(images)})" if len(images) > 1 else ""
        return Refusal(f"{spec.IMAGE.name}{where}: the image could not be decoded (corrupt or unsupported data)")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.drain_token = os.environ.get(spec.DRAIN_TOKEN_ENV)
        self.draining = False
        self.admitted = Counter(spec.ADMITTED_METRIC, "requests passed on to the detector", args["model_name"])
        cv2.setNumThreads(spec.CPU_PREPROCESS_THREADS)

    def _is_drain_marker(self, request: Any) -> bool:
        if not self.drain_token:
            return False
        given = json.loads(request.parameters() or "{}").get(spec.DRAIN_PARAMETER)
        return given == self.drain_token

    def execute(self, requests: list[Any]) -> list[Any]:
        batches: list[list[np.ndarray]] = []
        results: list[Outputs | Refusal | None] = []
        for request in requests:  # in queue order: the drain marker cuts the batch where it stands
            if not self.draining and self._is_drain_marker(request):
                self.draining = True
                pb_utils.Logger.log_info("draining: refusing every request queued after this one")
            images = list(pb_utils.get_input_tensor_by_name(request, spec.IMAGE.name).as_numpy())
            batches.append(images)
            if self.draining:
                results.append(Refusal(spec.DRAINING_MESSAGE, draining=True))
                continue
            why = problem(images)
            results.append(Refusal(why) if why else None)
        for i, result in enumerate(results):
            if result is None:
                results[i] = _letterbox(batches[i])
        self.admitted.increment(sum(isinstance(r, tuple) for r in results))
        return [self._respond(r) for r in results]

    @staticmethod
    def _respond(result: Outputs | Refusal | None) -> Any:
        assert result is not None
        if isinstance(result, Refusal):
            return result.response()
        names = (spec.IMAGES.name, spec.GEOMETRY.name, spec.ORIGINAL.name)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, v) for n, v in zip(names, result, strict=True)]
        )

"""`sequence_<tier>` (the track tier's first step): a camera's frames let in as one Triton sequence.

Triton's sequence batcher in front of everything else: a request without a sequence id, or one that
continues a sequence Triton does not hold (no sequence_start, or idle past the timeout), is refused by
Triton here, before the tier admits any work (pipelines.admission), so every request the tier admits
is answered by its tracker. This model keeps the cameras it let start: at most `max_cameras`; the
next start is refused with a message that says what to do. It passes each frame on unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import triton_python_backend_utils as pb_utils

from pipelines import spec
from pipelines.triton.config import model_config, parameter
from pipelines.triton.errors import invalid, unavailable

START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
END = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.max_cameras = int(parameter(config, "max_cameras"))
        self.idle_s = int(config["sequence_batching"]["max_sequence_idle_microseconds"]) / 1e6
        self.seen: dict[int | str, float] = {}  # camera let in -> when its last frame came

    def _refusal(self, request: Any, camera: int | str, flags: int) -> Any | None:
        frames = pb_utils.get_input_tensor_by_name(request, spec.IMAGE.name).shape()[0]
        if frames != 1:
            return invalid(f"{spec.IMAGE.name}: the track tier takes one frame per request ({frames} sent): send a "
                           "camera's frames one by one, in order, as one sequence")  # fmt: skip
        if flags & START:
            if camera not in self.seen and len(self.seen) >= self.max_cameras:
                return unavailable(f"all {self.max_cameras} camera slots are in use: end a camera's sequence "
                                   f"(sequence_end) or let one idle for {self.idle_s:g} s, then start this one "
                                   "again")  # fmt: skip
        elif camera not in self.seen:
            return invalid(f"camera {camera!r} was not let in (its sequence_start was refused, or it was idle for "
                           f"{self.idle_s:g} s): start its sequence again")  # fmt: skip
        return None

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        for camera in [c for c, seen in self.seen.items() if now - seen > self.idle_s]:
            del self.seen[camera]
        responses = []
        for request in requests:  # at most one frame per camera, each camera's in order
            camera, flags = request.correlation_id(), request.flags()
            refusal = self._refusal(request, camera, flags)
            if refusal is not None:
                responses.append(refusal)
                continue
            self.seen[camera] = now
            if flags & END:
                del self.seen[camera]
            image = pb_utils.get_input_tensor_by_name(request, spec.IMAGE.name).as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(spec.FRAME.name, image)]))
        return responses

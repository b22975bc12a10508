"""`tracker_<tier>` (the track tier's last step): a stable id and a voted gender per person, per camera.

A camera is a Triton sequence, let in by the tier's preprocess (pipelines.cameras); its id is the
request's sequence id (string or number). Every step in between keeps the order in which frames
came (preserve_ordering) and this model has one instance, so a camera's frames reach it in the order
the camera sent them. Its first frame (sequence_start) starts fresh tracks, ids from 1; its last
(sequence_end) frees them; a camera silent for the idle timeout is forgotten, as Triton forgets its
sequence. State is kept per camera id, never per sequence slot, so one camera never sees another's
(triton-inference-server/server #7117). The tracking itself is pipelines.tracking (ByteTrack with
Ultralytics' semantics, and the gender vote).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines import spec
from pipelines.tracking.camera import Camera
from pipelines.triton.config import model_config, parameter
from pipelines.triton.errors import invalid
from pipelines.triton.metrics import Counter, Gauge
from pipelines.triton.sequences import frame
from pipelines.triton.tensors import to_host


def _input(request: Any, tensor: spec.Tensor) -> np.ndarray:
    return to_host(pb_utils.get_input_tensor_by_name(request, tensor.name))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.idle_s = int(parameter(model_config(args), "idle_timeout_us")) / 1e6
        self.cameras: dict[int | str, Camera] = {}
        self.seen: dict[int | str, float] = {}  # camera -> when its last frame came
        model, instance = args["model_name"], args.get("model_instance_name", args["model_name"])
        self.answered = Counter(spec.ANSWERED_METRIC, "responses sent, answers and errors", model)
        self.held = Gauge("people_track_cameras", "cameras whose tracks this instance keeps", model, instance)
        self.state = Gauge("people_track_state_bytes", "bytes of the cameras' tracks and votes", model, instance)

    def _forget_idle(self, now: float) -> None:
        for camera in [c for c, seen in self.seen.items() if now - seen > self.idle_s]:
            del self.cameras[camera], self.seen[camera]

    def _camera(self, camera: int | str, start: bool) -> Camera | Any:
        """The camera's state, fresh at its sequence's start; an error response where there is none."""
        if start:
            self.cameras[camera] = Camera()
        if camera not in self.cameras:  # its first frame was refused on the way (preprocess's queue, say)
            return invalid(f"camera {camera!r} has no tracks yet: its sequence_start frame did not get here; "
                           "start its sequence again")  # fmt: skip
        return self.cameras[camera]

    def _track(self, camera: Camera, request: Any) -> Any:
        num = int(_input(request, spec.NUM_DETECTIONS).reshape(-1)[0])
        candidates = _input(request, spec.CANDIDATES)[0]
        kept = int((candidates[:, 4] > 0).sum())  # zero rows after the last box
        gender = np.full(kept, spec.UNDETERMINED, dtype=np.int32)
        gender_scores = np.zeros(kept, dtype=np.float32)
        gender[:num] = _input(request, spec.GENDER)[0, :num]
        gender_scores[:num] = _input(request, spec.GENDER_SCORES)[0, :num]
        tracked = camera.update(candidates[:kept, :4], candidates[:kept, 4], gender, gender_scores)
        outputs = {
            spec.TRACK_IDS: np.full(spec.MAX_DET, -1, np.int64),
            spec.TRACK_GENDER: np.full(spec.MAX_DET, spec.UNDETERMINED, np.int32),
            spec.TRACK_GENDER_SCORES: np.zeros(spec.MAX_DET, np.float32),
        }
        for out, value in zip(outputs.values(), (tracked.ids, tracked.gender, tracked.gender_scores), strict=True):
            out[:num] = value[:num]  # the answered persons: the first rows of what the tracker was fed
        tensors = [pb_utils.Tensor(t.name, v[None]) for t, v in outputs.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        self._forget_idle(now)
        responses = []
        for request in requests:  # at most one frame per camera, each camera's in order
            camera, start, end = frame(request)
            state = self._camera(camera, start)
            responses.append(self._track(state, request) if isinstance(state, Camera) else state)
            if isinstance(state, Camera):
                self.seen[camera] = now
            if end:
                self.cameras.pop(camera, None)
                self.seen.pop(camera, None)
        self.held.set(len(self.cameras))
        self.state.set(sum(c.nbytes for c in self.cameras.values()))
        self.answered.increment(len(responses))
        return responses

"""`preprocess_<tier>`: headers checked, then the letterbox, in the python backend on both variants.

Every request's images are checked from their headers first (pipelines.validate), so nothing the
decoders cannot take reaches them. Then, on a CPU instance (cpu variant), the OpenCV letterbox
(`pipelines.opencv.letterbox`) decodes one image after another; on a GPU instance (GPU variant) the
DALI graph with nvJPEG (`pipelines.dali.gpu`) takes the whole batch, and a batch that still fails is
retried request by request. Either way an image that fails fails only its own request.

It is where the tier admits requests (pipelines.admission): a batch goes on only while the images
inside the tier leave room for it, otherwise it waits here (up to the tier's admission wait, then refused);
each admitted request gets a ticket that postprocess hands back. And it is where a drain cuts the
tier (see spec.DRAIN_PARAMETER): requests queued before the launcher's drain request are answered,
those after refused.

In a tier that tracks, it is also where cameras come in: Triton's sequence batcher schedules it (one
sequence per camera, each camera's frames in order), and it lets in at most the tier's number of
cameras (pipelines.cameras), one frame per request, before anything else is spent on a frame.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines import admission, cameras, shared_memory, spec, validate
from pipelines.opencv import letterbox
from pipelines.triton.config import model_config, optional_parameter, parameter
from pipelines.triton.errors import invalid, unavailable
from pipelines.triton.metrics import Counter
from pipelines.triton.sequences import frame
from pipelines.triton.tensors import to_triton

Outputs = tuple[Any, np.ndarray, Any]  # IMAGES, GEOMETRY, ORIGINAL: numpy on a CPU instance, torch on a GPU one


@dataclass(frozen=True)
class Refusal:
    """A request answered with an error instead of outputs."""

    message: str
    unavailable: bool = False  # UNAVAILABLE (send it elsewhere or later); otherwise INVALID_ARG (the request is bad)

    def response(self) -> Any:
        return unavailable(self.message) if self.unavailable else invalid(self.message)


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
        config = model_config(args)
        tier = next(t.name for t in spec.TIERS if t.model(spec.Step.PREPROCESS) == args["model_name"])
        shared_memory.remove_stale()
        self.ledger = admission.Ledger(admission.path_for(tier))
        self.cameras: cameras.Cameras | None = None  # a tier that tracks: the cameras it let in
        if "sequence_batching" in config:
            idle_s = int(config["sequence_batching"]["max_sequence_idle_microseconds"]) / 1e6
            self.cameras = cameras.Cameras(cameras.path_for(tier), int(parameter(config, "max_cameras")), idle_s)
        wait_us = optional_parameter(config, "admission_wait_us")  # absent: as long as it takes (DELAY tiers)
        self.wait_s = None if wait_us is None else int(wait_us) / 1e6
        self.max_in_flight = int(parameter(config, "max_in_flight"))
        self.gpu = None
        if args.get("model_instance_kind") == "GPU":
            import torch  # GPU instances only, with DALI's GPU graph

            from pipelines.dali.gpu import GpuLetterbox

            self.max_in_flight *= max(torch.cuda.device_count(), 1)  # the limit is per GPU; the ledger per server
            self.gpu = GpuLetterbox(tier, int(args["model_instance_device_id"]))
        else:
            cv2.setNumThreads(spec.CPU_PREPROCESS_THREADS)
        self.lost = 0  # tickets the ledger had taken back when last looked
        self.tickets: dict[int, int] = {}  # request -> ticket, of the execute in progress

    def finalize(self) -> None:
        for table in (self.ledger, self.cameras):
            if table is not None:
                table.remove()
                table.close()

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
            batches.append(list(pb_utils.get_input_tensor_by_name(request, spec.IMAGE.name).as_numpy()))
            results.append(Refusal(spec.DRAINING_MESSAGE, unavailable=True) if self.draining else None)
        if self.cameras is not None:
            self._let_cameras_in(requests, batches, results)
        for i, images in enumerate(batches):
            why = None if results[i] is not None else problem(images)
            if why:
                results[i] = Refusal(why)
        pending = self._admit([i for i, r in enumerate(results) if r is None], batches, results)
        if self.gpu is None:
            for i in pending:
                results[i] = _letterbox(batches[i])
        elif pending:
            for i, result in zip(pending, self._letterbox_on_gpu([batches[i] for i in pending]), strict=True):
                results[i] = result
        responses = [self._respond(r, self.tickets.get(i, 0)) for i, r in enumerate(results)]
        self.ledger.answered([t for i, t in self.tickets.items() if not isinstance(results[i], tuple)])
        self.admitted.increment(sum(isinstance(r, tuple) for r in results))
        return responses

    def _let_cameras_in(self, requests: list[Any], batches: list[list[np.ndarray]], results: list[Any]) -> None:
        """Refuse the frames of cameras not let in (pipelines.cameras), and requests of more than one frame."""
        assert self.cameras is not None
        waiting = []
        for i, images in enumerate(batches):
            if results[i] is None and len(images) != 1:
                results[i] = Refusal(f"{spec.IMAGE.name}: a tier that tracks takes one frame per request "
                                     f"({len(images)} sent): send a camera's frames one by one, in order, as one "
                                     "sequence")  # fmt: skip
            elif results[i] is None:
                waiting.append(i)
        frames = [frame(requests[i]) for i in waiting]
        for i, (camera, _, _), verdict in zip(waiting, frames, self.cameras.enter(frames), strict=True):
            if verdict is cameras.Verdict.FULL:
                results[i] = Refusal(f"all {self.cameras.limit} camera slots are in use: end a camera's sequence "
                                     f"(sequence_end) or let one idle for {self.cameras.idle_s:g} s, then start "
                                     "this one again", unavailable=True)  # fmt: skip
            elif verdict is cameras.Verdict.UNKNOWN:
                results[i] = Refusal(f"camera {camera!r} was not let in (its sequence_start was refused, or it was "
                                     f"idle for {self.cameras.idle_s:g} s): start its sequence again")  # fmt: skip

    def _admit(self, pending: list[int], batches: list[list[np.ndarray]], results: list[Any]) -> list[int]:
        """The requests of `pending` the tier has room for (self.tickets); the rest refused as the tier is full."""
        tickets = self.ledger.admit([len(batches[i]) for i in pending], self.max_in_flight, self.wait_s)
        self.tickets = {i: t for i, t in zip(pending, tickets, strict=True) if t}
        for i in pending:
            if i not in self.tickets:
                results[i] = Refusal(spec.TIER_FULL_MESSAGE, unavailable=True)
        lost = self.ledger.lost
        if lost > self.lost:
            pb_utils.Logger.log_warn(f"{lost - self.lost} admitted request(s) left the tier without an answer "
                                     f"from postprocess (cancelled by their clients?): their room is free again")
            self.lost = lost
        return list(self.tickets)

    def _letterbox_on_gpu(self, requests: list[list[np.ndarray]]) -> list[Outputs | Refusal]:
        """All requests' images in one GPU batch; when DALI fails it, each request again on its own."""
        assert self.gpu is not None
        try:
            images, geometry, original = self.gpu.run([image for images in requests for image in images])
        except RuntimeError:
            self.gpu.rebuild()
            return [self._alone_on_gpu(images) for images in requests]
        bounds = np.cumsum([0] + [len(images) for images in requests])
        return [_trimmed(images[lo:hi], geometry[lo:hi], original[lo:hi]) for lo, hi in pairwise(bounds)]

    def _alone_on_gpu(self, images: list[np.ndarray]) -> Outputs | Refusal:
        assert self.gpu is not None
        try:
            return _trimmed(*self.gpu.run(images))
        except RuntimeError as e:
            self.gpu.rebuild()
            lines = str(e).strip().splitlines()
            pb_utils.Logger.log_info(f"decode failed: {lines[-1] if lines else e}")
            return Refusal(f"{spec.IMAGE.name}: the image could not be decoded (corrupt or unsupported data)")

    @staticmethod
    def _respond(result: Outputs | Refusal | None, ticket: int) -> Any:
        assert result is not None
        if isinstance(result, Refusal):
            return result.response()
        images, geometry, original = result
        tickets = np.full((len(geometry), 1), ticket, dtype=np.int64)
        outputs = zip((spec.IMAGES, spec.GEOMETRY, spec.ORIGINAL, spec.TICKET), (images, geometry, original, tickets),
                      strict=True)  # fmt: skip
        return pb_utils.InferenceResponse(output_tensors=[to_triton(t.name, v) for t, v in outputs])


def _trimmed(images: Any, geometry: np.ndarray, original: Any) -> Outputs:
    """A request's share of a GPU batch, ORIGINAL cut from the batch's padding down to its own largest image."""
    width, height = (int(v) for v in geometry[:, 4:6].max(axis=0))
    return images, geometry, original[:, :height, :width]

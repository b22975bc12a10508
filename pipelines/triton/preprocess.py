"""cpu variant of `preprocess_<tier>`: the DALI letterbox graph on CPU operators, in the python backend.

DALI fails a whole batch, and invalidates the pipeline, when one image in it
cannot be decoded. So a failed batch is rebuilt and retried request by
request: only the requests whose images fail get an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from nvidia.dali.pipeline import Pipeline

from pipelines import spec
from pipelines.dali.letterbox import cpu_pipeline
from pipelines.triton.tensors import invalid, model_config

# Magic bytes of the formats the decoders accept.
_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


def check_encoded(image: np.ndarray) -> str | None:
    """Why an encoded image cannot be decoded, judged before decoding, or None."""
    if image.size == 0:
        return "empty image: send the encoded file's bytes"
    head = image[:8].tobytes()
    if not any(head.startswith(sig) for sig in _SIGNATURES):
        return f"not a JPEG or PNG (first bytes {head[:4].hex()})"
    return None


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.max_batch = model_config(args)["max_batch_size"]
        self.logger = pb_utils.Logger
        self.pipe = self._build()

    def _build(self) -> Pipeline:
        return cpu_pipeline(self.max_batch)

    def _run(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        letterboxed, geometry = self.pipe.run(**{spec.IMAGE.name: images})
        return np.array(letterboxed.as_tensor()), np.array(geometry.as_tensor())

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request: list[list[np.ndarray] | str] = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, spec.IMAGE.name).as_numpy()
            images = [row for row in rows]
            problems = [p for p in map(check_encoded, images) if p]
            per_request.append(f"{spec.IMAGE.name}: {problems[0]}" if problems else images)
        good = [i for i, r in enumerate(per_request) if not isinstance(r, str)]
        results: dict[int, tuple[np.ndarray, np.ndarray] | str] = {
            i: r for i, r in enumerate(per_request) if isinstance(r, str)
        }
        if good:
            try:
                batch = self._run([img for i in good for img in per_request[i]])
                start = 0
                for i in good:
                    n = len(per_request[i])
                    results[i] = (batch[0][start : start + n], batch[1][start : start + n])
                    start += n
            except RuntimeError:
                self.pipe = self._build()
                for i in good:
                    results[i] = self._run_alone(per_request[i])
        return [self._respond(results[i]) for i in range(len(requests))]

    def _run_alone(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | str:
        try:
            return self._run(images)
        except RuntimeError as e:
            self.pipe = self._build()
            reason = str(e).strip().splitlines()
            self.logger.log_info(f"decode failed: {reason[-1] if reason else e}")
            return f"{spec.IMAGE.name}: the image could not be decoded (corrupt or unsupported data)"

    @staticmethod
    def _respond(result: tuple[np.ndarray, np.ndarray] | str) -> Any:
        if isinstance(result, str):
            return invalid(result)
        letterboxed, geometry = result
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(spec.IMAGES.name, letterboxed),
                pb_utils.Tensor(spec.GEOMETRY.name, geometry),
            ]
        )

    def finalize(self) -> None:
        del self.pipe

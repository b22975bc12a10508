"""cpu variant of `detector_<tier>`, `gender_<tier>` and `face_<tier>`: the exported `model.onnx` on ONNX Runtime.

One run for all requests of the batch; the input and output names come from the model config.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines import onnx_session
from pipelines.triton.config import model_config

# Without its arena ONNX Runtime frees a run's activations to glibc, whose heaps keep them: after a batch
# of 8 images the detector held 220 MiB, 121 MiB once malloc_trim gave them back (measured here). The
# trim costs about 1.5 ms per image of such a batch (6 ms after a single image, 5 % of the run), so it
# runs only after inputs this large (4 images and more for the detector; face and gender inputs are small).
TRIM_AFTER_BYTES = 16 << 20
_LIBC = ctypes.CDLL("libc.so.6")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        (self.input,) = (i["name"] for i in config["input"])
        (self.output,) = (o["name"] for o in config["output"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{path} is missing: run `make export` first")
        self.session = onnx_session.session(path)

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        batch = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)  # one request: no copy
        (outputs,) = self.session.run([self.output], {self.input: batch})
        if batch.nbytes >= TRIM_AFTER_BYTES:
            _LIBC.malloc_trim(0)
        chunks = np.split(outputs, np.cumsum([len(i) for i in inputs])[:-1])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, c)]) for c in chunks]

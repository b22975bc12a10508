"""cpu variant of `detector_<tier>`: the exported `model.onnx` on ONNX Runtime, all requests in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from pipelines import spec
from pipelines.triton.tensors import split_sizes


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{path} is missing: run `make export` first")
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec.CPU_THREADS
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        images = np.concatenate([pb_utils.get_input_tensor_by_name(r, spec.IMAGES.name).as_numpy() for r in requests])
        (predictions,) = self.session.run([spec.PREDICTIONS.name], {spec.IMAGES.name: images})
        chunks = np.split(predictions, np.cumsum(split_sizes(requests, spec.IMAGES.name))[:-1])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(spec.PREDICTIONS.name, c)]) for c in chunks]

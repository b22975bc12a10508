"""cpu variant of `detector_<tier>` and `gender_<tier>`: the exported `model.onnx` on ONNX Runtime.

One run for all requests of the batch; the input and output names come from the model config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from pipelines import spec
from pipelines.triton.config import model_config


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        (self.input,) = (i["name"] for i in config["input"])
        (self.output,) = (o["name"] for o in config["output"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{path} is missing: run `make export` first")
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec.CPU_THREADS
        options.inter_op_num_threads = 1
        # Idle ONNX Runtime threads spin by default; on a few cores that spinning takes the CPU
        # from the other steps of the pipeline (DALI decode, NMS) running in other processes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena keeps the largest batch's activations for good: after one batch of 16 the detector
        # held 1100 MiB with it, 325 MiB without, at the same speed (measured here, 2 threads).
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        batch = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)  # one request: no copy
        (outputs,) = self.session.run([self.output], {self.input: batch})
        chunks = np.split(outputs, np.cumsum([len(i) for i in inputs])[:-1])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, c)]) for c in chunks]

"""An ONNX model on ONNX Runtime's CPU provider as the cpu variant serves it (also what `make bench` and
`make gpu-check` run as "the models alone", so they time the same sessions the server holds)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from pipelines import spec


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.CPU_THREADS
    options.inter_op_num_threads = 1
    # Idle ONNX Runtime threads spin by default; on a few cores that spinning takes the CPU
    # from the other steps of the pipeline (decode, NMS) running in other processes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The arena keeps the largest batch's activations for good: after one batch of 16 the detector
    # held 1100 MiB with it, 325 MiB without, at the same speed (measured here, 2 threads).
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

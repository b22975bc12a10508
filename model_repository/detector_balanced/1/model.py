"""Python-backend model for the cpu variant; the logic lives in pipelines.triton.detector_onnx.

Rendered by `make configs`."""

from pipelines.triton.detector_onnx import TritonPythonModel  # noqa: F401

"""Python-backend model for the cpu variant; the logic lives in pipelines.triton.onnx_runtime.

Rendered by `make configs`."""

from pipelines.triton.onnx_runtime import TritonPythonModel  # noqa: F401

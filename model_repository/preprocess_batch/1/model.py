"""Python-backend model for the cpu variant; the logic lives in pipelines.triton.preprocess.

Rendered by `make configs`."""

from pipelines.triton.preprocess import TritonPythonModel  # noqa: F401

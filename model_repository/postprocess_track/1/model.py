"""Python-backend model for both variants; the logic lives in pipelines.triton.postprocess.

Rendered by `make configs`."""

from pipelines.triton.postprocess import TritonPythonModel  # noqa: F401

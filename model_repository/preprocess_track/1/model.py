"""Python-backend model for both variants; the logic lives in pipelines.triton.preprocess.

Rendered by `make configs`."""

from pipelines.triton.preprocess import TritonPythonModel  # noqa: F401

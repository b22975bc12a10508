"""Python-backend model for both variants; the logic lives in pipelines.triton.sequence.

Rendered by `make configs`."""

from pipelines.triton.sequence import TritonPythonModel  # noqa: F401

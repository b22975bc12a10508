"""Python-backend model for both variants; the logic lives in pipelines.triton.tracker.

Rendered by `make configs`."""

from pipelines.triton.tracker import TritonPythonModel  # noqa: F401

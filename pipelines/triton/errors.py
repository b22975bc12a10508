"""Error responses: one request fails with the code a client can act on, the others of its batch are answered."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils


def _error(message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def invalid(message: str) -> Any:
    """INVALID_ARG (HTTP 400): the request itself is wrong; sending it again will not help."""
    return _error(message, pb_utils.TritonError.INVALID_ARG)


def unavailable(message: str) -> Any:
    """UNAVAILABLE (HTTP 503): this server cannot take it now; another replica or a retry can."""
    return _error(message, pb_utils.TritonError.UNAVAILABLE)


def internal(message: str) -> Any:
    """INTERNAL (HTTP 500): the server, not the request, went wrong."""
    return _error(message, pb_utils.TritonError.INTERNAL)

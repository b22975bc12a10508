"""A request's place in its camera's Triton sequence, read alike by the track tier's preprocess and tracker."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from pipelines.cameras import Frame


def frame(request: Any) -> Frame:
    """The request's camera and sequence flags (sequence_start, sequence_end)."""
    flags = request.flags()
    start = bool(flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START)
    return request.correlation_id(), start, bool(flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END)

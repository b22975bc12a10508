"""On a GPU check run a skipped GPU test is a failure: the check must be able to fail.

`make gpu-image-check` sets PEOPLE_GPU_CHECK=1 (tools/gpu_image_check.sh). Elsewhere a test marked
`gpu` skips where there is no GPU and still exists. The one allowed skip on a check run is a test
marked `multi_gpu` on a host with a single GPU: it says so in the summary.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

GPU_CHECK_ENV = "PEOPLE_GPU_CHECK"


def gpu_check_run() -> bool:
    return os.environ.get(GPU_CHECK_ENV) == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if not (gpu_check_run() and report.skipped and item.get_closest_marker("gpu")):
        return
    if item.get_closest_marker("multi_gpu") and "one GPU" in str(report.longrepr):
        return  # a single-GPU host cannot run it; the summary shows the skip
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"a GPU test skipped on a GPU check run ({GPU_CHECK_ENV}=1) fails the check: {reason}"

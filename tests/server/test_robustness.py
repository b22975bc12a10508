"""Bad input harms nobody, overload is refused quickly, a dead stub is detected and recovered.

Runs tools/robustness.py's checks against the session's server; `make robustness` prints the same as a report.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import spec
from tools.evaluate import robustness
from tools.server.triton import Server

MiB = 1 << 20
MEMORY_AFTER_ROUND: dict[str, int] = {}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_inputs_fail_alone_on_every_tier(server: Server, protocol: str) -> None:
    report = robustness.corpus_round(server, spec.TIER_NAMES, (protocol,))
    assert report.tried == len(robustness.cases()) * len(spec.TIER_NAMES)
    assert report.crashes == 0
    assert report.wrong == []
    assert report.good_harmed == []
    MEMORY_AFTER_ROUND[protocol] = report.rss_after
    if "grpc" in MEMORY_AFTER_ROUND and protocol != "grpc":
        # The first round warms the allocators up to what the largest images need; a second
        # round over the same images must come back to about that level, not keep growing.
        growth = (report.rss_after - MEMORY_AFTER_ROUND["grpc"]) / MiB
        assert growth < 384, f"server memory grew {growth:.0f} MiB over a second round of the same inputs"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_overload_is_rejected_quickly_with_unavailable(server: Server, protocol: str) -> None:
    """Queue full or timed out: gRPC UNAVAILABLE / HTTP 503, sooner than an accepted request is answered."""
    load = robustness.overload(server, "streaming", factor=3.0, seconds=6.0, protocol=protocol)
    assert load.other == [], load.other
    assert load.rejected > 0, "3x the sustainable rate must overflow the streaming tier's queue"
    assert load.accepted > 0
    assert load.accepted + load.rejected == load.sent
    # Bounded: no accepted request waited much past the tier's queue timeout plus its own work.
    cpu = spec.tier("streaming").batching(spec.Variant.CPU)
    assert max(load.accepted_latency_s) < cpu.queue_timeout_us / 1e6 * len(spec.PIPELINE) + 10
    assert np.median(load.rejected_latency_s) < np.median(load.accepted_latency_s)


def test_dead_stub_fails_requests_clearly_and_is_recovered(server: Server) -> None:
    fault = robustness.kill_stub_under_load(server, "streaming")
    assert fault["in_flight_failed_clearly"] + fault["in_flight_ok"] == fault["in_flight"], fault
    assert fault["healthy_after_kill"] is False, "deep health must see the dead stub"
    assert fault["dead_stubs"] == [spec.tier("streaming").model(spec.Step.POSTPROCESS)]
    assert "not healthy" in fault["after_kill"]
    assert fault["recovered"] is True
    assert server.healthy()

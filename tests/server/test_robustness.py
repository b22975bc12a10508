"""Bad input harms nobody, overload is refused quickly, a dead stub is detected and recovered.

Runs tools/evaluate/robustness.py's checks against the session's server; `make robustness` prints the same as a report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import spec
from tests.server.conftest import tier_repository
from tools.evaluate import robustness
from tools.server.endpoints import Endpoints
from tools.server.triton import Server, ServerOptions

MiB = 1 << 20


def test_bad_inputs_fail_alone_on_every_tier_without_growing_memory(server: Server) -> None:
    """Every corpus case, alone and in one batch with a good request, on every tier, over gRPC then HTTP.

    The first round warms the allocators up to what the largest images need; the second round over the
    same images must come back to about that level, not keep growing.
    """
    rounds = [robustness.corpus_round(server, spec.IMAGE_TIER_NAMES, (protocol,)) for protocol in ("grpc", "http")]
    for report in rounds:
        assert report.tried == len(robustness.cases()) * len(spec.IMAGE_TIER_NAMES)
        assert report.crashes == 0
        assert report.wrong == []
        assert report.good_harmed == []
        assert report.not_batched == [], "each bad request must share a batch with a good one"
    growth = (rounds[1].rss_after - rounds[0].rss_after) / MiB
    assert growth < 384, f"server memory grew {growth:.0f} MiB over a second round of the same inputs"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_overload_is_answered_or_refused_with_unavailable(server: Server, protocol: str) -> None:
    """3x what the tier sustains: every request is answered or refused with UNAVAILABLE (gRPC) / 503 (HTTP).

    Outcomes only: each request ends (the client's timeout bounds it) as an answer or as the status a
    client can act on, some of each; never another error, never a hang.
    """
    load = robustness.overload(server, "streaming", factor=3.0, seconds=6.0, protocol=protocol)
    assert load.other == [], load.other
    assert load.rejected > 0, "3x the sustainable rate must overflow the streaming tier's queue"
    assert load.accepted > 0
    assert load.accepted + load.rejected == load.sent
    assert load.thrown_away == 0, "the tier refused requests it had admitted: work thrown away under overload"
    assert load.admitted == load.accepted, "every request the tier admitted was answered"


def test_dead_stub_fails_requests_clearly_and_is_recovered(tmp_path: Path) -> None:
    """On a server of its own (the streaming tier alone): the test kills a stub and restarts the server."""
    repository = tier_repository(tmp_path / "repository", "streaming")
    options = ServerOptions(repository=repository, endpoints=Endpoints.free())
    with Server(options, log_path=tmp_path / "tritonserver.log") as server:
        fault = robustness.kill_stub_under_load(server, "streaming")
        assert fault["in_flight_failed_clearly"] + fault["in_flight_ok"] == fault["in_flight"], fault
        assert fault["healthy_after_kill"] is False, "deep health must see the dead stub"
        assert fault["dead_stubs"] == [spec.tier("streaming").model(spec.Step.POSTPROCESS)]
        # The next request fails clearly: at the dead stub, or refused at the door while the requests that died
        # with it still hold the tier's room (until the server is restarted: docs/serving.md, "A dead stub").
        assert "not healthy" in fault["after_kill"] or (
            fault["after_kill"].startswith("unavailable") and spec.TIER_FULL_MESSAGE[:40] in fault["after_kill"]
        ), fault["after_kill"]
        assert fault["recovered"] is True
        assert server.healthy()

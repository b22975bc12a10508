"""`make bench` runs end to end: perf_analyzer on a tier, the three alternatives, the report and its chart.

A smoke run with short windows: it proves the benchmark works; its numbers are not asserted.
"""

from __future__ import annotations

from pathlib import Path

from tools.evaluate import bench
from tools.server.triton import Server


def test_bench_smoke_renders_the_report(server: Server, tmp_path: Path) -> None:
    assert bench.main(["--smoke", "--url", server.options.endpoints.grpc_url, "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    for expected in ("| streaming | 1 |", "model only (ONNX Runtime", "Ultralytics `predict` loop",
                     "client-side pipeline", "streaming p50 at concurrency 1", "preprocess_streaming"):  # fmt: skip
        assert expected in report, expected
    assert (tmp_path / "tiers.png").stat().st_size > 1000

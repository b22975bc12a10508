"""`make bench` runs end to end: perf_analyzer on a tier, where the time and memory go, the alternatives, the report.

A smoke run with short windows: it proves the benchmark works; its numbers are not asserted.
"""

from __future__ import annotations

import re
from pathlib import Path

import tritonclient.grpc as grpcclient

from pipelines import spec
from tools.evaluate import bench
from tools.server.triton import Server


def test_bench_smoke_renders_the_report(server: Server, tmp_path: Path) -> None:
    url = server.options.endpoints.grpc_url
    assert bench.main(["--smoke", "--url", url, "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    with grpcclient.InferenceServerClient(url) as c:
        version = c.get_server_metadata(as_json=True)["version"]
    for expected in (
        f"| triton | {version} (the server's metadata) |",
        "| streaming | 1 |",
        "1-minute load average after each phase",
        "compute ms per image",
        "| detector_streaming | ",
        "| postprocess_streaming (own) | ",
        "models only, as the streaming tier runs them",
        "Ultralytics `predict` loop",
        "client-side pipeline",
        "OpenCV (served), 8 per request",
        "DALI CPU graph, batch 8",
        "streaming p50 at concurrency 1 minus the models-only latency",
        "server memory with all tiers, at the peak (PSS)",
    ):
        assert expected in report, expected
    # Every model of the tier has a row of compute per image and one of memory, the attribute models too.
    tier = spec.tier("streaming")
    served = [tier.model(s) for s in spec.MODELS if bench.model_stats(url, tier.model(s)) is not None]
    assert {spec.Step.PREPROCESS.value, spec.Step.DETECTOR.value, spec.Step.GENDER.value} <= {
        m.split("_")[0] for m in served
    }
    for model in served:
        assert re.search(rf"^\| {model}( \(own\))? \| \d+ \| \d+ \| \d+ \| ", report, re.M), f"{model}: no step row"
        assert re.search(rf"^\| {model} \| \d+ \| \d+ \| \d+ \|$", report, re.M), f"{model}: no memory row"
    assert re.search(r"^\| tritonserver \| \d+ \| \d+ \| - \|$", report, re.M), "no memory row of tritonserver"
    assert (tmp_path / "tiers.png").stat().st_size > 1000

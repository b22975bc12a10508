"""What a running Triton says about itself: its metrics endpoint and its inference statistics.

For any server with known endpoints: the local one (tools/server/triton.py) and the serving image's
on a GPU host alike.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from typing import Any

import tritonclient.grpc as grpcclient

from pipelines import spec
from tools.server.endpoints import Endpoints
from tools.server.health import triton_ready


class Stats:
    """Read-only views of one server's counters (the API key where statistics are restricted)."""

    def __init__(self, endpoints: Endpoints, api_key: str | None = None):
        self.endpoints = endpoints
        self.api_key = api_key

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of Triton's metrics endpoint: (metric, labels, value)."""
        url = f"http://{self.endpoints.host}:{self.endpoints.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return [
            (metric, dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value))
            for metric, labels, value in re.findall(r"^(\w+)\{([^}]*)\} (\S+)$", text, re.MULTILINE)
        ]

    def metrics(self) -> dict[tuple[str, str], float]:
        """Triton's metrics per model as {(metric, model): value}, summed over other labels."""
        values: dict[tuple[str, str], float] = {}
        for metric, labels, value in self.samples():
            if "model" in labels:
                key = (metric, labels["model"])
                values[key] = values.get(key, 0.0) + value
        return values

    def statistics(self, model: str) -> dict[str, Any]:
        """One model's entry of Triton's inference statistics (its JSON form), read over gRPC."""
        key = self.api_key
        headers = {spec.GRPC_API_KEY_HEADER: key} if key else None  # statistics is restricted when keyed
        with grpcclient.InferenceServerClient(self.endpoints.grpc_url) as c:
            return c.get_inference_statistics(model, headers=headers, as_json=True)["model_stats"][0]

    def counts(self, model: str) -> tuple[int, int]:
        """(inferences, executions) the model ran so far: fewer executions than inferences means batches."""
        s = self.statistics(model)
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))

    def batch_sizes(self, model: str) -> Counter[int]:
        """How many executions the model ran at each batch size so far (Triton's per-model batch statistics)."""
        batches = self.statistics(model).get("batch_stats", [])
        return Counter({int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in batches})

    def admitted_in_flight(self) -> int:
        """Requests preprocess passed on and the tier has not yet answered.

        From the counters the python models publish (spec.ADMITTED_METRIC at preprocess, ANSWERED_METRIC
        at the tier's last step; both count error responses too) less the requests that failed at a step
        after preprocess without reaching that answer (nv_inference_request_failure of those steps: a
        request its client cancelled is dropped from the step's queue and counted there with reason
        CANCELED, core src/dynamic_batch_scheduler.cc). Exact because those steps never refuse what the
        tier admitted (pipelines.admission): a refusal at a full inner queue would be counted on the
        ensemble only, and could never be told apart from a request still in flight.
        """
        values = self.metrics()
        total = 0.0
        for tier in spec.TIERS:
            admitted = values.get((spec.ADMITTED_METRIC, tier.model(spec.Step.PREPROCESS)), 0.0)
            answered = values.get((spec.ANSWERED_METRIC, tier.model(tier.answers)), 0.0)
            after = tier.steps[tier.steps.index(spec.Step.PREPROCESS) + 1 :]
            failed = sum(values.get(("nv_inference_request_failure", tier.model(step)), 0.0) for step in after)
            total += max(admitted - answered - failed, 0.0)
        return int(total)


class Remote:
    """A server this process did not start (the serving image's on a GPU host): counters and readiness only."""

    def __init__(self, endpoints: Endpoints, api_key: str | None = None):
        self.stats = Stats(endpoints, api_key)

    def healthy(self) -> bool:
        return triton_ready(self.stats.endpoints.http_url)

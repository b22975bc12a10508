"""Metrics the python models publish on Triton's metrics endpoint (the drain reads the counters)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils


class Counter:
    """A counter labelled with the model.

    Holds its MetricFamily: Triton refuses to update a Metric whose family was garbage-collected.
    """

    def __init__(self, name: str, description: str, model: str):
        self.family = pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
        self.metric = self.family.Metric(labels={"model": model})

    def increment(self, value: int) -> None:
        if value:
            self.metric.increment(value)


class Gauge:
    """A gauge labelled with the model and its instance (each instance holds its own state).

    Set only when its value changes: each update is a round trip from the stub to the server."""

    def __init__(self, name: str, description: str, model: str, instance: str):
        self.family = pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.GAUGE)
        self.metric = self.family.Metric(labels={"model": model, "instance": instance})
        self.value: float | None = None

    def set(self, value: float) -> None:
        if value != self.value:
            self.metric.set(value)
            self.value = value

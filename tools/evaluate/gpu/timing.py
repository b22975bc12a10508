"""Images per second of each GPU step at several batch sizes on 1080p JPEGs, and the targets they meet."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch

from tools.evaluate.gpu import pieces
from tools.evaluate.gpu.images import bench_images
from tools.evaluate.gpu.models import Models
from tools.evaluate.gpu.pieces import genders, nms, postprocess, run_graph, sync
from tools.evaluate.report import met

BATCHES = (1, 8, 32, 128)
TARGET_BATCH = 32
TARGETS = {"preprocess": 3500.0, "postprocess": 10000.0}  # img/s at TARGET_BATCH on 1080p JPEGs (the issue's)
STEPS = ("decode + letterbox", "detector fp16", "detector fp32", "NMS", "crops + labels", "postprocess")


def rate(step: Callable[[], object], batch: int, device: torch.device, min_seconds: float, min_runs: int) -> float:
    """Images per second of `step` on one batch at a time (as one model instance runs them), after a warm-up."""
    step()
    sync(device)
    runs, start = 0, time.perf_counter()
    while True:
        step()
        sync(device)
        runs += 1
        elapsed = time.perf_counter() - start
        if runs >= min_runs and elapsed >= min_seconds:
            return batch * runs / elapsed


def throughput(models: Models, batch: int, device: torch.device, min_seconds: float, min_runs: int) -> dict[str, float]:
    """img/s of every step at one batch size on the 1080p JPEGs; the face detector's and classifier's calls
    are not timed (their answers are replayed)."""
    bench = bench_images()
    encoded = [bench[i % len(bench)] for i in range(batch)]
    pipe, _ = pieces.served_graph(batch, device)
    measure = functools.partial(rate, batch=batch, device=device, min_seconds=min_seconds, min_runs=min_runs)
    rates = {"decode + letterbox": measure(functools.partial(run_graph, pipe, encoded))}
    boxed = run_graph(pipe, encoded)
    for precision in models.detectors:
        rates[f"detector {precision}"] = measure(functools.partial(models.head, precision, boxed.images))
    predictions = models.head("fp32", boxed.images)
    calls = models.calls()
    done = postprocess(models, predictions, boxed, calls)
    replayed = {step: call.replay() for step, call in calls.items()}  # the models' calls are not timed

    rates["NMS"] = measure(functools.partial(nms, models, predictions, boxed.geometry))
    rates["crops + labels"] = measure(functools.partial(genders, models, done.found, boxed, replayed))
    rates["postprocess"] = measure(functools.partial(postprocess, models, predictions, boxed, replayed))
    return rates


def targets(rates: dict[int, dict[str, float]]) -> list[tuple[str, str, str]]:
    """(target, measured, met) at TARGET_BATCH; preprocess and postprocess also against the detector."""
    at = rates.get(TARGET_BATCH)
    if at is None:
        return [
            (f"{name} >= {value:.0f} img/s", f"batch {TARGET_BATCH} not measured", met(None))
            for name, value in TARGETS.items()
        ]
    detector = at.get("detector fp16", at["detector fp32"])
    out = []
    for name, step in (("preprocess", "decode + letterbox"), ("postprocess", "postprocess")):
        ok = at[step] >= TARGETS[name] and at[step] >= detector
        target = f"{name} >= {TARGETS[name]:.0f} img/s and >= the detector ({detector:.0f} img/s)"
        out.append((target, f"{at[step]:.0f} img/s", met(ok)))
    return out

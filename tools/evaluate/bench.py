"""`make bench`: perf_analyzer on every tier with real JPEGs, where the time and memory go, and the alternatives.

Writes bench/REPORT.md and its chart. In one run:
1. every tier through perf_analyzer (concurrency sweep), with each step's compute per image from the
   server's statistics and the memory of every model's process;
2. models only: the models a tier runs (the detector, and the attribute models its postprocess calls:
   gender, face where served) in ONNX Runtime in this process, as often per image as the tier ran them;
3. Ultralytics' own `YOLO(...).predict` loop on the same exported ONNX (it only detects);
4. a client-side pipeline: cv2 decode + Ultralytics LetterBox + ONNX Runtime + Ultralytics NMS;
5. the letterbox alone: the cpu variant's (OpenCV) against the DALI graph on CPU operators.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import psutil
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pipelines import manifest, onnx_session, spec
from pipelines.paths import REPOSITORY, ROOT
from pipelines.tracking.camera import Camera
from tools.evaluate import bench_bridge
from tools.evaluate.corpus import ASSETS
from tools.evaluate.perf_input import input_data
from tools.evaluate.report import cpu_model, met, nvidia_smi, table, versions
from tools.server.endpoints import Endpoints
from tools.server.health import stubs
from tools.server.triton import Server, ServerOptions

log = logging.getLogger("bench")

PERF_ANALYZER = ROOT / "build" / "perf_analyzer" / "perf_analyzer"
MIB = 1 << 20
# Targets for the cpu variant on a 2-core machine (the issue's), checked in the report.
TARGET_BATCH_VS_MODELS = 0.90  # batch tier throughput / models only
TARGET_STREAMING_OVERHEAD_MS = 10.0  # streaming p50 at concurrency 1 minus the models-only latency
TARGET_PREPROCESS_SHARE = 0.10  # of the detector's compute per image, batch tier
TARGET_POSTPROCESS_SHARE = 0.05  # the same, postprocess without the models it calls
TARGET_MEMORY_GIB = 3.5  # all tiers loaded, PSS, at its peak during the sweep
TARGET_TRACKING_SHARE = 0.02  # the track tier: its tracker per frame / the detector's
ATTRIBUTES = tuple(s for s in spec.MODELS if s not in spec.PIPELINE)  # models postprocess calls (BLS)
DETECTOR_BATCHES = (1, 4, 8, 16)  # models only: the detector at each, the best one counts


def images() -> list[bytes]:
    """The sample photos and resized copies: real JPEGs of several sizes."""
    out = []
    for name in ("bus.jpg", "zidane.jpg"):
        data = (ASSETS / name).read_bytes()
        out.append(data)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        half = cv2.resize(decoded, (decoded.shape[1] // 2, decoded.shape[0] // 2), interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", half, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def sweep(tier: spec.Tier) -> list[int]:
    """Concurrencies per tier: 1 (latency), half and all of its cpu max batch (throughput)."""
    top = tier.batching(spec.Variant.CPU).max_batch_size
    return sorted({1, top // 2, top})


# --- Server statistics ---------------------------------------------------------------------------------


COMPUTE_PARTS = ("compute_input", "compute_infer", "compute_output")  # Triton's statistics, per batch


@dataclass(frozen=True)
class StepStats:
    """One model's statistics over a tier's sweep (differences of Triton's cumulative counters)."""

    requests: int  # requests answered (for an attribute model: BLS calls)
    executions: int
    inputs: int  # batch rows: images, or crops / person regions for an attribute model
    queue_ns: int  # summed over requests
    request_ns: int  # end to end inside the model, summed over requests (queue + compute)
    compute_ns: int  # input + infer + output, summed over executions (each batch counted once)
    output_ns: int  # its output part: after the model's answers, until its responses are sent

    @classmethod
    def between(cls, before: dict[str, Any], after: dict[str, Any]) -> StepStats:
        def count(s: dict[str, Any], key: str) -> int:
            return int(s.get(key, 0))

        def ns(s: dict[str, Any], key: str) -> int:
            return int(s["inference_stats"].get(key, {}).get("ns", 0))

        def compute(s: dict[str, Any], parts: tuple[str, ...] = COMPUTE_PARTS) -> int:
            return sum(int(b.get(p, {}).get("ns", 0)) for b in s.get("batch_stats", []) for p in parts)

        return cls(
            requests=int(after["inference_stats"].get("success", {}).get("count", 0))
            - int(before["inference_stats"].get("success", {}).get("count", 0)),
            executions=count(after, "execution_count") - count(before, "execution_count"),
            inputs=count(after, "inference_count") - count(before, "inference_count"),
            queue_ns=ns(after, "queue") - ns(before, "queue"),
            request_ns=ns(after, "success") - ns(before, "success"),
            compute_ns=compute(after) - compute(before),
            output_ns=compute(after, ("compute_output",)) - compute(before, ("compute_output",)),
        )


def model_stats(url: str, model: str) -> dict[str, Any] | None:
    """Triton's statistics of one model; None when the server does not serve it."""
    with grpcclient.InferenceServerClient(url) as c:
        try:
            return c.get_inference_statistics(model, as_json=True)["model_stats"][0]
        except InferenceServerException:
            return None


@dataclass
class TierResult:
    tier: str
    rows: list[dict[str, float]] = field(default_factory=list)  # per concurrency
    steps: dict[spec.Step, StepStats] = field(default_factory=dict)  # the tier's models over its sweep

    @property
    def best_throughput(self) -> float:
        return float(np.nanmax([r["throughput"] for r in self.rows]))

    @property
    def images(self) -> int:
        return max(self.steps[spec.Step.DETECTOR].inputs, 1)

    @property
    def attributes(self) -> list[spec.Step]:
        return [s for s in ATTRIBUTES if s in self.steps]

    def per_image_ms(self, step: spec.Step) -> float:
        """Compute per image of the tier. Postprocess without the attribute models it waits for (BLS)."""
        ns = self.steps[step].compute_ns
        if step is spec.Step.POSTPROCESS:
            ns -= sum(self.steps[a].request_ns for a in self.attributes)
        return ns / self.images / 1e6

    def output_ms(self, step: spec.Step) -> float:
        return self.steps[step].output_ns / self.images / 1e6

    def share(self, step: spec.Step) -> float:
        """A step's compute per image as a fraction of the detector's."""
        return self.per_image_ms(step) / self.per_image_ms(spec.Step.DETECTOR)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(PERF_ANALYZER.parent / "lib"), env.get("LD_LIBRARY_PATH")) if p
    )
    return env


def perf_analyzer(url: str, tier: spec.Tier, data_file: Path, out: Path, requests: int, retry: bool) -> TierResult:
    """perf_analyzer's concurrency sweep on one tier; per-step figures from the server's statistics.

    Windows count requests, not milliseconds: at a few images/s a time window holds too few to be stable.
    An unstable concurrency is measured again with longer windows when `retry` (not in a smoke run).
    """
    if not PERF_ANALYZER.is_file():
        raise FileNotFoundError(f"{PERF_ANALYZER} is missing: run `make perf-analyzer`")
    result = TierResult(tier.name)
    before = {s: model_stats(url, tier.model(s)) for s in tier.models}
    for concurrency in sweep(tier):
        report = out / f"perf_{tier.name}_c{concurrency}.csv"
        cmd = [
            str(PERF_ANALYZER), "-m", tier.model(spec.Step.ENSEMBLE), "-u", url, "-i", "grpc",
            "--input-data", str(data_file), "--concurrency-range", f"{concurrency}:{concurrency}", "-f", str(report),
        ]  # fmt: skip
        count = max(requests, 2 * concurrency)
        windows = ["--measurement-mode", "count_windows", "--measurement-request-count", str(count)]
        log.info("perf_analyzer %s concurrency %d", tier.model(spec.Step.ENSEMBLE), concurrency)
        stable = True
        done = subprocess.run([*cmd, *windows, "-s", "25", "--max-trials", "4"], env=_env(), capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        if retry and done.returncode != 0 and "stable measurement" in done.stdout + done.stderr:
            # A noisy machine: longer windows and a looser bound, and the report says so.
            stable = False
            longer = ["--measurement-mode", "count_windows", "--measurement-request-count", str(3 * count)]
            done = subprocess.run([*cmd, *longer, "-s", "100", "--max-trials", "5"], env=_env(), capture_output=True,
                                  text=True, timeout=900)  # fmt: skip
        if done.returncode != 0 and "stable measurement" in done.stdout + done.stderr:
            log.warning("%s concurrency %d: no stable measurement; left out", tier.name, concurrency)
            nan = float("nan")
            result.rows.append({"concurrency": concurrency, "throughput": nan, "p50_ms": nan, "p95_ms": nan,
                                "p99_ms": nan, "stable": False})  # fmt: skip
            continue
        if done.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        with report.open() as f:
            row = next(csv.DictReader(f))
        result.rows.append(
            {
                "concurrency": concurrency,
                "throughput": float(row["Inferences/Second"]),
                **{f"p{q}_ms": float(row[f"p{q} latency"]) / 1000 for q in (50, 95, 99)},
                "stable": stable,
            }
        )
    for step, first in before.items():
        last = model_stats(url, tier.model(step))
        if first is not None and last is not None:
            result.steps[step] = StepStats.between(first, last)
    return result


# --- Memory ---------------------------------------------------------------------------------------------


def local_server(url: str) -> psutil.Process | None:
    """The process on this machine listening on the gRPC address's port, if any (memory is read from it)."""
    port = int(url.rsplit(":", 1)[1])
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    return None


def memory(server: psutil.Process) -> dict[str, int]:
    """PSS (shared pages split between the processes that map them) of tritonserver and of each model's stubs."""
    out = {"tritonserver": server.memory_full_info().pss}
    for stub in stubs(server):
        try:
            out[stub.model] = out.get(stub.model, 0) + stub.process.memory_full_info().pss
        except psutil.Error:
            continue
    return out


def shared_memory(server: psutil.Process) -> dict[str, int]:
    """Bytes of each model's python-backend region in /dev/shm (a memory-backed emptyDir in a pod).

    A region grows with the largest tensors its stub exchanged and never shrinks.
    """
    out: dict[str, int] = {}
    for stub in stubs(server):
        region = Path("/dev/shm") / stub.cmdline[2] if len(stub.cmdline) > 2 else None
        if region is not None and region.is_file():
            out[stub.model] = out.get(stub.model, 0) + region.stat().st_size
    return out


@dataclass
class MemoryWatch:
    """Memory per model at load and at the peak of the total, sampled while the tiers run; the load average."""

    server: psutil.Process
    interval_s: float = 5.0
    loaded: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    shm: dict[str, int] = field(default_factory=dict)  # at the end: regions only grow
    max_load: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemoryWatch:
        self.loaded = memory(self.server)
        self.peak = dict(self.loaded)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        now = memory(self.server)
        if sum(now.values()) > sum(self.peak.values()):
            self.peak = now
        self.max_load = max(self.max_load, os.getloadavg()[0])

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.shm = shared_memory(self.server)


# --- Alternatives in this process -------------------------------------------------------------------------


def _letterboxed(jpegs: list[bytes]) -> list[np.ndarray]:
    from ultralytics.data.augment import LetterBox

    box = LetterBox((spec.IMAGE_SIZE, spec.IMAGE_SIZE), auto=False)
    out = []
    for j in jpegs:
        bgr = cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
        rgb = box(image=bgr)[..., ::-1]
        out.append(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0)
    return out


def _session(model: str) -> ort.InferenceSession:
    """A model's ONNX as the cpu variant serves it."""
    return onnx_session.session(REPOSITORY / model / "1" / "model.onnx")


def _median_s(run: Callable[[], object], seconds: float) -> float:
    """Median wall time of `run` over about `seconds` (after one warm-up call)."""
    run()
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(times) < 3:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def detector_only(jpegs: list[bytes], seconds: float) -> dict[int, float]:
    """The detector alone on letterboxed tensors: seconds per call at each batch size."""
    session = _session(spec.TIERS[0].model(spec.Step.DETECTOR))
    tensors = _letterboxed(jpegs)
    per_call = {}
    for batch in DETECTOR_BATCHES:
        x = np.stack([tensors[i % len(tensors)] for i in range(batch)])
        per_call[batch] = _median_s(lambda x=x: session.run(None, {spec.IMAGES.name: x}), seconds)
    return per_call


@dataclass(frozen=True)
class ModelsOnly:
    """The models a tier runs, alone in this process, each as often per image as the tier ran it."""

    detector_s: dict[int, float]  # seconds per call, per batch size
    attributes_ms: dict[str, float]  # model -> ms per image (its calls per image x the time of a call)
    calls: dict[str, str]  # model -> how it was called, for the report

    @property
    def best_batch(self) -> int:
        return min(self.detector_s, key=lambda b: self.detector_s[b] / b)

    def per_image_ms(self, batch: int) -> float:
        return self.detector_s[batch] / batch * 1000 + sum(self.attributes_ms.values())

    @property
    def throughput(self) -> float:
        return 1000 / self.per_image_ms(self.best_batch)

    @property
    def latency_ms(self) -> float:
        """One image at a time: the detector at batch 1, then its attribute models."""
        return self.per_image_ms(1)


def models_only(result: TierResult, detector_s: dict[int, float], seconds: float) -> ModelsOnly:
    """The tier's attribute models timed at the mean size of the tier's calls, as many calls per image as it made.

    Their inputs are random (compute does not depend on the values); their shapes are the models' own.
    """
    attributes, calls = {}, {}
    for step in result.attributes:
        stats, model = result.steps[step], spec.tier(result.tier).model(step)
        if not stats.executions:
            continue
        session = _session(model)
        (given,) = session.get_inputs()
        size = max(round(stats.inputs / stats.executions), 1)
        x = np.random.default_rng(0).random((size, *given.shape[1:]), dtype=np.float32)
        call_s = _median_s(lambda s=session, n=given.name, x=x: s.run(None, {n: x}), seconds)
        per_image = stats.executions / result.images
        attributes[model] = per_image * call_s * 1000
        calls[model] = f"{per_image:.2f} calls per image of {size} inputs, {call_s * 1000:.1f} ms each"
    return ModelsOnly(detector_s, attributes, calls)


def ultralytics_predict(jpegs: list[bytes], seconds: float) -> dict[str, Any]:
    """Ultralytics' own predict loop on the same exported ONNX (fixed 640 letterbox)."""
    from ultralytics import YOLO

    path = REPOSITORY / spec.TIERS[0].model(spec.Step.DETECTOR) / "1" / "model.onnx"
    model = YOLO(str(path), task="detect")
    frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    model.predict(frames[0], imgsz=spec.IMAGE_SIZE, rect=False, verbose=False)
    count, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        # Ultralytics decodes files itself; give it the encoded bytes' decode cost too.
        frame = cv2.imdecode(np.frombuffer(jpegs[count % len(jpegs)], np.uint8), cv2.IMREAD_COLOR)
        model.predict(frame, imgsz=spec.IMAGE_SIZE, rect=False, verbose=False)
        count += 1
    return {"throughput": count / (time.monotonic() - start)}


def client_pipeline(jpegs: list[bytes], seconds: float) -> dict[str, Any]:
    """Decode + letterbox + ONNX Runtime + NMS in the client process, one image at a time."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    session = _session(spec.TIERS[0].model(spec.Step.DETECTOR))
    count, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        (x,) = _letterboxed([jpegs[count % len(jpegs)]])
        (pred,) = session.run(None, {spec.IMAGES.name: x[None]})
        non_max_suppression(torch.from_numpy(pred), spec.DEFAULT_CONF_THRESHOLD, spec.DEFAULT_IOU_THRESHOLD)
        count += 1
    return {"throughput": count / (time.monotonic() - start)}


def letterbox_costs(jpegs: list[bytes], seconds: float) -> dict[str, float]:
    """CPU ms per image of the cpu variant's letterbox (OpenCV) and of the DALI graph on CPU operators.

    Process CPU time (all threads), so that a busy machine inflates the figures less than wall time.
    """
    from pipelines.dali.letterbox import cpu_pipeline
    from pipelines.opencv import letterbox

    cv2.setNumThreads(spec.CPU_PREPROCESS_THREADS)
    encoded = [np.frombuffer(j, np.uint8) for j in jpegs]
    out = {}
    for batch in (1, 8):
        request = [encoded[i % len(encoded)] for i in range(batch)]
        pipe = cpu_pipeline(batch)
        runs: dict[str, Callable[[], object]] = {
            f"OpenCV (served), {batch} per request": lambda r=request: letterbox.letterbox(r),
            f"DALI CPU graph, batch {batch}, {spec.CPU_THREADS} threads": lambda r=request, p=pipe: [
                [np.array(t) for t in o] for o in p.run(**{spec.IMAGE.name: r})
            ],
        }
        for name, run in runs.items():
            run()
            count, start, cpu = 0, time.monotonic(), time.process_time()
            while time.monotonic() - start < seconds or count < 3:
                run()
                count += 1
            out[name] = (time.process_time() - cpu) / count / batch * 1000
    return out


# --- Report -----------------------------------------------------------------------------------------------


def machine(url: str) -> dict[str, str]:
    with grpcclient.InferenceServerClient(url) as c:
        triton = c.get_server_metadata(as_json=True)["version"]
    record = manifest.read(REPOSITORY / spec.TIERS[0].model(spec.Step.DETECTOR) / "1", manifest.Detector)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "memory": f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB",
        "gpu": nvidia_smi("-L") or "none (cpu variant)",
        **versions("python"),
        "triton": f"{triton} (the server's metadata)",
        **versions("onnxruntime", "opencv", "torch", "ultralytics"),
        "detector": f"{Path(record.artifact.source).name} ({(record.artifact.source_sha256 or '?')[:12]}), "
        f"{spec.IMAGE_SIZE}px",
    }


def charts(results: list[TierResult], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        c = [row["concurrency"] for row in r.rows]
        a.plot(c, [row["throughput"] for row in r.rows], marker="o", label=r.tier)
        b.plot(c, [row["p50_ms"] for row in r.rows], marker="o", label=f"{r.tier} p50")
        b.plot(c, [row["p99_ms"] for row in r.rows], marker="x", linestyle="--", label=f"{r.tier} p99")
    a.set(xlabel="concurrency", ylabel="images/s", title="throughput")
    b.set(xlabel="concurrency", ylabel="ms", title="latency")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tiers.png", dpi=100)
    plt.close(fig)
    names.append("tiers.png")
    return names


@dataclass
class Run:
    """Everything one bench run measured."""

    facts: dict[str, str]
    results: list[TierResult]
    models: dict[str, ModelsOnly]  # tier -> its models alone
    ultralytics: dict[str, Any]
    client: dict[str, Any]
    letterbox_ms: dict[str, float]
    watch: MemoryWatch | None
    smoke: bool


def _steps_table(results: list[TierResult]) -> list[str]:
    lines = [
        "Per step over the tier's sweep (server statistics). Compute per image counts each execution once and "
        "divides by the images the tier detected on; postprocess's excludes the time it waited for the models "
        "it calls (their requests' time, queue included).",
        "",
    ]
    rows = []
    for r in results:
        for step, s in r.steps.items():
            name = spec.tier(r.tier).model(step) + (" (own)" if step is spec.Step.POSTPROCESS else "")
            queue = s.queue_ns / max(s.requests, 1) / 1e6
            rows.append((name, s.requests, s.executions, s.inputs, f"{queue:.1f}", f"{r.per_image_ms(step):.1f}",
                         f"{r.share(step):.1%}"))  # fmt: skip
    header = ("model", "requests", "executions", "inputs", "queue ms per request", "compute ms per image",
              "of the detector's")  # fmt: skip
    return lines + table(header, rows)


def _memory_table(watch: MemoryWatch) -> list[str]:
    def order(name: str) -> tuple[int, str]:
        step = name.split("_", 1)[0]
        known = [s.value for s in spec.MODELS]
        return (known.index(step) if step in known else -1, name)

    names = sorted(set(watch.loaded) | set(watch.peak), key=order)
    header = ("process", "PSS at load, MiB", "PSS at the peak, MiB", "its /dev/shm region at the end, MiB")
    rows = [
        (n, f"{watch.loaded.get(n, 0) / MIB:.0f}", f"{watch.peak.get(n, 0) / MIB:.0f}",
         f"{watch.shm[n] / MIB:.0f}" if n in watch.shm else "-")
        for n in names
    ]  # fmt: skip
    rows.append(("**total**", *(f"{sum(m.values()) / MIB:.0f}" for m in (watch.loaded, watch.peak, watch.shm))))
    return [
        *table(header, rows),
        "",
        "A stub's region in /dev/shm holds the tensors it exchanges with the server, grows with the largest and "
        "never shrinks; its pages are in the PSS of the stub and of tritonserver, which both map it. The highest "
        f"1-minute load average seen while the tiers ran: {watch.max_load:.1f}.",
    ]


def _targets(run: Run) -> list[str]:
    by_tier = {r.tier: r for r in run.results}
    checks: list[tuple[str, str, str, bool | None]] = []  # measure, value, target, met (None: no target)
    if "batch" in by_tier:
        batch, models = by_tier["batch"], run.models["batch"]
        ratio = batch.best_throughput / models.throughput
        checks.append(("batch tier / models only (throughput)", f"{ratio:.2f}x", f">= {TARGET_BATCH_VS_MODELS}x",
                       ratio >= TARGET_BATCH_VS_MODELS))  # fmt: skip
        for step, target in ((spec.Step.PREPROCESS, TARGET_PREPROCESS_SHARE),
                             (spec.Step.POSTPROCESS, TARGET_POSTPROCESS_SHARE)):  # fmt: skip
            share = batch.share(step)
            checks.append((f"batch tier: {step.value} compute per image / the detector's", f"{share:.1%}",
                           f"<= {target:.0%}", share <= target))  # fmt: skip
    if "streaming" in by_tier:
        p50 = next(r["p50_ms"] for r in by_tier["streaming"].rows if r["concurrency"] == 1)
        overhead = p50 - run.models["streaming"].latency_ms
        target = TARGET_STREAMING_OVERHEAD_MS
        checks.append(("streaming p50 at concurrency 1 minus the models-only latency", f"{overhead:.1f} ms",
                       f"<= {target:g} ms", overhead <= target))  # fmt: skip
    if "track" in by_tier:
        track = by_tier["track"]
        tracker, answer = track.per_image_ms(spec.Step.TRACKER), answer_ms(by_tier)
        share = (tracker - answer) / track.per_image_ms(spec.Step.DETECTOR)
        checks.append((f"track tier: tracker compute per frame ({tracker:.1f} ms) less the tier's answer it sends "
                       f"as the last step ({answer:.1f} ms) / the detector's", f"{share:.1%}",
                       f"<= {TARGET_TRACKING_SHARE:.0%}", share <= TARGET_TRACKING_SHARE))  # fmt: skip
        camera = tracking_memory()
        checks.append((f"track tier: one camera's state with {camera.tracks} persons tracked (arrays)",
                       f"{camera.nbytes} bytes", "-", None))  # fmt: skip
    if run.watch is not None:
        gib = sum(run.watch.peak.values()) / (1 << 30)
        checks.append(("server memory with all tiers, at the peak (PSS)", f"{gib:.2f} GiB",
                       f"<= {TARGET_MEMORY_GIB} GiB", gib <= TARGET_MEMORY_GIB))  # fmt: skip
    for r in run.results:
        for name, other in (("Ultralytics predict", run.ultralytics), ("client-side pipeline", run.client)):
            ratio = r.best_throughput / other["throughput"]
            checks.append((f"{r.tier} tier / {name} (throughput; it only detects)", f"{ratio:.2f}x", "-", None))
    return table(("measure", "value", "target", "met"), ((*c[:3], met(c[3])) for c in checks))


def answer_ms(by_tier: dict[str, TierResult]) -> float:
    """What sending a tier's answer costs the tier's last step, per image.

    A python model's compute_output runs from its process's answers until its responses are sent
    (python_backend src/python_be.cc, ProcessRequests, r24.10), and the response of an ensemble's last
    step completes the ensemble's answer to the client in that thread. So the track tier's tracker pays
    the answer that postprocess pays in the other tiers: the difference between streaming's postprocess
    (last there) and track's (not last). Track's also sends CANDIDATES, so the difference, if anything,
    falls short of the answer's cost. 0 without both tiers in the run.
    """
    if "streaming" not in by_tier or "track" not in by_tier:
        return 0.0
    last, inner = (by_tier[t].output_ms(spec.Step.POSTPROCESS) for t in ("streaming", "track"))
    return max(last - inner, 0.0)


@dataclass(frozen=True)
class CameraMemory:
    tracks: int
    nbytes: int


def tracking_memory(frames: int = 10) -> CameraMemory:
    """One camera's tracking state after a few frames of the sample photos' persons (pipelines.tracking, in this
    process: the arrays that grow with the people in view; the Python objects around them add a few hundred
    bytes per camera)."""
    persons = [np.array([[50 + 60 * k, 100, 100 + 60 * k, 300] for k in range(n)], np.float32) for n in (4, 6)]
    state = Camera()
    for f in range(frames):
        boxes = persons[f % 2] + f
        state.update(boxes, np.full(len(boxes), 0.8, np.float32), np.zeros(len(boxes), np.int32),
                     np.full(len(boxes), 0.9, np.float32))  # fmt: skip
    return CameraMemory(len(state.tracker.ids), state.nbytes)


def _where_time_goes(run: Run) -> list[str]:
    """Per tier, the compute around the detector per image and what it is made of."""
    lines = []
    for r in run.results:
        around = [s for s in r.steps if s is not spec.Step.DETECTOR]
        parts = ", ".join(f"{s.value} {r.per_image_ms(s):.1f} ms ({r.share(s):.0%})" for s in around)
        total = sum(r.per_image_ms(s) for s in around)
        models = run.models[r.tier]
        alone = f"{models.per_image_ms(1):.1f} ms per image at batch 1"
        if models.best_batch != 1:
            alone += f", {models.per_image_ms(models.best_batch):.1f} ms at batch {models.best_batch}"
        lines.append(
            f"- `{r.tier}`: the detector computes {r.per_image_ms(spec.Step.DETECTOR):.1f} ms per image; around it "
            f"{total:.1f} ms ({parts}). The models alone need {alone}."
        )
    return lines


def render(out: Path, run: Run) -> Path:
    lines = ["# Benchmark report", ""]
    if run.smoke:
        lines += ["**Smoke run** (short windows, not for quoting).", ""]
    lines += [
        "Produced by `make bench` (`python -m tools.evaluate.bench`); every number below was measured in this "
        "one run, on a machine other jobs may share (see the load average).",
        "",
    ]
    lines += [*table(("machine", ""), run.facts.items()), ""]
    lines += ["## Tiers (perf_analyzer, gRPC, real JPEGs, cpu variant)", "", "![tiers](tiers.png)", ""]
    lines += table(
        ("tier", "concurrency", "images/s", "p50 ms", "p95 ms", "p99 ms", "stable within 25%"),
        (
            (r.tier, f"{row['concurrency']:.0f}", f"{row['throughput']:.2f}", f"{row['p50_ms']:.1f}",
             f"{row['p95_ms']:.1f}", f"{row['p99_ms']:.1f}", met(row["stable"]))
            for r in run.results
            for row in r.rows
        ),
    )  # fmt: skip
    lines += ["", "## Where the time goes", "", *_steps_table(run.results), "", *_where_time_goes(run)]
    lines += ["", "## Memory (all tiers loaded)", ""]
    if run.watch is None:
        lines += ["Not measured: the server is not a process of this machine."]
    else:
        lines += [
            f"PSS of tritonserver and of each model's python stub(s), after loading and when their total was "
            f"highest while the tiers ran (sampled every {run.watch.interval_s:g} s).",
            "",
            *_memory_table(run.watch),
        ]
    lines += ["", "## Alternatives (same images, same weights, this process, one after another)", ""]
    alternatives = []
    for tier, m in run.models.items():
        per_batch = ", ".join(f"batch {b}: {b / s:.2f}" for b, s in m.detector_s.items())
        attributes = "; ".join(f"{name}: {how}" for name, how in m.calls.items()) or "no attribute model ran"
        alternatives.append((
            f"models only, as the {tier} tier runs them (ONNX Runtime, {spec.CPU_THREADS} threads)",
            f"{m.throughput:.2f}",
            f"detector best at batch {m.best_batch} ({per_batch} images/s); {attributes}; "
            f"latency of one image {m.latency_ms:.1f} ms",
        ))  # fmt: skip
    alternatives += [
        ("Ultralytics `predict` loop", f"{run.ultralytics['throughput']:.2f}",
         "same ONNX, fixed 640 letterbox, detection only"),
        ("client-side pipeline", f"{run.client['throughput']:.2f}",
         "cv2 + LetterBox + ONNX Runtime + NMS, detection only"),
    ]  # fmt: skip
    lines += table(("alternative", "images/s", "note"), alternatives)
    lines += ["", "Letterbox alone, CPU time per image (this process, all its threads):", ""]
    lines += table(("letterbox", "CPU ms per image"), ((name, f"{ms:.1f}") for name, ms in run.letterbox_ms.items()))
    lines += ["", "## Targets", "", *_targets(run)]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--smoke", action="store_true", help="one tier, short windows: proves the bench runs")
    parser.add_argument("--url", help="use a running server's gRPC address instead of starting one (cpu variant)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    tiers = [spec.tier("streaming")] if args.smoke else list(spec.TIERS)
    requests, seconds = (8, 1.0) if args.smoke else (40, 15.0)
    jpegs = images()
    data_file = input_data(args.out / "input_data.json", jpegs)

    def run(url: str) -> int:
        facts = machine(url)
        load: list[str] = []  # the 1-minute load average after each phase: what else ran meanwhile

        def after(phase: str, value: Any) -> Any:
            load.append(f"{phase} {os.getloadavg()[0]:.1f}")
            return value

        after("start", None)
        process = local_server(url)
        watch = MemoryWatch(process) if process is not None else None
        with watch or contextlib.nullcontext():
            results = [perf_analyzer(url, t, data_file, args.out, requests, not args.smoke) for t in tiers]
        after("tiers", None)
        log.info("alternatives: models only, Ultralytics predict, client-side pipeline, letterboxes")
        detector_s = after("models only", detector_only(jpegs, seconds))
        outcome = Run(
            facts=facts,
            results=results,
            models={r.tier: models_only(r, detector_s, seconds / 5) for r in results},
            ultralytics=after("Ultralytics", ultralytics_predict(jpegs, seconds)),
            client=after("client-side pipeline", client_pipeline(jpegs, seconds)),
            letterbox_ms=after("letterboxes", letterbox_costs(jpegs, seconds / 5)),
            watch=watch,
            smoke=args.smoke,
        )
        facts[f"1-minute load average after each phase ({os.cpu_count()} cores)"] = ", ".join(load)
        charts(results, args.out)
        report = render(args.out, outcome)
        bench_bridge.append(report, url, jpegs, args.smoke)  # Redis -> bridge -> tier -> Kafka vs the tier
        log.info("wrote %s", report)
        return 0

    if args.url:
        return run(args.url)
    with Server(ServerOptions(endpoints=Endpoints.free()), log_path=args.out / "tritonserver.log") as server:
        return run(server.options.endpoints.grpc_url)


if __name__ == "__main__":
    sys.exit(main())

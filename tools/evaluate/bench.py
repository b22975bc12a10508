"""`make bench`: perf_analyzer on every tier with real JPEGs, and the alternatives, in one run.

Writes bench/REPORT.md and its charts. Side by side on the same images and weights:
1. model only: ONNX Runtime on letterboxed tensors at its best batch size (the limit);
2. Ultralytics' own `YOLO(...).predict` loop on the same exported ONNX;
3. a client-side pipeline: cv2 decode + Ultralytics LetterBox + ONNX Runtime + Ultralytics NMS.
The tiers also classify every person's gender; the alternatives only detect.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient

from pipelines import manifest, spec
from tools.evaluate.corpus import ASSETS
from tools.server.triton import ROOT, Endpoints, Server, ServerOptions

log = logging.getLogger("bench")

PERF_ANALYZER = ROOT / "build" / "perf_analyzer" / "perf_analyzer"
REPOSITORY = ROOT / "model_repository"
# Targets for the cpu variant on a 2-core machine (the issue's), checked in the report.
TARGET_BATCH_VS_MODEL = 0.95
TARGET_STREAMING_OVERHEAD_MS = 10.0
TARGET_TIER_VS_ULTRALYTICS = 1.0


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


@dataclass
class TierResult:
    tier: str
    rows: list[dict[str, float]] = field(default_factory=list)  # per concurrency
    steps: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> avg queue/compute ms per request

    @property
    def best_throughput(self) -> float:
        return float(np.nanmax([r["throughput"] for r in self.rows]))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(PERF_ANALYZER.parent / "lib"), env.get("LD_LIBRARY_PATH")) if p
    )
    return env


def _stats(url: str, model: str) -> dict[str, Any]:
    c = grpcclient.InferenceServerClient(url)
    return c.get_inference_statistics(model, as_json=True)["model_stats"][0]


def _step_times(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    def delta(key: str, part: str) -> float:
        return float(after["inference_stats"].get(key, {}).get(part, 0)) - float(
            before["inference_stats"].get(key, {}).get(part, 0)
        )

    n = max(delta("success", "count"), 1.0)
    executions = float(after.get("execution_count", 0)) - float(before.get("execution_count", 0))
    return {
        "requests": n,
        "executions": executions,
        "queue_ms": delta("queue", "ns") / n / 1e6,
        "compute_ms": (delta("compute_input", "ns") + delta("compute_infer", "ns") + delta("compute_output", "ns"))
        / n
        / 1e6,
    }


def perf_analyzer(url: str, tier: spec.Tier, data_file: Path, out: Path, requests: int) -> TierResult:
    """perf_analyzer's concurrency sweep on one tier; per-step times from the server's statistics.

    Windows count requests, not milliseconds: at a few images/s a time window holds too few to be stable.
    """
    if not PERF_ANALYZER.is_file():
        raise FileNotFoundError(f"{PERF_ANALYZER} is missing: run `make perf-analyzer`")
    result = TierResult(tier.name)
    models = [tier.model(s) for s in spec.MODELS]
    before = {m: _stats(url, m) for m in models}
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
        if done.returncode != 0 and "stable measurement" in done.stdout + done.stderr:
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
    result.steps = {m: _step_times(before[m], _stats(url, m)) for m in models}
    return result


def input_data(path: Path, jpegs: list[bytes]) -> Path:
    """perf_analyzer's --input-data: real encoded bytes (random tensors would not decode)."""
    entries = [{spec.IMAGE.name: {"b64": base64.b64encode(j).decode(), "shape": [len(j)]}} for j in jpegs]
    path.write_text(json.dumps({"data": entries}))
    return path


def _letterboxed(jpegs: list[bytes]) -> list[np.ndarray]:
    from ultralytics.data.augment import LetterBox

    box = LetterBox((spec.IMAGE_SIZE, spec.IMAGE_SIZE), auto=False)
    out = []
    for j in jpegs:
        bgr = cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
        rgb = box(image=bgr)[..., ::-1]
        out.append(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0)
    return out


def _session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.CPU_THREADS
    options.inter_op_num_threads = 1
    path = REPOSITORY / spec.TIERS[0].model(spec.Step.DETECTOR) / "1" / "model.onnx"
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def model_only(jpegs: list[bytes], seconds: float) -> dict[str, Any]:
    """ONNX Runtime alone on letterboxed tensors: images/s per batch size and latency at batch 1."""
    session = _session()
    tensors = _letterboxed(jpegs)
    per_batch = {}
    latency_ms = float("nan")
    for batch in (1, 4, 8):
        x = np.stack([tensors[i % len(tensors)] for i in range(batch)])
        session.run(None, {spec.IMAGES.name: x})
        times = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t = time.perf_counter()
            session.run(None, {spec.IMAGES.name: x})
            times.append(time.perf_counter() - t)
        per_batch[batch] = batch / float(np.median(times))
        if batch == 1:
            latency_ms = float(np.median(times)) * 1000
    best = max(per_batch, key=per_batch.get)
    return {"per_batch": per_batch, "best_batch": best, "throughput": per_batch[best], "latency_ms": latency_ms}


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

    session = _session()
    count, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        (x,) = _letterboxed([jpegs[count % len(jpegs)]])
        (pred,) = session.run(None, {spec.IMAGES.name: x[None]})
        non_max_suppression(torch.from_numpy(pred), spec.DEFAULT_CONF_THRESHOLD, spec.DEFAULT_IOU_THRESHOLD)
        count += 1
    return {"throughput": count / (time.monotonic() - start)}


def server_memory(server: Server) -> float:
    from tools.evaluate.robustness import server_rss

    return server_rss(server) / (1 << 20)


def machine() -> dict[str, str]:
    import onnxruntime
    import torch
    import ultralytics

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    gpu = (
        subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
        if _has("nvidia-smi")
        else ""
    )
    record = manifest.read(REPOSITORY / spec.TIERS[0].model(spec.Step.DETECTOR) / "1", manifest.Detector)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "gpu": gpu or "none (cpu variant)",
        "python": platform.python_version(),
        "triton": "2.51 (nvidia-pytriton 0.7.0 wheel), python backend",
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "detector": f"{Path(record.artifact.source).name} ({(record.artifact.source_sha256 or '?')[:12]}), "
        f"{spec.IMAGE_SIZE}px",
    }


def _has(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None


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


def _where_time_goes(results: list[TierResult], model: dict[str, Any]) -> list[str]:
    """Per image, the CPU the steps around the detector take, next to what the detector alone needs."""
    lines = ["", "## Where the time goes", ""]
    for r in results:
        per_step = {
            step: r.steps[spec.tier(r.tier).model(step)]["compute_ms"]
            for step in (spec.Step.PREPROCESS, spec.Step.POSTPROCESS, spec.Step.GENDER)
        }
        around = sum(per_step.values())
        parts = ", ".join(f"{step.value} {ms:.1f} ms" for step, ms in per_step.items())
        lines.append(
            f"- `{r.tier}`: around the detector each request costs {around:.1f} ms of compute ({parts}); "
            f"the detector alone needs {model['latency_ms']:.1f} ms per image (model only, batch 1). On a "
            f"machine whose cores the detector already fills, that work is taken from the detector."
        )
    lines += [
        "",
        "The alternatives decode with OpenCV and only detect; the tiers decode with DALI's CPU operators "
        "(slower than OpenCV for one image at a time), pass the full-resolution image on for the person crops, "
        "and classify every person's gender.",
    ]
    return lines


def render(out: Path, facts: dict[str, str], results: list[TierResult], baselines: dict[str, dict[str, Any]],
           memory_mib: float, smoke: bool) -> Path:  # fmt: skip
    model, ultra, client = baselines["model_only"], baselines["ultralytics"], baselines["client_pipeline"]
    lines = ["# Benchmark report", ""]
    if smoke:
        lines += ["**Smoke run** (short windows, not for quoting).", ""]
    lines += [
        "Produced by `make bench` (`python -m tools.bench`); every number below was measured in this one run.",
        "",
    ]
    lines += ["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts.items()] + [""]
    lines += ["## Tiers (perf_analyzer, gRPC, real JPEGs, cpu variant)", "", "![tiers](tiers.png)", ""]
    lines += [
        "| tier | concurrency | images/s | p50 ms | p95 ms | p99 ms | stable within 25% |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r.rows:
            lines.append(
                f"| {r.tier} | {row['concurrency']:.0f} | {row['throughput']:.2f} | {row['p50_ms']:.1f} | "
                f"{row['p95_ms']:.1f} | {row['p99_ms']:.1f} | {'yes' if row['stable'] else '**no**'} |"
            )
    lines += ["", "Per step, averaged over the tier's sweep (server statistics, per request):", ""]
    lines += ["| model | requests | executions | queue ms | compute ms |", "|---|---|---|---|---|"]
    for r in results:
        for m, s in r.steps.items():
            lines.append(
                f"| {m} | {s['requests']:.0f} | {s['executions']:.0f} | {s['queue_ms']:.1f} | {s['compute_ms']:.1f} |"
            )
    lines += ["", "## Alternatives (same images, same weights, this process, one after another)", ""]
    lines += ["| alternative | images/s | note |", "|---|---|---|"]
    per_batch = ", ".join(f"batch {b}: {v:.2f}" for b, v in model["per_batch"].items())
    lines += [
        f"| model only (ONNX Runtime, {spec.CPU_THREADS} threads) | {model['throughput']:.2f} | best batch "
        f"{model['best_batch']} ({per_batch}); batch-1 latency {model['latency_ms']:.1f} ms |",
        f"| Ultralytics `predict` loop | {ultra['throughput']:.2f} | same ONNX, fixed 640 letterbox |",
        f"| client-side pipeline | {client['throughput']:.2f} | cv2 + LetterBox + ONNX Runtime + NMS |",
    ]
    lines += ["", "## Ratios and targets", "", "| measure | value | target | met |", "|---|---|---|---|"]
    by_tier = {r.tier: r for r in results}
    checks: list[tuple[str, str, str, bool | None]] = []  # measure, value, target, met (None: no target)
    if "batch" in by_tier:
        ratio = by_tier["batch"].best_throughput / model["throughput"]
        checks.append(("batch tier / model only (throughput)", f"{ratio:.2f}x", f">= {TARGET_BATCH_VS_MODEL}x",
                       ratio >= TARGET_BATCH_VS_MODEL))  # fmt: skip
    if "streaming" in by_tier:
        p50 = next(r["p50_ms"] for r in by_tier["streaming"].rows if r["concurrency"] == 1)
        overhead = p50 - model["latency_ms"]
        checks.append(
            (
                "streaming p50 at concurrency 1 minus model-only batch-1 latency",
                f"{overhead:.1f} ms",
                f"<= {TARGET_STREAMING_OVERHEAD_MS:g} ms",
                overhead <= TARGET_STREAMING_OVERHEAD_MS,
            )
        )
    for r in results:
        ratio = r.best_throughput / ultra["throughput"]
        checks.append((f"{r.tier} tier / Ultralytics predict (throughput)", f"{ratio:.2f}x",
                       f">= {TARGET_TIER_VS_ULTRALYTICS}x", ratio >= TARGET_TIER_VS_ULTRALYTICS))  # fmt: skip
        ratio = r.best_throughput / client["throughput"]
        checks.append((f"{r.tier} tier / client-side pipeline (throughput)", f"{ratio:.2f}x", "-", None))
    for name, value, target, met in checks:
        verdict = "-" if met is None else "yes" if met else "**no**"
        lines.append(f"| {name} | {value} | {target} | {verdict} |")
    lines += _where_time_goes(results, model)
    lines += ["", f"Server memory with all tiers loaded (tritonserver + python stubs, PSS): {memory_mib:.0f} MiB.", ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--smoke", action="store_true", help="one tier, short windows: proves the bench runs")
    parser.add_argument("--url", help="use a running server's gRPC address instead of starting one (cpu variant)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    tiers = [spec.tier("streaming")] if args.smoke else list(spec.TIERS)
    requests, seconds = (8, 2.0) if args.smoke else (40, 15.0)
    jpegs = images()
    data_file = input_data(args.out / "input_data.json", jpegs)

    def run(url: str, server: Server | None) -> int:
        results = [perf_analyzer(url, t, data_file, args.out, requests) for t in tiers]
        memory = server_memory(server) if server else float("nan")
        log.info("alternatives: model only, Ultralytics predict, client-side pipeline (%.0f s each)", seconds)
        baselines = {
            "model_only": model_only(jpegs, seconds),
            "ultralytics": ultralytics_predict(jpegs, seconds),
            "client_pipeline": client_pipeline(jpegs, seconds),
        }
        charts(results, args.out)
        report = render(args.out, machine(), results, baselines, memory, args.smoke)
        log.info("wrote %s", report)
        return 0

    if args.url:
        return run(args.url, None)
    with Server(ServerOptions(endpoints=Endpoints.free()), log_path=args.out / "tritonserver.log") as server:
        return run(server.options.endpoints.grpc_url, server)


if __name__ == "__main__":
    sys.exit(main())

"""`make gpu-check`: the server's GPU pieces without Triton or Docker, against the CPU and Ultralytics.

Runs in one process what the gpu variant runs in three steps: the DALI letterbox graph (nvJPEG)
built as the GPU preprocess builds it, the detector in PyTorch (fp16 and fp32; the
served TensorRT plans are `make gpu-image-check`'s), and the postprocess (NMS, faces, crops, labels)
on CUDA tensors. It checks the graph against the CPU graph, detector + postprocess against
Ultralytics' `predict` on the same images, and the postprocess on CUDA against the same code on the
CPU; then measures each step at several batch sizes on 1080p JPEGs and writes bench/GPU_REPORT.md.
The models come from `python -m export` (no plans) into a folder of its own, read through their
manifests as the server reads them; `--repository` reads an exported model repository instead.

`--device cpu` runs the same code on the CPU, the CPU graph standing in for the GPU graph: a smoke
run of this tool where no GPU is (the unit tests use it), not a measurement of the GPU path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from export import face_onnx, gender_onnx, weights
from pipelines import spec
from pipelines.paths import ROOT
from tools.evaluate.gpu import parity, report, timing
from tools.evaluate.gpu.images import parity_images
from tools.evaluate.gpu.models import Models, export_models

log = logging.getLogger("gpu_check")

REPORT = ROOT / "bench" / "GPU_REPORT.md"
SMOKE_REPORT = ROOT / "bench" / "GPU_REPORT.cpu.md"  # a smoke run never overwrites the GPU report
WORK = ROOT / ".cache" / "gpu-check"  # the models exported for the check (never model_repository/)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    tolerances = parity.GPU_TOLERANCES if device.type == "cuda" else parity.CPU_TOLERANCES
    images = parity_images()
    unknown = set(args.images or ()) - set(images)
    if unknown:
        raise ValueError(f"unknown images {sorted(unknown)}; choose among {list(images)}")
    chosen = {name: images[name] for name in args.images or images}
    facts = report.machine(device)
    log.info("versions: %s", ", ".join(f"{k} {v}" for k, v in facts.items()))
    repository = args.repository or export_models(
        args.work, args.detector, args.person_classes, args.gender_model, args.face_model
    )
    models = Models.load(repository, device)

    log.info("checks on %d images", len(chosen))
    rows, checks = parity.check_parity(models, chosen, device, tolerances)
    for c in checks:
        log.info("%s %s: %s (tolerance %s)", "pass" if c.ok else "FAIL", c.name, c.measured, c.tolerance)
    gaps = parity.upsampling_gaps(models, chosen, device)
    for g in gaps:
        log.info("jpeg_fancy_upsampling %s: IMAGES max %.1f mean %.3f levels, boxes %.2f px",
                 "on" if g.fancy_upsampling else "off", g.images_max, g.images_mean, g.box_px)  # fmt: skip
    rates = {}
    for batch in args.batches:
        rates[batch] = timing.throughput(models, batch, device, args.min_seconds, args.min_runs)
        log.info("batch %d: %s", batch, ", ".join(f"{k} {v:.0f} img/s" for k, v in rates[batch].items()))
    out = args.out or (REPORT if device.type == "cuda" else SMOKE_REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.report(device, facts, models, rows, checks, rates, gaps))
    failed = [c.name for c in checks if not c.ok]
    log.info("report: %s; %s", out, f"{len(failed)} checks FAILED" if failed else "every check passed")
    return 1 if failed else 0


def _batches(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1 or max(values) > max(t.gpu.max_batch_size for t in spec.TIERS):
        raise argparse.ArgumentTypeError(f"batch sizes between 1 and the largest tier's max batch, not {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cuda (the check), or cpu (a smoke run of this tool, no GPU measured)",
    )
    parser.add_argument(
        "--batches", type=_batches, default=list(timing.BATCHES), help="batch sizes to time, e.g. 1,8,32,128"
    )
    parser.add_argument(
        "--images",
        type=lambda s: [v for v in s.split(",") if v],
        default=None,
        help="parity images to check, by name, e.g. bus.jpg,bus.png (default: all)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="read the models of an exported repository (e.g. model_repository after `make export`) as they are; "
        "default: export them into --work first",
    )
    parser.add_argument("--work", type=Path, default=WORK, help="where the models are exported (default %(default)s)")
    parser.add_argument("--detector", default=weights.DEFAULT, help="as `make export DETECTOR=`: a .pt")
    parser.add_argument("--person-classes", default=None, help="as `make export PERSON_CLASSES=`")
    parser.add_argument("--gender-model", default=gender_onnx.DEFAULT, help="as `make export GENDER_MODEL=`")
    parser.add_argument("--face-model", default=face_onnx.DEFAULT, help="as `python -m export --face-model`")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time each step at least this long")
    parser.add_argument("--min-runs", type=int, default=3, help="and at least this many batches")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"report path (default {REPORT.relative_to(ROOT)}; {SMOKE_REPORT.relative_to(ROOT)} for --device cpu)",
    )
    parser.add_argument(
        "--versions",
        action="store_true",
        help="log the versions this Python would run with and exit (make gpu-check's probe)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.versions:  # the default models' packages must be here too
        weights.resolve(args.detector, args.person_classes)
        gender_onnx.resolve(args.gender_model)
        face_onnx.resolve(args.face_model)
        log.info("versions: %s", ", ".join(f"{k} {v}" for k, v in report.machine(torch.device("cpu")).items()))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        log.error("no CUDA device visible to torch %s; `--device cpu` runs a smoke run instead", torch.__version__)
        return 2
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    except RuntimeError as e:  # DALI's or CUDA's: the GPU pieces do not run here, which is what the check is for
        log.error("FAILED: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())

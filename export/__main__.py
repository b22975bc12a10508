"""`python -m export`: detector weights -> model.onnx (every tier) and model.plan (where a GPU is)."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime

from export import detector_onnx, manifest, tensorrt_plan, weights
from pipelines import spec

log = logging.getLogger("export")


def _place(source: Path, target: Path) -> None:
    """Put the same file in every tier without copying 40 MB three times."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--detector",
        default=weights.DEFAULT,
        help="Ultralytics detection weights (.pt), an Ultralytics-exported .onnx, a hub name "
        "such as yolo11n.pt (needs internet), or 'default' (offline person detector)",
    )
    parser.add_argument(
        "--person-classes",
        default=None,
        help="which classes are persons: 'auto' (classes named person), 'all', or ids like '0,2' "
        "(default: auto; 'all' for the default detector)",
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/export"),
        help="staging folder (ONNX before placement, TensorRT timing cache)",
    )
    parser.add_argument(
        "--plans",
        choices=("auto", "yes", "no"),
        default="auto",
        help="build TensorRT plans: auto (when TensorRT and a GPU are here), yes, no",
    )
    parser.add_argument("--fp32", action="store_true", help="build plans in FP32 instead of FP16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    try:
        source = weights.resolve(args.detector, args.person_classes)
        t0 = time.monotonic()
        first = args.cache / "detector.onnx"
        facts = detector_onnx.export(source.path, first)
        person_ids = weights.person_class_ids(facts["names"], source.person_classes)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    log.info(
        "ONNX ready in %.1fs; person classes %s", time.monotonic() - t0, {i: facts["names"][i] for i in person_ids}
    )

    record = {
        "source": str(source.path),
        "source_sha256": manifest.sha256(source.path) if source.path.exists() else None,
        "onnx_sha256": manifest.sha256(first),
        "names": facts["names"],
        "person_class_ids": person_ids,
        "image_size": spec.IMAGE_SIZE,
        "input": spec.IMAGES.name,
        "output": spec.PREDICTIONS.name,
        "opset": facts["opset"],
        "exporter_tensor_names": facts["exporter_tensor_names"],
        "versions": {
            "python": platform.python_version(),
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    why_no_plans = tensorrt_plan.available() if args.plans != "no" else "--plans no"
    if args.plans == "yes" and why_no_plans:
        log.error("cannot build TensorRT plans: %s", why_no_plans)
        return 2
    if why_no_plans:
        log.info("skipping TensorRT plans: %s", why_no_plans)
    timing_cache = args.cache / "tensorrt-timing.cache"

    for tier in spec.TIERS:
        directory = args.repository / tier.model(spec.Step.DETECTOR) / "1"
        _place(first, directory / "model.onnx")
        tier_record = dict(record, tier=tier.name)
        if not why_no_plans:
            tier_record["plan"] = tensorrt_plan.build(
                directory / "model.onnx", directory / "model.plan", tier.gpu, timing_cache, fp16=not args.fp32
            )
        manifest.write(directory, tier_record)
        log.info("%s: %s", tier.name, ", ".join(sorted(p.name for p in directory.iterdir())))
    log.info("export done in %.1fs", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

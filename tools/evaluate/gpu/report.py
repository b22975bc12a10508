"""bench/GPU_REPORT.md: what ran, every check with its tolerance, per-image results, throughput, targets."""

from __future__ import annotations

import platform
from datetime import datetime, timezone

import torch

from pipelines import spec
from tools.evaluate.gpu.models import Models
from tools.evaluate.gpu.parity import Check, ImageRow, UpsamplingGap
from tools.evaluate.gpu.pieces import tier_for
from tools.evaluate.gpu.timing import STEPS, TARGET_BATCH, targets
from tools.evaluate.report import nvidia_smi, table, versions


def machine(device: torch.device) -> dict[str, str]:
    """What ran: the GPU, its driver, and the version of every package the check imports."""
    facts = versions("python", "torch") | {"CUDA (torch)": str(torch.version.cuda)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["GPU"] = f"{props.name} (compute {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
        driver = nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index or 0}")
        facts["driver"] = driver if driver is not None else "unknown (nvidia-smi failed)"
    else:
        facts["CPU"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    return facts | versions("torchvision", "DALI", "ultralytics", "numpy", "opencv", "onnxruntime")


def report(
    device: torch.device,
    facts: dict[str, str],
    models: Models,
    rows: list[ImageRow],
    checks: list[Check],
    rates: dict[int, dict[str, float]],
    gaps: list[UpsamplingGap],
) -> str:
    """bench/GPU_REPORT.md: the machine, every check with its tolerance, per-image results, throughput, targets."""
    smoke = device.type == "cpu"
    lines = [
        "# The GPU pieces without Triton (`make gpu-check`)",
        "",
        f"Written by `python -m tools.evaluate.gpu_check` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"device `{device}`.",
        "",
    ]
    if smoke:
        lines += [
            "**CPU smoke run: every step ran on the CPU, the DALI CPU graph standing in for the GPU graph. "
            "Nothing here was measured on a GPU.**",
            "",
        ]
    classifier = models.classifier
    what = [
        *facts.items(),
        ("detector", f"`{models.source.name}` ({', '.join(models.detectors)}), persons {models.person_classes}"),
        ("gender classifier", f"{classifier.preprocessing.crop} crops, {classifier.preprocessing.size} px, "
                              f"labels {', '.join(classifier.labels)}"),
    ]  # fmt: skip
    lines += ["## Machine", "", *table(("what", "version"), what)]
    lines += [
        "",
        "## Checks",
        "",
        f"{len(rows)} images: {', '.join(r.name for r in rows)}. Ultralytics' predict and this pipeline use the "
        f"default thresholds (CONF {spec.DEFAULT_CONF_THRESHOLD}, IOU {spec.DEFAULT_IOU_THRESHOLD}) on "
        f"{'the CPU' if smoke else 'the same GPU'}. The face detector and the classifier run on ONNX Runtime (CPU), "
        "once: the postprocess on the device gets the answers they gave the postprocess on the CPU (the served "
        "models are TensorRT plans, `make gpu-image-check`'s).",
        "",
        *table(
            ("check", "result", "measured", "tolerance"),
            ((c.name, "pass" if c.ok else "**FAIL**", c.measured, c.tolerance) for c in checks),
        ),
    ]
    precisions = list(models.detectors)
    header = ("image", "size", "GEOMETRY", "IMAGES max / mean", "ORIGINAL mean",
              f"persons Ultralytics / {' / '.join(precisions)}", f"boxes {' / '.join(precisions)} (px)")  # fmt: skip
    per_image = [
        (
            r.name,
            f"{r.width}x{r.height}",
            "equal" if r.geometry_equal else "**differs**",
            f"{r.images_max:.1f} / {r.images_mean:.3f}",
            f"{r.original_mean:.3f}",
            " / ".join(str(r.counts[k]) for k in ("ultralytics", *precisions)),
            " / ".join(f"{r.box_px[p]:.2f}" for p in precisions),
        )
        for r in rows
    ]
    lines += [
        "",
        "Per image (pixel differences in levels of 1/255; boxes: the largest coordinate difference to Ultralytics):",
        "",
        *table(header, per_image),
    ]
    lines += [
        "",
        "## Chroma upsampling of the mixed decoder",
        "",
        f"DALI's `jpeg_fancy_upsampling` (served: {'on' if spec.GPU_JPEG_FANCY_UPSAMPLING else 'off'}, "
        "`pipelines/spec.py`): the same images through the served graph both ways, against the CPU graph's "
        "pixels and Ultralytics' boxes (detector fp32)." + (" On the CPU there is no choice: both rows are equal."
                                                             if smoke else ""),
        "",
        *table(
            ("jpeg_fancy_upsampling", "IMAGES max / mean (levels)", "boxes (px)"),
            (("on" if g.fancy_upsampling else "off", f"{g.images_max:.1f} / {g.images_mean:.3f}", f"{g.box_px:.2f}")
             for g in gaps),
        ),
    ]  # fmt: skip
    batches = sorted(rates)
    lines += [
        "",
        "## Throughput (images/s, one batch at a time, 1080p JPEGs)",
        "",
        "Each step alone, after a warm-up, synchronized after every batch. decode + letterbox: "
        + (
            "the CPU graph at each batch size"
            if smoke
            else "the GPU graph of the tier that takes the batch ("
            + ", ".join(f"{b}: `{tier_for(b).name}`" for b in batches)
            + ")"
        )
        + ", as preprocess builds it, outputs copied to torch. Detector: eager PyTorch, fused. crops + labels: face "
        "regions, faces, chips and labels (`gender.gather`, `gender.labels`); postprocess: NMS + crops + labels. "
        "The face detector's and the classifier's calls are not timed (their answers are replayed).",
        "",
        *table(
            ("step", *(f"batch {b}" for b in batches)),
            ((step, *(f"{rates[b][step]:.0f}" for b in batches)) for step in STEPS
             if any(step in rates[b] for b in batches)),
        ),
    ]  # fmt: skip
    lines += ["", f"## Targets (batch {TARGET_BATCH}, 1080p JPEGs)", ""]
    lines += table(("target", "measured", "met"), targets(rates))
    if smoke:
        lines += ["", "The targets are for a GPU; a CPU smoke run cannot meet them and is not meant to."]
    return "\n".join([*lines, ""])

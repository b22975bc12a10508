"""Each served piece against its reference, within tolerances stated per device.

The served graph against the CPU graph, the detector + NMS against Ultralytics' `predict` on the same
images, and the postprocess on the device against the same code on the CPU; and, measured rather than
checked, what the mixed decoder's chroma upsampling changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pipelines import detections, spec
from pipelines.dali import letterbox
from tools.evaluate.gpu import pieces
from tools.evaluate.gpu.models import Models
from tools.evaluate.gpu.pieces import Letterboxed, nms, postprocess, run_graph

LEVEL = 1 / 255


@dataclass(frozen=True)
class Tolerances:
    """How far the served pieces may be from their references, per device (stated in the report)."""

    images_max: float  # IMAGES, letterboxed pixels vs the CPU graph, in levels (1/255)
    images_mean: float
    original_mean: float  # ORIGINAL, decoded pixels vs the CPU graph, mean in levels
    box_px: float  # boxes vs Ultralytics predict, original pixels
    pixels: float  # face detector and classifier inputs, CUDA vs CPU, in levels (0-255 before normalizing)
    face_px: float  # FACES, CUDA vs CPU, original pixels


# nvJPEG decodes differently from libjpeg-turbo: measured with this project's code on an H200 (docs/gpu.md) up
# to 33 levels apart after the letterbox, 0.13-0.26 levels on average, and boxes within 3.9 px (fp32) and
# 4.2 px (fp16) of Ultralytics' predict; these leave about half as much again. The others were not measured
# on a GPU yet: crops are resized in uint8 on the host and in float on a GPU (pipelines.cutting.resize), half
# a level apart at most before the chips' own resampling; FACES come from the same maps on both.
GPU_TOLERANCES = Tolerances(images_max=48, images_mean=0.5, original_mean=1.0, box_px=6.0, pixels=1.0, face_px=0.01)
# On the CPU the served graph is the CPU graph itself: exact. Boxes as the server tests' (README "Tests").
CPU_TOLERANCES = Tolerances(images_max=0, images_mean=0, original_mean=0, box_px=1.0, pixels=0, face_px=0)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    measured: str
    tolerance: str


@dataclass(frozen=True)
class People:
    """One image's persons: boxes [K, 4] in original pixels, scores [K], classes [K]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class ImageRow:
    """Per parity image: the graph comparison and the person counts of every run."""

    name: str
    width: int
    height: int
    geometry_equal: bool
    images_max: float  # levels
    images_mean: float
    original_mean: float
    counts: dict[str, int]  # "ultralytics", "fp32", "fp16" -> persons found
    box_px: dict[str, float]  # precision -> largest box coordinate difference to Ultralytics


def people(found: detections.Detections) -> list[People]:
    out = []
    for b, n in enumerate(found.num[:, 0].tolist()):
        out.append(People(*(t[b, :n].cpu().numpy() for t in (found.boxes, found.scores, found.classes))))
    return out


def ultralytics_people(models: Models, encoded: Sequence[bytes], device: torch.device) -> list[People]:
    """Ultralytics' own predict on the same weights: cv2 decode, fixed 640x640 letterbox (rect=False), fp32."""
    results = models.reference.predict(
        [cv2.imdecode(np.frombuffer(e, np.uint8), cv2.IMREAD_COLOR) for e in encoded],
        imgsz=spec.IMAGE_SIZE,
        rect=False,
        conf=float(np.float32(spec.DEFAULT_CONF_THRESHOLD)),  # thresholds travel as FP32 tensors
        iou=float(np.float32(spec.DEFAULT_IOU_THRESHOLD)),
        max_det=spec.MAX_DET,
        classes=models.person_classes,
        agnostic_nms=spec.AGNOSTIC_NMS,
        device="cpu" if device.type == "cpu" else f"cuda:{device.index or 0}",
        verbose=False,
    )
    return [People(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy()) for r in results]


def box_difference(ours: People, reference: People) -> float:
    """The largest coordinate difference (px) after pairing each box with its nearest of the same class.

    Pairs greedily, closest first, so that two persons of nearly equal score may come in either
    order. Unpaired boxes (counts differ) are left out: the counts are checked on their own.
    """
    if len(ours.boxes) == 0 or len(reference.boxes) == 0:
        return 0.0
    distance = np.abs(ours.boxes[:, None, :] - reference.boxes[None, :, :]).max(axis=2).astype(np.float64)
    distance[ours.classes[:, None] != reference.classes[None, :]] = np.inf
    worst = 0.0
    for _ in range(min(distance.shape)):
        i, j = np.unravel_index(np.argmin(distance), distance.shape)
        if not np.isfinite(distance[i, j]):
            return float("inf")  # a class has more boxes on one side: no pairing within the class
        worst = max(worst, float(distance[i, j]))
        distance[i, :] = np.inf
        distance[:, j] = np.inf
    return worst


def check_parity(
    models: Models, encoded: Mapping[str, bytes], device: torch.device, tolerances: Tolerances
) -> tuple[list[ImageRow], list[Check]]:
    """The served graph vs the CPU graph, detector + NMS vs Ultralytics, the postprocess on the device vs the CPU."""
    names, data = list(encoded), list(encoded.values())
    served, served_bytes = pieces.served_graph(len(data), device)
    boxed = run_graph(served, data)
    host = run_graph(letterbox.cpu_pipeline(len(data)), data)
    reference = ultralytics_people(models, data, device)
    heads = {p: models.head(p, boxed.images) for p in models.detectors}
    ours = {p: people(nms(models, head, boxed.geometry)) for p, head in heads.items()}

    rows = []
    for b, name in enumerate(names):
        width, height = (int(v) for v in host.geometry[b, 4:6].tolist())
        image_diff = (boxed.images[b].cpu() - host.images[b]).abs() / LEVEL
        original_diff = (
            boxed.originals[b, :height, :width].cpu().int() - host.originals[b, :height, :width].int()
        ).abs()
        rows.append(
            ImageRow(
                name=name,
                width=width,
                height=height,
                geometry_equal=torch.equal(boxed.geometry[b].cpu(), host.geometry[b]),
                images_max=float(image_diff.max()),
                images_mean=float(image_diff.mean()),
                original_mean=float(original_diff.float().mean()),
                counts={"ultralytics": len(reference[b].scores), **{p: len(ours[p][b].scores) for p in ours}},
                box_px={p: box_difference(ours[p][b], reference[b]) for p in ours},
            )
        )

    graph = f"DALI {device.type.upper()} graph ({served_bytes // 1024} KB serialized, as served) vs the CPU graph"
    geometry_equal = sum(r.geometry_equal for r in rows)
    images_max, images_mean = max(r.images_max for r in rows), max(r.images_mean for r in rows)
    original_mean = max(r.original_mean for r in rows)
    checks = [
        Check(f"{graph}: GEOMETRY", geometry_equal == len(rows), f"{geometry_equal}/{len(rows)} equal", "exact"),
        Check(
            f"{graph}: IMAGES",
            images_max <= tolerances.images_max and images_mean <= tolerances.images_mean,
            f"max {images_max:.1f}, mean {images_mean:.3f} levels",
            f"max {tolerances.images_max:g}, mean {tolerances.images_mean:g} levels (1/255)",
        ),
        Check(
            f"{graph}: ORIGINAL",
            original_mean <= tolerances.original_mean,
            f"mean {original_mean:.3f} levels",
            f"mean {tolerances.original_mean:g} levels",
        ),
    ]
    for p in ours:
        label = f"detector {p} + NMS vs Ultralytics predict (fp32, rect=False)"
        same = sum(r.counts[p] == r.counts["ultralytics"] for r in rows)
        worst = max(r.box_px[p] for r in rows)
        checks.append(Check(f"{label}: person counts", same == len(rows), f"{same}/{len(rows)} equal", "equal"))
        checks.append(
            Check(f"{label}: boxes", worst <= tolerances.box_px, f"max {worst:.2f} px", f"{tolerances.box_px:g} px")
        )
    checks += check_postprocess_devices(models, boxed, heads["fp32"], tolerances)
    return rows, checks


@dataclass(frozen=True)
class UpsamplingGap:
    """The served graph's distance to libjpeg-turbo's pixels and Ultralytics' boxes with one chroma upsampling."""

    fancy_upsampling: bool
    images_max: float  # levels, vs the CPU graph
    images_mean: float
    box_px: float  # detector fp32 + NMS vs Ultralytics predict


def upsampling_gaps(models: Models, encoded: Mapping[str, bytes], device: torch.device) -> list[UpsamplingGap]:
    """spec.GPU_JPEG_FANCY_UPSAMPLING's effect, measured: the gaps with DALI's jpeg_fancy_upsampling on and off.

    Only the mixed (nvJPEG) decoder has the choice; on the CPU both rows are the CPU graph's.
    """
    data = list(encoded.values())
    host = run_graph(letterbox.cpu_pipeline(len(data)), data)
    reference = ultralytics_people(models, data, device)
    gaps = []
    for fancy in (True, False):
        boxed = run_graph(pieces.served_graph(len(data), device, fancy)[0], data)
        diff = (boxed.images.cpu() - host.images).abs() / LEVEL
        ours = people(nms(models, models.head("fp32", boxed.images), boxed.geometry))
        box_px = max(box_difference(o, r) for o, r in zip(ours, reference, strict=True))
        gaps.append(UpsamplingGap(fancy, float(diff.max()), float(diff.mean()), box_px))
    return gaps


def _largest(a: torch.Tensor | None, b: torch.Tensor | None, scale: torch.Tensor | float = 1.0) -> float:
    """max |a - b| * scale, 0 for two empty (or absent) tensors, inf where the shapes differ."""
    if a is None or b is None or a.numel() == 0 or b.numel() == 0:
        return 0.0 if (a is None or a.numel() == 0) and (b is None or b.numel() == 0) else float("inf")
    if a.shape != b.shape:
        return float("inf")
    return float(((a.cpu().float() - b.cpu().float()).abs() * scale).max())


def check_postprocess_devices(
    models: Models, boxed: Letterboxed, predictions: torch.Tensor, tolerances: Tolerances
) -> list[Check]:
    """The same postprocess on the device's tensors and on copies on the CPU: the GPU variant's
    postprocess against the cpu variant's. The models run once, on the host run's inputs; the device
    run gets their answers (Call.replay). Detections and labels must be bit for bit the same; the
    face detector's and the classifier's inputs (resized on each device) and FACES within tolerances."""
    device = predictions.device
    host_boxed = Letterboxed(boxed.images.cpu(), boxed.geometry.cpu(), boxed.originals.cpu())
    host_calls = models.calls()
    on_host = postprocess(models, predictions.cpu(), host_boxed, host_calls)
    device_calls = {step: call.replay() for step, call in host_calls.items()}
    on_device = postprocess(models, predictions, boxed, device_calls)
    label = f"postprocess on {device.type} vs on the CPU"
    exact = {
        "NUM, BOXES, SCORES, CLASSES": [
            (getattr(on_device.found, f), getattr(on_host.found, f)) for f in ("num", "boxes", "scores", "classes")
        ],
        "GENDER, GENDER_SCORES, persons classified": [
            (on_device.gender, on_host.gender),
            (on_device.gender_scores, on_host.gender_scores),
            (on_device.chips.image, on_host.chips.image),
            (on_device.chips.slot, on_host.chips.slot),
        ],
    }
    checks = []
    for what, tensors in exact.items():
        same = all(torch.equal(d.cpu(), h) for d, h in tensors)
        checks.append(Check(f"{label}: {what}", same, "bit-equal" if same else "differ", "exact"))
    # The models' inputs, in levels: undo their normalization's scale.
    inputs = {spec.Step.GENDER: ("classifier input", models.classifier.preprocessing.scale)}
    if models.face is not None:
        inputs[spec.Step.FACE] = ("face detector input", models.face.scale)
    for step, (what, scale) in inputs.items():
        levels = torch.tensor(scale).view(1, 3, 1, 1)
        worst = _largest(device_calls[step].given, host_calls[step].given, levels)
        checks.append(
            Check(
                f"{label}: {what}",
                worst <= tolerances.pixels,
                f"max {worst:.3g} levels",
                f"{tolerances.pixels:g} levels",
            )
        )
    faces = _largest(on_device.faces, on_host.faces)
    persons, classified = int(on_host.found.num.sum()), on_host.chips.image.numel()
    measured = f"max {faces:.3g} px ({persons} persons, {classified} classified)"
    checks.append(Check(f"{label}: FACES", faces <= tolerances.face_px, measured, f"{tolerances.face_px:g} px"))
    return checks

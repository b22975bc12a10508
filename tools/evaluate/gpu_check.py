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
import copy
import functools
import importlib.metadata
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import nvidia.dali
import onnxruntime as ort
import torch
import torchvision
import ultralytics
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor
from ultralytics import YOLO

from export import face_onnx, gender_onnx, weights
from pipelines import detections, gender, manifest, onnx_session, spec
from pipelines.dali import letterbox
from pipelines.dali.gpu import GpuLetterbox
from tools.evaluate.corpus import ASSETS

log = logging.getLogger("gpu_check")

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "bench" / "GPU_REPORT.md"
SMOKE_REPORT = ROOT / "bench" / "GPU_REPORT.cpu.md"  # a smoke run never overwrites the GPU report
WORK = ROOT / ".cache" / "gpu-check"  # the models exported for the check (never model_repository/)
BATCHES = (1, 8, 32, 128)
TARGET_BATCH = 32
TARGETS = {"preprocess": 3500.0, "postprocess": 10000.0}  # img/s at TARGET_BATCH on 1080p JPEGs (the issue's)
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


# nvJPEG decodes differently from libjpeg-turbo: measured with this project's code on an H200 up
# to 33 levels apart after the letterbox, 0.13-0.26 levels on average, and boxes within 3.9 px (fp32) and
# 4.2 px (fp16) of Ultralytics' predict; these leave about half as much again. The others were not measured
# on a GPU yet: crops are resized in uint8 on the host and in float on a GPU (pipelines.crops.resize), half
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
class Letterboxed:
    """The DALI step's outputs as torch tensors on the graph's device."""

    images: torch.Tensor  # [B, 3, S, S] float32
    geometry: torch.Tensor  # [B, 6] float32
    originals: torch.Tensor  # [B, H, W, 3] uint8, zero-padded to the batch's largest


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


def _jpeg(bgr: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90, *params])
    assert ok, "cv2 could not encode a JPEG"
    return buffer.tobytes()


def _photo(name: str) -> tuple[bytes, np.ndarray]:
    data = (ASSETS / name).read_bytes()
    return data, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@functools.cache
def parity_images() -> Mapping[str, bytes]:
    """The photos shipped with Ultralytics as shipped, resized to 1080p, 4K and odd sizes, progressive,
    grayscale and PNG: the encodings and shapes where nvJPEG and the letterbox arithmetic could differ.

    Encoded once per process (every batch size's throughput reads them) and read-only, as it is shared."""
    bus, bus_bgr = _photo("bus.jpg")
    zidane, zidane_bgr = _photo("zidane.jpg")
    images = {
        "bus.jpg": bus,
        "zidane.jpg": zidane,
        "bus-1920x1080.jpg": _jpeg(cv2.resize(bus_bgr, (1920, 1080))),
        "zidane-1920x1080.jpg": _jpeg(cv2.resize(zidane_bgr, (1920, 1080))),
        "zidane-3840x2160.jpg": _jpeg(cv2.resize(zidane_bgr, (3840, 2160))),
        "bus-progressive.jpg": _jpeg(bus_bgr, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "zidane-gray.jpg": _jpeg(cv2.cvtColor(zidane_bgr, cv2.COLOR_BGR2GRAY)),
        "bus.png": cv2.imencode(".png", bus_bgr)[1].tobytes(),
        "zidane-517x333.jpg": _jpeg(cv2.resize(zidane_bgr, (517, 333))),
        "bus-479x641.jpg": _jpeg(cv2.resize(bus_bgr, (479, 641))),
    }
    return MappingProxyType(images)


def bench_images() -> list[bytes]:
    """The 1080p JPEGs the throughput is measured on (the targets are stated for 1080p)."""
    images = parity_images()
    return [images["bus-1920x1080.jpg"], images["zidane-1920x1080.jpg"]]


def tier_for(batch: int) -> spec.Tier:
    """The tier whose GPU preprocess would take a batch this large: the smallest that fits it."""
    fitting = [t for t in spec.TIERS if t.gpu.max_batch_size >= batch]
    if not fitting:
        raise ValueError(f"batch {batch} exceeds every tier's max batch")
    return min(fitting, key=lambda t: t.gpu.max_batch_size)


Graph = GpuLetterbox | Pipeline  # the served GPU letterbox, or the CPU graph standing in for it


def served_graph(
    batch: int, device: torch.device, fancy_upsampling: bool = spec.GPU_JPEG_FANCY_UPSAMPLING
) -> tuple[Graph, int]:
    """The letterbox the GPU preprocess runs, and its graph's serialized size.

    On CUDA: pipelines.dali.gpu.GpuLetterbox itself, for the tier that takes this batch, so that its
    copies into torch are what is checked and timed. On the CPU the CPU graph takes its place (a GPU
    graph cannot be built without a GPU).
    """
    if device.type == "cuda":
        served = GpuLetterbox(tier_for(batch).name, device.index or 0, fancy_upsampling)
        return served, len(served.pipe.serialize())
    pipe = letterbox.cpu_pipeline(batch)
    return pipe, len(pipe.serialize())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_graph(graph: Graph, encoded: Sequence[bytes]) -> Letterboxed:
    """One batch through a letterbox; its outputs as torch tensors on its device.

    GpuLetterbox answers GEOMETRY on the host, as preprocess sends it; it is copied to the GPU, where
    postprocess reads it.
    """
    arrays = [np.frombuffer(e, np.uint8) for e in encoded]
    if isinstance(graph, GpuLetterbox):
        images, geometry, originals = graph.run(arrays)
        return Letterboxed(images, torch.from_numpy(geometry).to(images.device), originals)
    outputs = graph.run(**{spec.IMAGE.name: arrays})
    images, geometry, originals = (to_torch_tensor(o.as_tensor(), copy=True) for o in outputs)
    return Letterboxed(images, geometry, originals)


@dataclass
class Call:
    """A model the postprocess calls (BLS in the server) that keeps what it was given and what it answered.

    The device run replays the host run's answers, so the two postprocess runs differ only in where
    the torch code ran: the models are the TensorRT plans' business (`make gpu-image-check`).
    """

    answer: Callable[[torch.Tensor], torch.Tensor]
    given: torch.Tensor | None = None
    said: torch.Tensor | None = None

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        self.given, self.said = rows, self.answer(rows).to(rows.device)
        return self.said

    def replay(self) -> Call:
        said = self.said

        def same(rows: torch.Tensor) -> torch.Tensor:
            assert said is not None and len(said) == len(rows), "the device run called a model the host run did not"
            return said.to(rows.device)

        return Call(same)


def onnx_runtime(path: Path, input_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A served ONNX on ONNX Runtime (CPU), as the cpu variant runs it."""
    session = onnx_session.session(path)

    def run(rows: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {input_name: rows.detach().cpu().float().numpy()})
        return torch.from_numpy(out)

    return run


@dataclass(frozen=True)
class Models:
    """What the server loads from an exported repository (manifests, face and gender ONNX), the detector's
    .pt in PyTorch per precision, and Ultralytics on the same weights."""

    source: Path  # the detector's .pt, the source its manifest names
    reference: YOLO
    detectors: dict[str, torch.nn.Module]  # "fp32", "fp16" (CUDA only) -> fused eval model
    person_classes: list[int]
    classifier: manifest.Classifier
    face: manifest.FaceDetector | None  # None where the classifier does not read faces
    onnx: dict[spec.Step, Callable[[torch.Tensor], torch.Tensor]]  # face detector and classifier

    @classmethod
    def load(cls, repository: Path, device: torch.device) -> Models:
        def folder(step: spec.Step) -> Path:
            return repository / spec.tier(spec.DEFAULT_TIER).model(step) / "1"

        detector = manifest.read(folder(spec.Step.DETECTOR), manifest.Detector)
        source = Path(detector.artifact.source)
        if source.suffix != ".pt" or not source.is_file():
            raise ValueError(f"{source}: the check runs the detector's Ultralytics .pt in PyTorch; export from one")
        fp32 = YOLO(str(source), task="detect").model.fuse(verbose=False).eval().float().to(device)
        detectors = {"fp32": fp32}
        if device.type == "cuda":
            detectors["fp16"] = copy.deepcopy(fp32).half()
        classifier = manifest.read(folder(spec.Step.GENDER), manifest.Classifier)
        reads_faces = classifier.preprocessing.crop == spec.CropPolicy.FACE.value
        face = manifest.read(folder(spec.Step.FACE), manifest.FaceDetector) if reads_faces else None
        onnx = {spec.Step.GENDER: onnx_runtime(folder(spec.Step.GENDER) / "model.onnx", spec.CROPS.name)}
        if face is not None:
            onnx[spec.Step.FACE] = onnx_runtime(folder(spec.Step.FACE) / "model.onnx", spec.FACE_REGIONS.name)
        return cls(
            source, YOLO(str(source), task="detect"), detectors, list(detector.person_class_ids), classifier, face, onnx
        )

    def head(self, precision: str, images: torch.Tensor) -> torch.Tensor:
        """The raw head [B, 4 + C, A] in float32, as the served detector's PREDICTIONS."""
        model = self.detectors[precision]
        with torch.inference_mode():
            out = model(images.to(next(model.parameters()).dtype))
        return (out[0] if isinstance(out, (list, tuple)) else out).float()

    def calls(self) -> dict[spec.Step, Call]:
        """Fresh calls of the face detector and the classifier, on ONNX Runtime."""
        return {step: Call(run) for step, run in self.onnx.items()}


@dataclass(frozen=True)
class Postprocessed:
    found: detections.Detections
    crops: gender.Crops
    gender: torch.Tensor
    gender_scores: torch.Tensor
    faces: torch.Tensor


@functools.cache
def ids(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Fixed ids (person classes, GENDER values) as a tensor on `device`, copied there once, as the server
    builds them in initialize: a host-to-device copy per batch would be timed as postprocess work."""
    return torch.tensor(values, dtype=torch.long, device=device)


def nms(models: Models, predictions: torch.Tensor, geometry: torch.Tensor) -> detections.Detections:
    """postprocess_<tier>'s first part, default thresholds: persons in original pixels."""
    device, batch = predictions.device, predictions.shape[0]
    return detections.detect(
        predictions,
        geometry,
        torch.full((batch,), spec.DEFAULT_CONF_THRESHOLD, device=device),
        torch.full((batch,), spec.DEFAULT_IOU_THRESHOLD, device=device),
        ids(tuple(models.person_classes), device),
    )


def genders(
    models: Models, found: detections.Detections, boxed: Letterboxed, calls: dict[spec.Step, Call]
) -> Postprocessed:
    """postprocess_<tier>'s second part (gender.attributes, as the server runs it); its two BLS calls
    made through `calls`."""
    device, batch = found.boxes.device, found.boxes.shape[0]
    face = None
    if models.face is not None:
        face = gender.FaceModel(models.face, lambda regions, _: calls[spec.Step.FACE](regions))
    judged = gender.attributes(
        found,
        list(boxed.originals.unbind(0)),
        boxed.geometry,
        models.classifier.preprocessing,
        ids(models.classifier.gender_values, device),
        torch.full((batch,), spec.DEFAULT_GENDER_THRESHOLD, device=device),
        lambda crops: calls[spec.Step.GENDER](crops.pixels),
        face,
    )
    return Postprocessed(found, judged.crops, judged.gender, judged.gender_scores, judged.faces)


def postprocess(
    models: Models, predictions: torch.Tensor, boxed: Letterboxed, calls: dict[spec.Step, Call]
) -> Postprocessed:
    """What postprocess_<tier> does with a batch."""
    return genders(models, nms(models, predictions, boxed.geometry), boxed, calls)


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
    served, served_bytes = served_graph(len(data), device)
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
        boxed = run_graph(served_graph(len(data), device, fancy)[0], data)
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
            (on_device.crops.image, on_host.crops.image),
            (on_device.crops.slot, on_host.crops.slot),
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
    persons, classified = int(on_host.found.num.sum()), on_host.crops.image.numel()
    measured = f"max {faces:.3g} px ({persons} persons, {classified} classified)"
    checks.append(Check(f"{label}: FACES", faces <= tolerances.face_px, measured, f"{tolerances.face_px:g} px"))
    return checks


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


STEPS = ("decode + letterbox", "detector fp16", "detector fp32", "NMS", "crops + labels", "postprocess")


def throughput(models: Models, batch: int, device: torch.device, min_seconds: float, min_runs: int) -> dict[str, float]:
    """img/s of every step at one batch size on the 1080p JPEGs; the face detector's and classifier's calls
    are not timed (their answers are replayed)."""
    bench = bench_images()
    encoded = [bench[i % len(bench)] for i in range(batch)]
    pipe, _ = served_graph(batch, device)
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


def _dali_distribution() -> str:
    """The wheel the imported DALI came from (nvidia-dali-cuda120, -cuda130, ...): its CUDA build."""
    imported = Path(nvidia.dali.__file__).resolve()
    for name in importlib.metadata.packages_distributions().get("nvidia", []):
        if name.startswith("nvidia-dali"):
            location = importlib.metadata.distribution(name).locate_file("nvidia/dali/__init__.py")
            if Path(str(location)).resolve() == imported:
                return name
    return "wheel unknown"


def machine(device: torch.device) -> dict[str, str]:
    """What ran: the GPU, its driver, and the version of every package the check imports."""
    facts = {"python": platform.python_version(), "torch": torch.__version__, "CUDA (torch)": str(torch.version.cuda)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["GPU"] = f"{props.name} (compute {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index or 0}"]
            facts["driver"] = subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            facts["driver"] = "unknown (nvidia-smi failed)"
    else:
        facts["CPU"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    facts |= {
        "torchvision": torchvision.__version__,
        "DALI": f"{nvidia.dali.__version__} ({_dali_distribution()})",
        "ultralytics": ultralytics.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
    }
    return facts


def _targets(rates: dict[int, dict[str, float]]) -> list[tuple[str, str, str]]:
    """(target, measured, met) at TARGET_BATCH; preprocess and postprocess also against the detector."""
    at = rates.get(TARGET_BATCH)
    if at is None:
        return [
            (f"{name} >= {value:.0f} img/s", f"batch {TARGET_BATCH} not measured", "-")
            for name, value in TARGETS.items()
        ]
    detector = at.get("detector fp16", at["detector fp32"])
    out = []
    for name, step in (("preprocess", "decode + letterbox"), ("postprocess", "postprocess")):
        met = at[step] >= TARGETS[name] and at[step] >= detector
        out.append(
            (
                f"{name} >= {TARGETS[name]:.0f} img/s and >= the detector ({detector:.0f} img/s)",
                f"{at[step]:.0f} img/s",
                "yes" if met else "**no**",
            )
        )
    return out


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
    lines += ["## Machine", "", "| what | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += [
        f"| detector | `{models.source.name}` ({', '.join(models.detectors)}), persons {models.person_classes} |",
        f"| gender classifier | {models.classifier.preprocessing.crop} crops, "
        f"{models.classifier.preprocessing.size} px, labels {', '.join(models.classifier.labels)} |",
        "",
        "## Checks",
        "",
        f"{len(rows)} images: {', '.join(r.name for r in rows)}. Ultralytics' predict and this pipeline use the "
        f"default thresholds (CONF {spec.DEFAULT_CONF_THRESHOLD}, IOU {spec.DEFAULT_IOU_THRESHOLD}) on "
        f"{'the CPU' if smoke else 'the same GPU'}. The face detector and the classifier run on ONNX Runtime (CPU), "
        "once: the postprocess on the device gets the answers they gave the postprocess on the CPU (the served "
        "models are TensorRT plans, `make gpu-image-check`'s).",
        "",
        "| check | result | measured | tolerance |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c.name} | {'pass' if c.ok else '**FAIL**'} | {c.measured} | {c.tolerance} |" for c in checks]
    precisions = list(models.detectors)
    lines += [
        "",
        "Per image (pixel differences in levels of 1/255; boxes: the largest coordinate difference to Ultralytics):",
        "",
        "| image | size | GEOMETRY | IMAGES max / mean | ORIGINAL mean | persons Ultralytics / "
        + " / ".join(precisions)
        + " | boxes "
        + " / ".join(precisions)
        + " (px) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        counts = " / ".join(str(r.counts[k]) for k in ("ultralytics", *precisions))
        boxes = " / ".join(f"{r.box_px[p]:.2f}" for p in precisions)
        lines.append(
            f"| {r.name} | {r.width}x{r.height} | {'equal' if r.geometry_equal else '**differs**'} | "
            f"{r.images_max:.1f} / {r.images_mean:.3f} | {r.original_mean:.3f} | {counts} | {boxes} |"
        )
    lines += [
        "",
        "## Chroma upsampling of the mixed decoder",
        "",
        f"DALI's `jpeg_fancy_upsampling` (served: {'on' if spec.GPU_JPEG_FANCY_UPSAMPLING else 'off'}, "
        "`pipelines/spec.py`): the same images through the served graph both ways, against the CPU graph's "
        "pixels and Ultralytics' boxes (detector fp32)." + (" On the CPU there is no choice: both rows are equal."
                                                             if smoke else ""),
        "",
        "| jpeg_fancy_upsampling | IMAGES max / mean (levels) | boxes (px) |",
        "|---|---|---|",
    ]
    lines += [f"| {'on' if g.fancy_upsampling else 'off'} | {g.images_max:.1f} / {g.images_mean:.3f} | "
              f"{g.box_px:.2f} |" for g in gaps]  # fmt: skip
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
        "| step | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for step in STEPS:
        if any(step in rates[b] for b in batches):
            lines.append(f"| {step} | " + " | ".join(f"{rates[b][step]:.0f}" for b in batches) + " |")
    lines += ["", f"## Targets (batch {TARGET_BATCH}, 1080p JPEGs)", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {met} |" for t, m, met in _targets(rates)]
    if smoke:
        lines += ["", "The targets are for a GPU; a CPU smoke run cannot meet them and is not meant to."]
    return "\n".join([*lines, ""])


def export_models(
    work: Path,
    detector: str = weights.DEFAULT,
    person_classes: str | None = None,
    gender_model: str = gender_onnx.DEFAULT,
    face_model: str = face_onnx.DEFAULT,
) -> Path:
    """`python -m export --plans no` into work/: the ONNX and manifests the server would load, made by the
    export itself, without touching model_repository/ (or its plans). Returns the repository."""
    repository = work / "model_repository"
    models = ["--detector", detector, "--gender-model", gender_model, "--face-model", face_model]
    if person_classes:
        models += ["--person-classes", person_classes]
    folders = ["--repository", str(repository), "--cache", str(work / "export")]
    command = [sys.executable, "-m", "export", "--plans", "no", *folders, *models]
    log.info("exporting the models: %s", " ".join(command[1:]))
    status = subprocess.run(command, cwd=ROOT, check=False).returncode
    if status:
        raise ValueError(f"`python -m export` exited with {status}; its log above says why")
    return repository


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    tolerances = GPU_TOLERANCES if device.type == "cuda" else CPU_TOLERANCES
    images = parity_images()
    unknown = set(args.images or ()) - set(images)
    if unknown:
        raise ValueError(f"unknown images {sorted(unknown)}; choose among {list(images)}")
    chosen = {name: images[name] for name in args.images or images}
    facts = machine(device)
    log.info("versions: %s", ", ".join(f"{k} {v}" for k, v in facts.items()))
    repository = args.repository or export_models(
        args.work, args.detector, args.person_classes, args.gender_model, args.face_model
    )
    models = Models.load(repository, device)

    log.info("checks on %d images", len(chosen))
    rows, checks = check_parity(models, chosen, device, tolerances)
    for c in checks:
        log.info("%s %s: %s (tolerance %s)", "pass" if c.ok else "FAIL", c.name, c.measured, c.tolerance)
    gaps = upsampling_gaps(models, chosen, device)
    for g in gaps:
        log.info("jpeg_fancy_upsampling %s: IMAGES max %.1f mean %.3f levels, boxes %.2f px",
                 "on" if g.fancy_upsampling else "off", g.images_max, g.images_mean, g.box_px)  # fmt: skip
    rates = {}
    for batch in args.batches:
        rates[batch] = throughput(models, batch, device, args.min_seconds, args.min_runs)
        log.info("batch %d: %s", batch, ", ".join(f"{k} {v:.0f} img/s" for k, v in rates[batch].items()))
    out = args.out or (REPORT if device.type == "cuda" else SMOKE_REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(device, facts, models, rows, checks, rates, gaps))
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
    parser.add_argument("--batches", type=_batches, default=list(BATCHES), help="batch sizes to time, e.g. 1,8,32,128")
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
        log.info("versions: %s", ", ".join(f"{k} {v}" for k, v in machine(torch.device("cpu")).items()))
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

"""The gpu variant's steps in one process: the letterbox graph (nvJPEG), then the postprocess on its tensors.

What the server runs in three models, here as plain calls, so that the parity checks and the timing
run exactly this; the detector between them is `Models.head`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor

from pipelines import detections, gender, spec
from pipelines.dali import letterbox
from pipelines.dali.gpu import GpuLetterbox
from tools.evaluate.gpu.models import Call, Models


@dataclass(frozen=True)
class Letterboxed:
    """The DALI step's outputs as torch tensors on the graph's device."""

    images: torch.Tensor  # [B, 3, S, S] float32
    geometry: torch.Tensor  # [B, 6] float32
    originals: torch.Tensor  # [B, H, W, 3] uint8, zero-padded to the batch's largest


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


@dataclass(frozen=True)
class Postprocessed:
    found: detections.Detections
    chips: gender.Chips
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
        lambda chips: calls[spec.Step.GENDER](chips.pixels),
        face,
    )
    return Postprocessed(found, judged.chips, judged.gender, judged.gender_scores, judged.faces)


def postprocess(
    models: Models, predictions: torch.Tensor, boxed: Letterboxed, calls: dict[spec.Step, Call]
) -> Postprocessed:
    """What postprocess_<tier> does with a batch."""
    return genders(models, nms(models, predictions, boxed.geometry), boxed, calls)

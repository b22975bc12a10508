"""Gender of each detected person: cut what the classifier was trained on, then turn probabilities into labels.

What a classifier sees comes from its manifest (`crop`): an aligned face (the face detector runs on
the top of each person box, and the face's landmarks place the chip as the classifier's template
says), or a head square or the person box (fallbacks for classifiers trained on those). Kept apart
from the Triton model so the logic is tested without a server and runs unchanged on host or GPU
tensors; the models themselves are called through the functions given (BLS in the server).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipelines import cutting, faces, spec
from pipelines.detections import Detections
from pipelines.manifest import FaceDetector, Preprocessing


@dataclass(frozen=True)
class Chips:
    """All classifiable persons of a batch, in image order, and where each came from."""

    pixels: torch.Tensor  # [P, 3, S, S] normalized classifier input
    image: torch.Tensor  # [P] batch index of the image
    slot: torch.Tensor  # [P] index among that image's detections
    faces: torch.Tensor  # [P, 4] the face box in original pixels (crop policy `face`), else zeros


@dataclass(frozen=True)
class FaceModel:
    """The face detector: its manifest and how to run it on normalized regions [K, 3, size, size].

    `run(regions, image)` returns FACE_MAPS; `image` [K] says which image of the batch each region
    belongs to (the server fails those requests when a call fails).
    """

    record: FaceDetector
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def persons(found: Detections) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [P], slot [P]) of every detection of the batch, in image order then detection order."""
    slots = torch.arange(found.boxes.shape[1], device=found.boxes.device)
    image, slot = (slots[None, :] < found.num.to(found.boxes.device)).nonzero(as_tuple=True)
    return image, slot


def _empty(device: torch.device, size: int) -> Chips:
    index = torch.zeros(0, dtype=torch.long, device=device)
    return Chips(torch.zeros((0, 3, size, size), device=device), index, index, torch.zeros((0, 4), device=device))


def gather(
    found: Detections,
    originals: cutting.Images,
    geometry: torch.Tensor,
    preprocessing: Preprocessing,
    face: FaceModel | None = None,
) -> Chips:
    """The classifier's input for every person it can judge; originals[b] is image b's decoded [H, W, 3].

    `face`: persons whose face region is under MIN_FACE_PX are skipped; the others' regions go to the
    face detector in one call; persons whose face `faces.owned` accepts get a chip aligned from its
    landmarks. `head`, `person`: persons whose crop is under MIN_CROP_PX are skipped.
    """
    device = found.boxes.device
    image, slot = persons(found)
    boxes = found.boxes[image, slot]
    wh = geometry[:, 4:6].to(device)[image]
    policy = spec.CropPolicy(preprocessing.crop)
    if policy is spec.CropPolicy.FACE:
        if face is None:
            raise ValueError("this classifier reads aligned faces: a face detector is needed")
        region = faces.regions(boxes, wh)
        keep = (region[:, 2] - region[:, 0]) >= spec.MIN_FACE_PX
        image, slot, boxes, wh, region = image[keep], slot[keep], boxes[keep], wh[keep], region[keep]
        if image.numel() == 0:
            return _empty(device, preprocessing.size)
        f = face.record
        pixels = cutting.resize(originals, image, region, f.size)
        maps = face.run(cutting.normalize(pixels, f.channels, f.mean, f.scale), image)
        found_faces = faces.decode(maps, region, f.size, f.stride)
        keep = faces.owned(found_faces, boxes, image)
        image, slot, wh = image[keep], slot[keep], wh[keep]
        if image.numel() == 0:
            return _empty(device, preprocessing.size)
        template = torch.tensor(preprocessing.template, dtype=torch.float32, device=device)
        affine = faces.chip_to_image(found_faces.landmarks[keep], template, preprocessing.padding)
        chips = cutting.align(originals, image, wh, affine, preprocessing.size)
        face_boxes = torch.minimum(found_faces.box[keep].clamp(min=0), wh.repeat(1, 2))
    else:
        padding = preprocessing.padding if policy is spec.CropPolicy.HEAD else 0.0
        region, ok = cutting.crop_regions(boxes, wh, policy, padding)
        image, slot, wh, region = image[ok], slot[ok], wh[ok], region[ok]
        if image.numel() == 0:
            return _empty(device, preprocessing.size)
        chips = cutting.resize(originals, image, cutting.snap(region, wh), preprocessing.size)
        face_boxes = torch.zeros((image.numel(), 4), device=device)
    pixels = cutting.normalize(chips, preprocessing.channels, preprocessing.mean, preprocessing.scale)
    return Chips(pixels, image, slot, face_boxes)


@dataclass(frozen=True)
class Attributes:
    """What postprocess adds to the detections of a batch: who was classified, and the three outputs."""

    chips: Chips
    gender: torch.Tensor  # GENDER [B, MAX_DET]
    gender_scores: torch.Tensor  # GENDER_SCORES [B, MAX_DET]
    faces: torch.Tensor  # FACES [B, MAX_DET, 4]


def attributes(
    found: Detections,
    originals: cutting.Images,
    geometry: torch.Tensor,
    preprocessing: Preprocessing,
    gender_values: torch.Tensor,
    thresholds: torch.Tensor,
    classify: Callable[[Chips], torch.Tensor],
    face: FaceModel | None = None,
) -> Attributes:
    """postprocess_<tier>'s gender path for a batch: `gather`, the classifier through `classify` (not
    called when nobody can be judged), then `labels`; thresholds [B] per image."""
    batch = found.boxes.shape[0]
    chosen = gather(found, originals, geometry, preprocessing, face)
    probabilities = torch.zeros((0, len(gender_values)), device=found.boxes.device)
    if chosen.pixels.shape[0]:
        probabilities = classify(chosen)
    genders, scores = labels(probabilities, gender_values, chosen, thresholds, batch)
    return Attributes(chosen, genders, scores, face_boxes(chosen, batch))


def face_boxes(chips: Chips, batch: int, max_det: int = spec.MAX_DET) -> torch.Tensor:
    """FACES [B, max_det, 4] float32: each classified person's face box, zeros elsewhere."""
    out = torch.zeros((batch, max_det, 4), dtype=torch.float32, device=chips.faces.device)
    out[chips.image, chips.slot] = chips.faces.float()
    return out


def labels(
    probabilities: torch.Tensor,
    gender_values: torch.Tensor,
    chips: Chips,
    thresholds: torch.Tensor,
    batch: int,
    max_det: int = spec.MAX_DET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GENDER [B, max_det] int32 and GENDER_SCORES [B, max_det] float32.

    gender_values[i] is the GENDER value of classifier output i. A person is
    undetermined (-1) when it was not classified (no face, crop too small) or when its
    top probability is below its image's threshold; GENDER_SCORES is the top
    probability wherever the classifier ran, else 0.
    One pass over all persons of the batch, no host sync, provided gender_values and
    thresholds already lie on the probabilities' device (a host tensor is copied, which
    waits for the GPU).
    """
    device = probabilities.device
    gender = torch.full((batch, max_det), spec.UNDETERMINED, dtype=torch.int32, device=device)
    scores = torch.zeros((batch, max_det), dtype=torch.float32, device=device)
    if probabilities.numel() == 0:
        return gender, scores
    top, index = probabilities.float().max(dim=1)
    value = gender_values.to(device)[index].int()
    sure = top >= thresholds.to(device)[chips.image]
    gender[chips.image, chips.slot] = torch.where(sure, value, torch.full_like(value, spec.UNDETERMINED))
    scores[chips.image, chips.slot] = top
    return gender, scores

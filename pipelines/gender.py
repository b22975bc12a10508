"""Gender of each detected person: gather the crops of a batch, then turn probabilities into labels.

Kept apart from the Triton model so the logic is tested without a server and
runs unchanged on host or GPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines import spec
from pipelines.crops import crop_regions, cut
from pipelines.detections import Detections
from pipelines.manifest import Preprocessing


@dataclass(frozen=True)
class Crops:
    """All classifiable persons of a batch, in image order, and where each came from."""

    pixels: torch.Tensor  # [P, 3, S, S] normalized classifier input
    image: torch.Tensor  # [P] batch index of the image
    slot: torch.Tensor  # [P] index among that image's detections


def gather(
    found: Detections,
    originals: list[torch.Tensor],
    geometry: torch.Tensor,
    classifier: Preprocessing,
    policy: spec.CropPolicy = spec.CROP_POLICY,
) -> Crops:
    """Crops of every person large enough to classify; originals[b] is image b's decoded [H, W, 3]."""
    device = found.boxes.device
    pixels, images, slots = [], [], []
    padding = classifier.padding if policy is spec.CropPolicy.HEAD else 0.0
    for b, n in enumerate(found.num[:, 0].tolist()):
        if n == 0:
            continue
        wh = geometry[b, 4:6].to(device).expand(n, 2)
        regions, ok = crop_regions(found.boxes[b, :n], wh, policy, padding)
        if not ok.any():
            continue
        width, height = (int(v) for v in geometry[b, 4:6].tolist())
        pixels.append(cut(originals[b][:height, :width], regions[ok], classifier))
        keep = ok.nonzero()[:, 0]
        slots.append(keep)
        images.append(torch.full_like(keep, b))
    if not pixels:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Crops(torch.zeros((0, 3, classifier.size, classifier.size), device=device), empty, empty)
    return Crops(torch.cat(pixels), torch.cat(images), torch.cat(slots))


def labels(
    probabilities: torch.Tensor,
    gender_values: torch.Tensor,
    crops: Crops,
    thresholds: torch.Tensor,
    batch: int,
    max_det: int = spec.MAX_DET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GENDER [B, max_det] int32 and GENDER_SCORES [B, max_det] float32.

    gender_values[i] is the GENDER value of classifier output i. A person is
    undetermined (-1) when it was not classified (crop too small) or when its
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
    sure = top >= thresholds.to(device)[crops.image]
    gender[crops.image, crops.slot] = torch.where(sure, value, torch.full_like(value, spec.UNDETERMINED))
    scores[crops.image, crops.slot] = top
    return gender, scores

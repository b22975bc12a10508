"""Person crops for the gender classifier: where to cut (head or person) and how to resize.

Torch, so the crops are cut where the decoded image already is (GPU or host).
Crops come from the full-resolution decoded image, not from the 640x640
letterbox, so small persons keep all the pixels the camera gave them.
"""

from __future__ import annotations

import torch
import torchvision

from pipelines import spec
from pipelines.manifest import Preprocessing


def crop_regions(
    boxes: torch.Tensor, image_wh: torch.Tensor, policy: spec.CropPolicy, padding: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop rectangles [K, 4] (x1, y1, x2, y2, pixels) for person boxes [K, 4] in images of size image_wh [K, 2].

    `head`: a square of side min(HEAD_WIDTH_FRACTION * w, HEAD_HEIGHT_FRACTION * h) at the top
    centre of the box, grown by `padding` on each side, then moved (and if need be shrunk) to
    lie inside the image. `person`: the box itself. Also returns which crops are large enough
    (side before padding >= MIN_CROP_PX) to classify.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    w, h = x2 - x1, y2 - y1
    if policy is spec.CropPolicy.PERSON:
        return boxes.clone(), torch.minimum(w, h) >= spec.MIN_CROP_PX
    head = torch.minimum(spec.HEAD_WIDTH_FRACTION * w, spec.HEAD_HEIGHT_FRACTION * h)
    big_enough = head >= spec.MIN_CROP_PX
    cx, cy = (x1 + x2) / 2, y1 + head / 2
    side = torch.minimum(head * (1 + 2 * padding), image_wh.min(dim=-1).values)
    left = torch.minimum((cx - side / 2).clamp(min=0), image_wh[:, 0] - side)
    top = torch.minimum((cy - side / 2).clamp(min=0), image_wh[:, 1] - side)
    return torch.stack((left, top, left + side, top + side), dim=-1), big_enough


def cut(image: torch.Tensor, regions: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """Crops [K, 3, S, S] normalized for the classifier, from one decoded RGB image [H, W, 3] uint8.

    Bilinear with adaptive sampling (roi_align, aligned pixel centres), which averages
    over the source pixels when shrinking, as an area resize does.
    """
    chw = image.permute(2, 0, 1)[None].float()
    if not pre.rgb:
        chw = chw.flip(1)
    crops = torchvision.ops.roi_align(
        chw, [regions.float()], output_size=pre.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
    mean = torch.tensor(pre.mean, device=crops.device).view(1, 3, 1, 1)
    scale = torch.tensor(pre.scale, device=crops.device).view(1, 3, 1, 1)
    return (crops - mean) / scale

"""Cutting pixels for the face detector and the gender classifier from the decoded images.

Torch, so the pixels are cut where the decoded images already are (GPU or host). Everything comes
from the full-resolution decoded image (`ORIGINAL`), not from the 640x640 letterbox, so small persons
keep all the pixels the camera gave them, and only the cut regions are ever converted to float.

Two operations:
- `resize`: an axis-aligned region with integer bounds, resized to a square with bilinear
  interpolation that widens its kernel to the scale when shrinking (antialiased, as PIL's
  `resize(BILINEAR)` and `torch.nn.functional.interpolate(antialias=True)`).
- `align`: a chip placed by an affine map (a face aligned from its landmarks), sampled bilinearly
  from an antialiased copy of its bounding box at twice the chip's resolution; pixels outside the
  image are black, as dlib's extract_image_chip leaves them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines import spec

Images = list[torch.Tensor]  # decoded RGB images [H, W, 3] uint8, possibly zero-padded beyond their size


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


def snap(regions: torch.Tensor, image_wh: torch.Tensor) -> torch.Tensor:
    """Regions [K, 4] rounded to whole pixels (half away from zero), clipped to the image, at least 1 px."""
    wh = image_wh.to(regions.dtype).repeat(1, 2)
    snapped = torch.minimum(torch.floor(regions + 0.5).clamp(min=0), wh)
    snapped[:, :2] = torch.minimum(snapped[:, :2], wh[:, :2] - 1)
    snapped[:, 2:] = torch.maximum(snapped[:, 2:], snapped[:, :2] + 1)
    return snapped


def resize(images: Images, image_index: torch.Tensor, regions: torch.Tensor, size: int) -> torch.Tensor:
    """RGB crops [K, 3, size, size] float (0-255) of whole-pixel regions [K, 4] of images[image_index[k]].

    One resize per crop on just its pixels: on the host, torch's uint8 path (values rounded to
    integers, as any image library returns them); on a GPU, the crop converted to float.
    """
    out = []
    for b, (x1, y1, x2, y2) in zip(image_index.tolist(), regions.long().tolist(), strict=True):
        patch = images[b][y1:y2, x1:x2].permute(2, 0, 1)[None]
        if patch.is_cuda:
            patch = patch.float()
        out.append(F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    if not out:
        return torch.zeros((0, 3, size, size), device=images[0].device if images else "cpu")
    return torch.cat(out).float()


def align(
    images: Images, image_index: torch.Tensor, image_wh: torch.Tensor, chip_to_image: torch.Tensor, size: int
) -> torch.Tensor:
    """Chips [K, 3, size, size] float (0-255): chip pixel (row i, column j) shows image point
    chip_to_image[k] @ (j / (size - 1), i / (size - 1), 1) (continuous coordinates, pixel centres at
    .5), as dlib's extract_image_chip maps chip pixels onto its chip rectangle.

    The chip's footprint (the image of the unit square, plus a chip pixel on each side) is resized to
    twice the chip's side with `resize`, then sampled bilinearly for all chips in one call.
    """
    k = chip_to_image.shape[0]
    if k == 0:
        return torch.zeros((0, 3, size, size), device=chip_to_image.device)
    corners = torch.tensor([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=chip_to_image.dtype,
                           device=chip_to_image.device)  # fmt: skip
    points = corners @ chip_to_image.transpose(1, 2)  # [K, 4, 2]
    margin = chip_to_image[:, :, :2].abs().sum(dim=2).max(dim=1).values / (size - 1)  # one chip pixel
    lo = points.min(dim=1).values - margin[:, None]
    hi = points.max(dim=1).values + margin[:, None]
    box = snap(torch.cat((torch.floor(lo), torch.ceil(hi)), dim=1), image_wh)
    middle = 2 * size
    coarse = resize(images, image_index, box, middle)
    grid_uv = torch.linspace(0, 1, size, dtype=chip_to_image.dtype, device=chip_to_image.device)
    v, u = torch.meshgrid(grid_uv, grid_uv, indexing="ij")
    uv1 = torch.stack((u, v, torch.ones_like(u)), dim=-1).view(1, -1, 3)
    xy = (uv1 @ chip_to_image.transpose(1, 2)).view(k, size, size, 2)
    # grid_sample with align_corners=False: -1 and 1 are the outer edges of the coarse copy's pixels.
    normalized = 2 * (xy - box[:, None, None, :2]) / (box[:, None, None, 2:] - box[:, None, None, :2]) - 1
    return F.grid_sample(coarse, normalized.float(), mode="bilinear", padding_mode="zeros", align_corners=False)


def normalize(
    pixels: torch.Tensor, channels: str, mean: tuple[float, float, float], scale: tuple[float, float, float]
) -> torch.Tensor:
    """RGB pixels [K, 3, S, S] (0-255) as a model wants them: its channel order, (pixel - mean) / scale."""
    if channels != "RGB":
        pixels = pixels.flip(1)
    m = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    s = torch.tensor(scale, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - m) / s

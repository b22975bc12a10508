"""Detector head -> persons in original pixels, with Ultralytics' NMS semantics.

Written in torch so the same code runs on host tensors (cpu variant) and on the
GPU tensors Triton hands over through DLPack (GPU variant). Everything but the
NMS kernel itself is vectorized over the batch; torchvision's NMS, the one
Ultralytics calls, runs once per image so ties and offsets match it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision

from pipelines import spec


@dataclass(frozen=True)
class Detections:
    """Fixed-size, padded results for a batch, as the ensemble returns them."""

    num: torch.Tensor  # [B, 1] int32
    boxes: torch.Tensor  # [B, MAX_DET, 4] float32, x1 y1 x2 y2 in original pixels
    scores: torch.Tensor  # [B, MAX_DET] float32
    classes: torch.Tensor  # [B, MAX_DET] int32


def xywh_to_xyxy(xywh: torch.Tensor) -> torch.Tensor:
    xy, half = xywh[..., :2], xywh[..., 2:4] / 2
    return torch.cat((xy - half, xy + half), dim=-1)


def unletterbox(boxes: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Map letterboxed xyxy boxes [B, K, 4] to original pixels and clip, as Ultralytics' scale_boxes.

    geometry [B, 6] = pad_left, pad_top, resized_w, resized_h, original_w, original_h.
    """
    pad = geometry[:, None, 0:2].repeat(1, 1, 2)
    size = geometry[:, None, 4:6]
    gain = (geometry[:, None, 2:4] / size).repeat(1, 1, 2)
    mapped = (boxes - pad) / gain
    upper = size.repeat(1, 1, 2)
    return torch.minimum(mapped.clamp(min=0), upper)


def detect(
    predictions: torch.Tensor,
    geometry: torch.Tensor,
    conf: torch.Tensor,
    iou: torch.Tensor,
    person_classes: torch.Tensor,
    agnostic: bool = spec.AGNOSTIC_NMS,
    max_det: int = spec.MAX_DET,
) -> Detections:
    """Filter, suppress and map a batch of raw detector outputs.

    predictions [B, 4 + C, A] (cx, cy, w, h, class scores), geometry [B, 6],
    conf and iou [B] (per-request thresholds), person_classes: ids to keep.
    Semantics of Ultralytics' non_max_suppression(multi_label=False): best class
    per anchor, score > conf, keep person classes, at most MAX_NMS candidates by
    score, per-class NMS (IoU > iou suppresses), at most max_det per image.
    """
    batch, device = predictions.shape[0], predictions.device
    rows = predictions.transpose(1, 2).float()  # [B, A, 4 + C]
    best, cls = rows[..., 4:].max(dim=2)  # [B, A]
    keep = (best > conf[:, None]) & torch.isin(cls, person_classes)

    num = torch.zeros((batch, 1), dtype=torch.int32, device=device)
    boxes = torch.zeros((batch, max_det, 4), dtype=torch.float32, device=device)
    scores = torch.zeros((batch, max_det), dtype=torch.float32, device=device)
    classes = torch.zeros((batch, max_det), dtype=torch.int32, device=device)
    image, anchor = keep.nonzero(as_tuple=True)
    if image.numel() == 0:
        return Detections(num, boxes, scores, classes)

    cand_boxes = xywh_to_xyxy(rows[image, anchor, :4])
    cand_scores = best[image, anchor]
    cand_classes = cls[image, anchor]
    offsets = cand_boxes + (0.0 if agnostic else float(spec.MAX_WH)) * cand_classes[:, None].float()
    counts = torch.bincount(image, minlength=batch).tolist()  # one host sync for the split
    starts = [0]
    for c in counts:
        starts.append(starts[-1] + c)
    iou_host = iou.tolist()
    for b in range(batch):
        lo, hi = starts[b], starts[b + 1]
        if lo == hi:
            continue
        idx = torch.arange(lo, hi, device=device)
        if hi - lo > spec.MAX_NMS:
            idx = idx[cand_scores[lo:hi].argsort(descending=True)[: spec.MAX_NMS]]
        kept = idx[torchvision.ops.nms(offsets[idx], cand_scores[idx], iou_host[b])[:max_det]]
        n = kept.numel()
        num[b, 0] = n
        boxes[b, :n] = cand_boxes[kept]
        scores[b, :n] = cand_scores[kept]
        classes[b, :n] = cand_classes[kept].int()
    mapped = unletterbox(boxes, geometry.float())
    valid = torch.arange(max_det, device=device)[None, :] < num
    boxes = torch.where(valid[..., None], mapped, torch.zeros_like(mapped))
    return Detections(num, boxes, scores, classes)

"""Detector head -> persons in original pixels, with Ultralytics' NMS semantics.

Written in torch so the same code runs on host tensors (cpu variant) and on the
GPU tensors Triton hands over through DLPack (GPU variant). The whole batch is
suppressed at once: candidates ranked per image in the order torchvision's NMS
visits them, the IoU of every pair within an image computed with the kernel's
own float32 arithmetic, and the greedy pass resolved as a fixed point over the
batch. No offset separates the images: adding image * offset to float32 boxes
rounds them and changes Ultralytics' decisions (seen in the unit tests). Larger
candidate sets (see MAX_PAIRS, CPU_MAX_CANDIDATES), or more than MAX_NMS in one
image, take torchvision's kernel once per image instead: Ultralytics' own steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines import spec

# The batched NMS compares every pair of candidates within an image: B * K * K pairs, K the
# most candidates in one image, about 16 bytes each at the peak, so at most MAX_PAIRS (~1 GiB).
MAX_PAIRS = 2**26
# On a CPU it is faster than one kernel call per image only while pairs are few (the kernel
# skips suppressed boxes): measured break-even near 60 candidates at batch 8 and 32.
CPU_MAX_CANDIDATES = 64


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


def ranked(scores: torch.Tensor, candidate: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] anchors of each image's candidates, best score first and, among equal scores, lowest anchor first.

    That is the order torchvision's NMS visits Ultralytics' candidates in: a stable sort of
    their scores, listed by anchor. k is the largest candidate count, so topk picks exactly
    each image's candidates (then non-candidates); only their order needs the two small sorts.
    """
    masked = torch.where(candidate, scores, float("-inf"))
    anchor = masked.topk(k, dim=1).indices.sort(dim=1).values
    order = torch.gather(masked, 1, anchor).sort(dim=1, descending=True, stable=True).indices
    return torch.gather(anchor, 1, order)


def greedy(boxes: torch.Tensor, valid: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
    """Greedy NMS of every image at once: boxes [B, K, 4] in visiting order, valid [B, K], iou [B] -> kept [B, K].

    The overlap of each pair within an image is computed as torchvision's CPU kernel does
    (float32 throughout, ovr = inter / (area_i + area_j - inter), suppressed when > iou), so
    each decision is bit for bit the kernel's; where a coordinate is NaN, torch.maximum and
    std::max differ, but the area is NaN, so ovr is NaN and suppresses nothing in either.
    The kept set is the fixed point of "kept = valid and not overlapped by an earlier kept
    box": iterating from "all kept" makes the first t entries final after t rounds, and the
    fixed point is unique, so the loop ends on the greedy result: 2 to 7 rounds on the heads
    measured (one host sync each).
    """
    x1, y1, x2, y2 = boxes.unbind(dim=-1)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)
    h = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)
    inter = w.mul_(h)
    ovr = inter.div_((area[:, :, None] + area[:, None, :]).sub_(inter))
    k = boxes.shape[1]
    later = torch.ones((k, k), dtype=torch.bool, device=boxes.device).triu_(diagonal=1)
    suppresses = (ovr > iou[:, None, None]) & later  # [b, i, j]: i comes first and overlaps j past the threshold
    kept = valid
    while True:
        update = valid & ~(suppresses & kept[:, :, None]).any(dim=1)
        if torch.equal(update, kept):
            return kept
        kept = update


def per_image(
    rows: torch.Tensor,
    scores: torch.Tensor,
    cls: torch.Tensor,
    candidate: torch.Tensor,
    iou: torch.Tensor,
    agnostic: bool,
    max_det: int,
) -> torch.Tensor:
    """[B, max_det] anchors kept, -1 past each image's last: Ultralytics' own steps, one image at a time.

    For candidate sets too large to compare every pair: torchvision's kernel skips suppressed
    boxes, and past MAX_NMS candidates only this reproduces Ultralytics' cut, the head of an
    unstable argsort (equal scores come in that sort's own order).
    rows [B, A, 4 + C], scores and cls [B, A].
    """
    # Imported here: torchvision adds about 90 MiB to every postprocess stub (measured by make bench),
    # and only this path needs it.
    from torchvision.ops import nms

    kept = torch.full((rows.shape[0], max_det), -1, dtype=torch.long, device=rows.device)
    for b, threshold in enumerate(iou.tolist()):
        anchor = candidate[b].nonzero()[:, 0]
        if anchor.numel() > spec.MAX_NMS:
            anchor = anchor[scores[b, anchor].argsort(descending=True)[: spec.MAX_NMS]]
        boxes = class_offset(rows[b, anchor, :4], cls[b, anchor], agnostic)
        keep = anchor[nms(boxes, scores[b, anchor], threshold)[:max_det]]
        kept[b, : keep.numel()] = keep
    return kept


def class_offset(xywh: torch.Tensor, cls: torch.Tensor, agnostic: bool) -> torch.Tensor:
    """xyxy boxes moved by class * MAX_WH in float32, as Ultralytics separates classes for one NMS call."""
    return xywh_to_xyxy(xywh) + (0.0 if agnostic else float(spec.MAX_WH)) * cls[..., None].float()


def detect(
    predictions: torch.Tensor,
    geometry: torch.Tensor,
    conf: torch.Tensor,
    iou: torch.Tensor,
    person_classes: torch.Tensor,
    agnostic: bool = spec.AGNOSTIC_NMS,
    max_det: int = spec.MAX_DET,
    batched: bool | None = None,
) -> Detections:
    """Filter, suppress and map a batch of raw detector outputs.

    predictions [B, 4 + C, A] (cx, cy, w, h, class scores), geometry [B, 6],
    conf and iou [B] (per-request thresholds in [0, 1]), person_classes: ids to keep.
    Semantics of Ultralytics' non_max_suppression(multi_label=False): best class
    per anchor, score > conf, keep person classes, at most MAX_NMS candidates by
    score, per-class NMS (IoU > iou suppresses), at most max_det per image.
    batched: None picks the faster NMS (see MAX_PAIRS); True the batched one wherever it
    is exact (at most MAX_NMS candidates per image); False the per-image kernel calls.
    Host syncs: the largest candidate count (it sizes the pairs), then one per greedy round.
    """
    batch, device = predictions.shape[0], predictions.device
    rows = predictions.transpose(1, 2).float()  # [B, A, 4 + C]
    best, cls = predictions[:, 4:].float().max(dim=1)  # [B, A]; the first of equal scores, as Ultralytics' max
    is_person = (torch.arange(predictions.shape[1] - 4, device=device)[:, None] == person_classes).any(dim=1)
    candidate = (best > conf[:, None]) & is_person.take(cls)
    k = int(candidate.sum(dim=1).max()) if batch else 0
    if k == 0:
        zero = torch.zeros((batch, max_det), dtype=torch.float32, device=device)
        return Detections(zero[:, :1].int(), zero[..., None].expand(-1, -1, 4).clone(), zero, zero.int())

    image = torch.arange(batch, device=device)[:, None]
    if batched is None:
        batched = batch * k * k <= MAX_PAIRS and (device.type != "cpu" or k <= CPU_MAX_CANDIDATES)
    if not batched or k > spec.MAX_NMS:
        anchor = per_image(rows, best, cls, candidate, iou, agnostic, max_det)
        take = anchor >= 0
        slot = torch.arange(max_det, device=device).expand(batch, -1)
        anchor = anchor.clamp(min=0)
    else:
        anchor = ranked(best, candidate, k)  # [B, K]
        boxes = class_offset(rows[image, anchor, :4], cls[image, anchor], agnostic)
        kept = greedy(boxes, candidate[image, anchor], iou)
        slot = kept.cumsum(dim=1) - 1
        take = kept & (slot < max_det)

    # Kept entries go to their slot, everything else to a spare last column that is dropped.
    column = torch.where(take, slot, max_det)
    boxes = torch.zeros((batch, max_det + 1, 4), dtype=torch.float32, device=device)
    scores = torch.zeros((batch, max_det + 1), dtype=torch.float32, device=device)
    classes = torch.zeros((batch, max_det + 1), dtype=torch.int32, device=device)
    boxes[image, column] = xywh_to_xyxy(rows[image, anchor, :4])
    scores[image, column] = best[image, anchor]
    classes[image, column] = cls[image, anchor].int()
    num = take.sum(dim=1, keepdim=True, dtype=torch.int32)
    mapped = unletterbox(boxes[:, :max_det], geometry.float())
    valid = torch.arange(max_det, device=device)[None, :] < num
    return Detections(num, torch.where(valid[..., None], mapped, 0), scores[:, :max_det], classes[:, :max_det])


def above(found: Detections, conf: torch.Tensor) -> Detections:
    """The detections scoring above conf [B] (Ultralytics keeps score > conf): the leading rows of each image,
    as NMS ranks by score, the rest zeroed. With `found` detected at a lower threshold this is what
    `detect` at conf gives: a box under conf never suppresses one above it (the track tier's postprocess
    detects once at spec.TRACK_DETECTION_CONF for its tracker and answers at the request's threshold)."""
    slots = torch.arange(found.scores.shape[1], device=found.scores.device)[None, :]
    keep = (found.scores > conf[:, None]) & (slots < found.num)
    num = keep.sum(dim=1, keepdim=True, dtype=torch.int32)
    return Detections(num, torch.where(keep[..., None], found.boxes, 0), torch.where(keep, found.scores, 0),
                      torch.where(keep, found.classes, 0))  # fmt: skip


def candidates(found: Detections) -> torch.Tensor:
    """spec.CANDIDATES [B, MAX_DET, 5]: every kept box and its score, zero rows after the last."""
    return torch.cat((found.boxes, found.scores[..., None]), dim=-1)

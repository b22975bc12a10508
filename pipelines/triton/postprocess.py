"""`postprocess_<tier>`: NMS and box mapping for every request of the batch in one pass.

Reads which classes are persons from the export manifest of the tier's
detector (named by the `detector` parameter of the config), so nothing about
the weights is hard-coded here. Inputs stay on the device Triton placed them on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from export import manifest
from pipelines import postprocess, spec
from pipelines.triton.tensors import as_torch, invalid, model_config, parameter, per_image, split_sizes, to_triton


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        detector = Path(args["model_repository"]).parent / parameter(config, "detector")
        try:
            record = manifest.read(detector / args["model_version"])
        except FileNotFoundError as e:
            raise pb_utils.TritonModelException(str(e)) from e
        self.person_classes = torch.tensor(record["person_class_ids"], dtype=torch.long)

    def execute(self, requests: list[Any]) -> list[Any]:
        sizes = split_sizes(requests, spec.PREDICTIONS.name)
        conf, iou, errors = [], [], {}
        for i, (request, rows) in enumerate(zip(requests, sizes, strict=False)):
            c = per_image(request, spec.CONF_THRESHOLD, spec.DEFAULT_CONF_THRESHOLD, rows)
            u = per_image(request, spec.IOU_THRESHOLD, spec.DEFAULT_IOU_THRESHOLD, rows)
            if not all(0.0 <= v <= 1.0 for v in c + u):
                errors[i] = f"{spec.CONF_THRESHOLD.name} and {spec.IOU_THRESHOLD.name} must lie in [0, 1]"
            conf += c
            iou += u
        predictions = torch.cat([as_torch(r, spec.PREDICTIONS.name) for r in requests])
        geometry = torch.cat([as_torch(r, spec.GEOMETRY.name) for r in requests]).to(predictions.device)
        device = predictions.device
        found = postprocess.detect(
            predictions,
            geometry,
            torch.tensor(conf, device=device),
            torch.tensor(iou, device=device),
            self.person_classes.to(device),
        )
        responses, start = [], 0
        for i, rows in enumerate(sizes):
            part = slice(start, start + rows)
            start += rows
            if i in errors:
                responses.append(invalid(errors[i]))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        to_triton(spec.NUM_DETECTIONS.name, found.num[part]),
                        to_triton(spec.BOXES.name, found.boxes[part]),
                        to_triton(spec.SCORES.name, found.scores[part]),
                        to_triton(spec.CLASSES.name, found.classes[part]),
                    ]
                )
            )
        return responses

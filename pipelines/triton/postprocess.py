"""`postprocess_<tier>`: NMS, box mapping, faces and gender for every request of the batch in one pass.

Reads which classes are persons from the export manifest of the tier's
detector, what the gender classifier reads and how to feed it from its
manifest, and the face detector's input from its own (models named by the
`detector`, `gender` and `face` parameters of the config), so nothing about
the weights is hard-coded here. Inputs stay on the device Triton placed them
on; the face regions and then the chips of all persons of all requests go to
the face detector and the classifier in as few BLS calls as their max batch
allows, none when nobody was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from pipelines import admission, detections, gender, manifest, spec
from pipelines.triton import bls
from pipelines.triton.config import model_config, optional_parameter, parameter
from pipelines.triton.errors import internal, invalid
from pipelines.triton.metrics import Counter
from pipelines.triton.tensors import as_torch, per_image, split_sizes, to_host, to_triton


def _manifest(directory: Path, kind: type[manifest.Record]) -> manifest.Record:
    try:
        return manifest.read(directory, kind)
    except manifest.ManifestError as e:
        raise pb_utils.TritonModelException(str(e)) from e


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        # NMS and the chips are small tensors: one thread does them as fast and leaves the cores to
        # the detector and the decoder (torch's OpenMP threads otherwise spin between requests).
        torch.set_num_threads(1)
        # Where this instance works: Triton does not promise where a python model's inputs arrive
        # (python_backend README, "Input Tensor Device Placement"), so each is moved here.
        on_gpu = args.get("model_instance_kind") == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        if on_gpu:
            # The stub hands tensors over and copies on the thread's current device (python_backend
            # src/pb_tensor.cc, FromDLPack: its proxy stream is looked up by cudaGetDevice); without
            # this every instance would use device 0, whatever GPU its tensors live on.
            torch.cuda.set_device(self.device)
        config = model_config(args)
        repository = Path(args["model_repository"]).parent
        version = args["model_version"]
        detector = _manifest(repository / parameter(config, "detector") / version, manifest.Detector)
        self.person_classes = torch.tensor(detector.person_class_ids, dtype=torch.long, device=self.device)
        self.gender_model = parameter(config, "gender")
        classifier = _manifest(repository / self.gender_model / version, manifest.Classifier)
        self.preprocessing = classifier.preprocessing
        self.gender_values = torch.tensor(classifier.gender_values, dtype=torch.long, device=self.device)
        self.gender_max_batch = int(parameter(config, "gender_max_batch"))
        self.face_model = parameter(config, "face")
        self.face_max_batch = int(parameter(config, "face_max_batch"))
        self.face = None
        if self.preprocessing.crop == spec.CropPolicy.FACE.value:
            record = _manifest(repository / self.face_model / version, manifest.FaceDetector)
            self.face = gender.FaceModel(record, self._detect_faces)
            cells = record.size // record.stride
            self.face_maps = (spec.FACE_MAPS.dims[0], cells, cells)  # FACE_MAPS' shape per region
        self.failed: dict[int, Any] = {}  # image -> error response of the BLS call that carried it, per execute
        tier = next(t for t in spec.TIERS if t.model(spec.Step.POSTPROCESS) == args["model_name"])
        self.ledger = admission.Ledger(admission.path_for(tier.name))
        # The tier's answers are counted where they leave it: here, or at the track tier's tracker.
        self.answered = None
        if tier.answers is spec.Step.POSTPROCESS:
            self.answered = Counter(spec.ANSWERED_METRIC, "responses sent, answers and errors", args["model_name"])
        floor = optional_parameter(config, "track_detection_conf")
        self.track_floor = None if floor is None else torch.tensor(float(floor), device=self.device)

    def finalize(self) -> None:
        self.ledger.close()

    def _thresholds(self, requests: list[Any], sizes: list[int]) -> tuple[list[list[float]], dict[int, Any]]:
        """Per threshold tensor, one value per image; and error responses for values out of range."""
        values: list[list[float]] = [[] for _ in spec.THRESHOLDS]
        errors = {}
        for i, (request, rows) in enumerate(zip(requests, sizes, strict=True)):
            for column, (tensor, default) in zip(values, spec.THRESHOLDS, strict=True):
                given = per_image(request, tensor, default, rows)
                if not all(0.0 <= v <= 1.0 for v in given):
                    errors[i] = invalid(f"{tensor.name} must lie in [0, 1], got {given}")
                column += given
        return values, errors

    def _infer(self, model: str, name: str, output: str, rows: torch.Tensor, image: torch.Tensor, limit: int,
               shape: tuple[int, ...], what: str) -> torch.Tensor:  # fmt: skip
        """`model`'s `output` [len(rows), *shape] on all rows, in chunks of at most `limit`. A failed chunk
        marks the images it carried (self.failed) and leaves zeros, so the other requests are still answered."""
        out = torch.zeros((rows.shape[0], *shape), device=rows.device)
        for start in range(0, rows.shape[0], limit):
            chunk = slice(start, start + limit)
            try:
                out[chunk] = bls.infer(model, {name: rows[chunk]}, output, self.device)
            except bls.BlsError as e:
                for b in set(image[chunk].tolist()):
                    self.failed.setdefault(b, internal(f"{what} failed: {e}"))
        return out

    def _detect_faces(self, regions: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self._infer(self.face_model, spec.FACE_REGIONS.name, spec.FACE_MAPS.name, regions, image,
                           self.face_max_batch, self.face_maps, "face detection")  # fmt: skip

    def _classify(self, chips: gender.Chips) -> torch.Tensor:
        return self._infer(self.gender_model, spec.CROPS.name, spec.PROBABILITIES.name, chips.pixels, chips.image,
                           self.gender_max_batch, (len(self.gender_values),), "gender classification")  # fmt: skip

    def execute(self, requests: list[Any]) -> list[Any]:
        """Every request answered (outputs or its error); their tickets go back to the tier's ledger."""
        tickets = [int(to_host(pb_utils.get_input_tensor_by_name(r, spec.TICKET.name)).flat[0]) for r in requests]
        try:
            return self._answer(requests)
        finally:
            self.ledger.answered(tickets)

    def _answer(self, requests: list[Any]) -> list[Any]:
        sizes = split_sizes(requests, spec.PREDICTIONS.name)
        owner = [i for i, rows in enumerate(sizes) for _ in range(rows)]  # image -> request
        (conf, iou, gender_threshold), errors = self._thresholds(requests, sizes)
        device = self.device
        predictions = torch.cat([as_torch(r, spec.PREDICTIONS.name).to(device) for r in requests])
        geometry = torch.cat([as_torch(r, spec.GEOMETRY.name).to(device) for r in requests])
        # One host-to-device copy for the three thresholds of every image.
        thresholds = torch.tensor([conf, iou, gender_threshold], dtype=torch.float32).to(device, non_blocking=True)
        if self.track_floor is None:
            found = detections.detect(predictions, geometry, thresholds[0], thresholds[1], self.person_classes)
        else:  # once at the tracker's threshold (or the request's, when lower); the answer is its leading rows
            kept = detections.detect(predictions, geometry, torch.minimum(thresholds[0], self.track_floor),
                                     thresholds[1], self.person_classes)  # fmt: skip
            found = detections.above(kept, thresholds[0])
        originals = [image for r in requests for image in as_torch(r, spec.ORIGINAL.name).to(device)]
        self.failed = {}
        judged = gender.attributes(found, originals, geometry, self.preprocessing, self.gender_values, thresholds[2],
                                   self._classify, self.face)  # fmt: skip
        # An out-of-range threshold is the request's first problem, then the first failed call.
        errors = {owner[b]: e for b, e in sorted(self.failed.items(), reverse=True)} | errors
        outputs = (
            (spec.NUM_DETECTIONS, found.num),
            (spec.BOXES, found.boxes),
            (spec.SCORES, found.scores),
            (spec.CLASSES, found.classes),
            (spec.GENDER, judged.gender),
            (spec.GENDER_SCORES, judged.gender_scores),
            (spec.FACES, judged.faces),
        )
        if self.track_floor is not None:
            outputs += ((spec.CANDIDATES, detections.candidates(kept)),)
        responses, start = [], 0
        for i, rows in enumerate(sizes):
            part = slice(start, start + rows)
            start += rows
            if i in errors:
                responses.append(errors[i])
                continue
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[to_triton(t.name, value[part]) for t, value in outputs])
            )
        if self.answered is not None:
            self.answered.increment(len(responses))
        return responses

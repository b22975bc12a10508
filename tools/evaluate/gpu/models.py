"""The models the GPU check runs: exported as the server's would be, and loaded as the server loads them."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from ultralytics import YOLO

from export import face_onnx, gender_onnx, weights
from pipelines import manifest, onnx_session, paths, spec

log = logging.getLogger("gpu_check")


def export_models(
    work: Path,
    detector: str = weights.DEFAULT,
    person_classes: str | None = None,
    gender_model: str = gender_onnx.DEFAULT,
    face_model: str = face_onnx.DEFAULT,
) -> Path:
    """`python -m export --plans no` into work/: the ONNX and manifests the server would load, made by the
    export itself, without touching model_repository/ (or its plans). Returns the repository."""
    repository = work / "model_repository"
    models = ["--detector", detector, "--gender-model", gender_model, "--face-model", face_model]
    if person_classes:
        models += ["--person-classes", person_classes]
    folders = ["--repository", str(repository), "--cache", str(work / "export")]
    command = [sys.executable, "-m", "export", "--plans", "no", *folders, *models]
    log.info("exporting the models: %s", " ".join(command[1:]))
    status = subprocess.run(command, cwd=paths.ROOT, check=False).returncode
    if status:
        raise ValueError(f"`python -m export` exited with {status}; its log above says why")
    return repository


@dataclass
class Call:
    """A model the postprocess calls (BLS in the server) that keeps what it was given and what it answered.

    The device run replays the host run's answers, so the two postprocess runs differ only in where
    the torch code ran: the models are the TensorRT plans' business (`make gpu-image-check`).
    """

    answer: Callable[[torch.Tensor], torch.Tensor]
    given: torch.Tensor | None = None
    said: torch.Tensor | None = None

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        self.given, self.said = rows, self.answer(rows).to(rows.device)
        return self.said

    def replay(self) -> Call:
        said = self.said

        def same(rows: torch.Tensor) -> torch.Tensor:
            assert said is not None and len(said) == len(rows), "the device run called a model the host run did not"
            return said.to(rows.device)

        return Call(same)


def onnx_runtime(path: Path, input_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A served ONNX on ONNX Runtime (CPU), as the cpu variant runs it."""
    session = onnx_session.session(path)

    def run(rows: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {input_name: rows.detach().cpu().float().numpy()})
        return torch.from_numpy(out)

    return run


@dataclass(frozen=True)
class Models:
    """What the server loads from an exported repository (manifests, face and gender ONNX), the detector's
    .pt in PyTorch per precision, and Ultralytics on the same weights."""

    source: Path  # the detector's .pt, the source its manifest names
    reference: YOLO
    detectors: dict[str, torch.nn.Module]  # "fp32", "fp16" (CUDA only) -> fused eval model
    person_classes: list[int]
    classifier: manifest.Classifier
    face: manifest.FaceDetector | None  # None where the classifier does not read faces
    onnx: dict[spec.Step, Callable[[torch.Tensor], torch.Tensor]]  # face detector and classifier

    @classmethod
    def load(cls, repository: Path, device: torch.device) -> Models:
        def folder(step: spec.Step) -> Path:
            return repository / spec.tier(spec.DEFAULT_TIER).model(step) / "1"

        detector = manifest.read(folder(spec.Step.DETECTOR), manifest.Detector)
        source = Path(detector.artifact.source)
        if source.suffix != ".pt" or not source.is_file():
            raise ValueError(f"{source}: the check runs the detector's Ultralytics .pt in PyTorch; export from one")
        fp32 = YOLO(str(source), task="detect").model.fuse(verbose=False).eval().float().to(device)
        detectors = {"fp32": fp32}
        if device.type == "cuda":
            detectors["fp16"] = copy.deepcopy(fp32).half()
        classifier = manifest.read(folder(spec.Step.GENDER), manifest.Classifier)
        reads_faces = classifier.preprocessing.crop == spec.CropPolicy.FACE.value
        face = manifest.read(folder(spec.Step.FACE), manifest.FaceDetector) if reads_faces else None
        onnx = {spec.Step.GENDER: onnx_runtime(folder(spec.Step.GENDER) / "model.onnx", spec.CROPS.name)}
        if face is not None:
            onnx[spec.Step.FACE] = onnx_runtime(folder(spec.Step.FACE) / "model.onnx", spec.FACE_REGIONS.name)
        return cls(
            source, YOLO(str(source), task="detect"), detectors, list(detector.person_class_ids), classifier, face, onnx
        )

    def head(self, precision: str, images: torch.Tensor) -> torch.Tensor:
        """The raw head [B, 4 + C, A] in float32, as the served detector's PREDICTIONS."""
        model = self.detectors[precision]
        with torch.inference_mode():
            out = model(images.to(next(model.parameters()).dtype))
        return (out[0] if isinstance(out, (list, tuple)) else out).float()

    def calls(self) -> dict[spec.Step, Call]:
        """Fresh calls of the face detector and the classifier, on ONNX Runtime."""
        return {step: Call(run) for step, run in self.onnx.items()}

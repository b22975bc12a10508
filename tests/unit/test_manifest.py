"""The typed manifest records: what export writes is what the served models read, and nothing else is."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines import manifest, paths, spec
from pipelines.manifest import Artifact, Classifier, Detector, FaceDetector, Plan, Preprocessing

ARTIFACT = Artifact(
    source="weights/best.pt",
    source_sha256="ab" * 32,
    onnx_sha256="cd" * 32,
    license="AGPL-3.0",
    tier="balanced",
    versions={"python": "3.11.7", "onnx": "1.23.2"},
    created="2026-11-27T12:00:00+00:00",
    exporter_tensor_names={"input": "images", "output": "output0"},
)
DETECTOR = Detector(ARTIFACT, {0: "person", 1: "fallen"}, (0, 1), 640, 17)
CLASSIFIER = Classifier(
    replace(ARTIFACT, plan=Plan("10.13.3", "NVIDIA H100 80GB HBM3", "9.0", "fp16", (1, 256, 256))),
    Preprocessing(32, "RGB", (122.782, 117.001, 104.298), (256.0, 256.0, 256.0), 0.2, "face", ((0.2, 0.2),) * 5),
    ("female", "male"),
    (0, 1),
)


FACE_DETECTOR = FaceDetector(ARTIFACT, 96, 4, "RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("record", [DETECTOR, CLASSIFIER, FACE_DETECTOR], ids=["detector", "classifier", "face"])
def test_round_trip(tmp_path: Path, record: Detector | Classifier | FaceDetector) -> None:
    path = manifest.write(tmp_path, record)
    assert path == tmp_path / manifest.FILENAME and path.read_text().endswith("\n")
    assert manifest.read(tmp_path, type(record)) == record
    body = json.loads(path.read_text())
    assert body["schema_version"] == manifest.SCHEMA_VERSION and body["kind"] == record.KIND, body


def test_missing_says_to_export(tmp_path: Path) -> None:
    with pytest.raises(manifest.ManifestError, match="make export") as error:
        manifest.read(tmp_path / "detector_balanced" / "1", Detector)
    assert manifest.FILENAME in str(error.value), "the error should name the missing file"


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = manifest.write(tmp_path, DETECTOR)
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "schema_version"}  # as version 1 wrote it
    path.write_text(json.dumps(old))
    with pytest.raises(manifest.ManifestError, match=r"schema version 1.*run `make export` again"):
        manifest.read(tmp_path, Detector)


def test_other_kind_is_refused(tmp_path: Path) -> None:
    manifest.write(tmp_path, CLASSIFIER)
    with pytest.raises(manifest.ManifestError, match="'gender_classifier', not a 'detector'"):
        manifest.read(tmp_path, Detector)


def test_missing_key_is_refused(tmp_path: Path) -> None:
    path = manifest.write(tmp_path, DETECTOR)
    body = json.loads(path.read_text())
    del body["person_class_ids"]
    path.write_text(json.dumps(body))
    with pytest.raises(manifest.ManifestError, match="person_class_ids"):
        manifest.read(tmp_path, Detector)


@pytest.mark.parametrize(
    "facts",
    [
        {"channels": "YUV"},
        {"mean": [1, 2]},
        {"scale": [1, 0, 1]},
        {"size": 0},
        {"padding": -0.1},
        {"crop": "torso"},
        {"crop": "face"},
        {"template": [[0.2, 0.2]] * 5},
        {"crop": "face", "template": [[0.2, 0.2]] * 4},
    ],
    ids=[
        "channels",
        "two-means",
        "zero-scale",
        "zero-size",
        "negative-padding",
        "unknown-crop",
        "face-without-template",
        "template-without-face",
        "four-points",
    ],
)
def test_preprocessing_is_checked(facts: dict) -> None:
    good = {"size": 8, "channels": "rgb", "mean": [1, 2, 3], "scale": [4, 5, 6], "padding": 0.2, "crop": "head"}
    assert Preprocessing.from_dict(good) == Preprocessing(8, "RGB", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), 0.2, "head")
    with pytest.raises(ValueError):
        Preprocessing.from_dict(good | facts)


def test_sha256(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 << 20)  # more than one 1 MiB block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert manifest.sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("tier", spec.TIERS, ids=spec.TIER_NAMES)
def test_exported_manifests_read_back(tier: spec.Tier) -> None:
    """What `make export` wrote is a record of this schema, one per tier, naming its own ONNX."""
    for step, kind in ((spec.Step.DETECTOR, Detector), (spec.Step.GENDER, Classifier), (spec.Step.FACE, FaceDetector)):
        directory = paths.REPOSITORY / tier.model(step) / "1"
        record = manifest.read(directory, kind)
        assert record.artifact.tier == tier.name
        assert record.artifact.onnx_sha256 == manifest.sha256(directory / "model.onnx")


@pytest.mark.parametrize("facts", [{"size": 90}, {"size": 2}, {"channels": "YUV"}], ids=["not-stride", "small", "yuv"])
def test_face_detector_is_checked(tmp_path: Path, facts: dict) -> None:
    path = manifest.write(tmp_path, FACE_DETECTOR)
    path.write_text(json.dumps(json.loads(path.read_text()) | facts))
    with pytest.raises(manifest.ManifestError):
        manifest.read(tmp_path, FaceDetector)

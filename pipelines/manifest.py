"""The provenance record beside every served model file: written by `export`, read by the served models.

One `manifest.json` per model version folder, typed here so that export and
server agree on every key: what the model is (its kind), where it came from
(source, hashes, licence, versions), what the server must know to feed and read
it (person classes, the classifier's input geometry, alignment and labels,
the face detector's input and map layout), and for a
TensorRT plan the TensorRT version and GPU it was built for. A manifest with
another schema version is refused with the command that rewrites it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pipelines import spec

FILENAME = "manifest.json"
SCHEMA_VERSION = 3  # 1: untyped dicts; 2: no face detector, classifiers without their crop and alignment


class ManifestError(ValueError):
    """A manifest is missing, of another schema version or of another kind; the message says what to run."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Plan:
    """A TensorRT engine built from the ONNX: it only loads with this TensorRT on this GPU type."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor"
    precision: str  # "fp16" or "fp32"
    profile: tuple[int, int, int]  # min, opt, max batch

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(str(d["tensorrt_version"]), str(d["gpu_name"]), str(d["compute_capability"]),
                   str(d["precision"]), tuple(int(v) for v in d["profile"]))  # fmt: skip


@dataclass(frozen=True)
class Artifact:
    """What every served model records: its source, its files' hashes, the tools that made it."""

    source: str  # weights path or package file the ONNX came from
    source_sha256: str | None  # None for a hub name that was downloaded
    onnx_sha256: str
    license: str
    tier: str
    versions: dict[str, str]  # python, onnx, onnxruntime, ... at export
    created: str  # ISO 8601, UTC
    exporter_tensor_names: dict[str, str]  # the names the exporter gave ("input", "output"), before renaming
    plan: Plan | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        plan = d.get("plan")
        return cls(
            source=str(d["source"]),
            source_sha256=d.get("source_sha256"),
            onnx_sha256=str(d["onnx_sha256"]),
            license=str(d["license"]),
            tier=str(d["tier"]),
            versions={str(k): str(v) for k, v in d["versions"].items()},
            created=str(d["created"]),
            exporter_tensor_names={str(k): str(v) for k, v in d["exporter_tensor_names"].items()},
            plan=Plan.from_dict(plan) if plan else None,
        )


# The five face landmarks, in the face detector's order and the order of an alignment template
# ("left" and "right" as seen in the image).
LANDMARKS = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")
CROP_POLICIES = tuple(p.value for p in spec.CropPolicy)  # what a classifier can be trained on


@dataclass(frozen=True)
class Preprocessing:
    """How a classifier wants its input: a square RGB or BGR chip, `(pixel - mean) / scale` on 0-255 values.

    `crop` says what the chip shows (an aligned face, a head square or the person box). For `face`,
    `template` places the LANDMARKS in the unpadded chip frame ([0, 1] on both axes, y down): the chip
    maps the frame grown by `padding` on every side onto its pixels, chip pixel i at (padding + u) /
    (1 + 2 padding) = i / (size - 1), as dlib's get_face_chip_details and extract_image_chip do.
    """

    size: int  # square side, pixels
    channels: str  # "RGB" or "BGR"
    mean: tuple[float, float, float]  # in the classifier's channel order
    scale: tuple[float, float, float]
    padding: float  # context around the face or head the classifier was trained with (fraction of its side)
    crop: str = "head"  # one of CROP_POLICIES
    template: tuple[tuple[float, float], ...] | None = None  # for `face`: the LANDMARKS in the unpadded frame

    @property
    def rgb(self) -> bool:
        return self.channels == "RGB"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        mean, scale = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["scale"])
        template = d.get("template")
        pre = cls(
            int(d["size"]),
            str(d["channels"]).upper(),
            mean,
            scale,
            float(d.get("padding", 0.0)),
            str(d["crop"]),
            tuple((float(x), float(y)) for x, y in template) if template is not None else None,
        )
        if pre.channels not in ("RGB", "BGR") or len(pre.mean) != 3 or len(pre.scale) != 3:
            raise ValueError("channels must be RGB or BGR, mean and scale three numbers each")
        if pre.size < 2 or min(pre.scale) <= 0 or pre.padding < 0:
            raise ValueError("size must be 2 or more, scale values above 0, padding 0 or more")
        if pre.crop not in CROP_POLICIES:
            raise ValueError(f"crop must be one of {', '.join(CROP_POLICIES)}, got {pre.crop!r}")
        reads_faces = pre.crop == spec.CropPolicy.FACE
        if reads_faces != (pre.template is not None) or (pre.template and len(pre.template) != len(LANDMARKS)):
            raise ValueError(f"a face classifier needs a template of {len(LANDMARKS)} points {LANDMARKS}; others none")
        return pre


@dataclass(frozen=True)
class Detector:
    """The person detector: the YOLO head's class names and which of them are persons."""

    KIND: ClassVar[str] = "detector"
    artifact: Artifact
    names: dict[int, str]
    person_class_ids: tuple[int, ...]
    image_size: int
    opset: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Detector:
        return cls(
            artifact=Artifact.from_dict(d["artifact"]),
            names={int(k): str(v) for k, v in d["names"].items()},
            person_class_ids=tuple(int(v) for v in d["person_class_ids"]),
            image_size=int(d["image_size"]),
            opset=int(d["opset"]),
        )


@dataclass(frozen=True)
class Classifier:
    """The gender classifier: its input geometry, its labels and the GENDER value of each output."""

    KIND: ClassVar[str] = "gender_classifier"
    artifact: Artifact
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    gender_values: tuple[int, ...]  # GENDER value (spec.GENDER_LABELS index) of each output, in output order

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Classifier:
        return cls(
            artifact=Artifact.from_dict(d["artifact"]),
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            labels=tuple(str(v) for v in d["labels"]),
            gender_values=tuple(int(v) for v in d["gender_values"]),
        )


@dataclass(frozen=True)
class FaceDetector:
    """The face detector: its square input, its normalization and how to read its maps.

    The model takes `[N, 3, size, size]` (`(pixel - mean) / scale` on 0-255 values in `channels` order)
    and returns FACE_MAPS `[N, 15, size / stride, size / stride]` in CenterFace's layout: heatmap,
    log box height and width, y and x offset, then y and x of each of the five LANDMARKS relative to the
    box (pipelines.faces decodes it).
    """

    KIND: ClassVar[str] = "face_detector"
    artifact: Artifact
    size: int
    stride: int
    channels: str
    mean: tuple[float, float, float]
    scale: tuple[float, float, float]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaceDetector:
        record = cls(
            artifact=Artifact.from_dict(d["artifact"]),
            size=int(d["size"]),
            stride=int(d["stride"]),
            channels=str(d["channels"]).upper(),
            mean=tuple(float(v) for v in d["mean"]),
            scale=tuple(float(v) for v in d["scale"]),
        )
        if record.size < record.stride or record.size % record.stride or record.channels not in ("RGB", "BGR"):
            raise ValueError("size must be a positive multiple of stride, channels RGB or BGR")
        return record


Record = TypeVar("Record", Detector, Classifier, FaceDetector)


def write(directory: Path, record: Detector | Classifier | FaceDetector) -> Path:
    path = directory / FILENAME
    body = {"schema_version": SCHEMA_VERSION, "kind": record.KIND, **asdict(record)}
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


def read(directory: Path, kind: type[Record]) -> Record:
    """The manifest in `directory`, which must be a `kind` record of this schema version."""
    path = directory / FILENAME
    if not path.is_file():
        raise ManifestError(f"{path} is missing: run `make export` first")
    body = json.loads(path.read_text())
    version = body.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has schema version {version}, this code reads {SCHEMA_VERSION}: run `make export` again"
        )
    if body.get("kind") != kind.KIND:
        raise ManifestError(f"{path} describes a {body.get('kind')!r}, not a {kind.KIND!r}")
    try:
        return kind.from_dict(body)
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{path}: {e!r}; run `make export` again") from e

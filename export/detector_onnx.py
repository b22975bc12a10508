"""Export an Ultralytics detector to ONNX with a dynamic batch and the spec's tensor names."""

from __future__ import annotations

import ast
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from export import onnx_graph
from export.onnx_graph import OPSET
from pipelines import spec

log = logging.getLogger(__name__)


def _from_ultralytics(weights: Path, tmp: Path) -> tuple[onnx.ModelProto, dict[int, str]]:
    from ultralytics import YOLO

    # Ultralytics writes the ONNX beside the weights; keep the source tree clean.
    local = tmp / weights.name
    if weights.exists():
        shutil.copy(weights, local)
    else:
        local = weights  # a hub name such as yolo11n.pt: Ultralytics downloads it
    model = YOLO(str(local))
    if model.task != "detect":
        raise ValueError(f"{weights} is a {model.task} model; a detection model is needed")
    log.info("exporting %s to ONNX (opset %d, dynamic batch, %dpx)", weights, OPSET, spec.IMAGE_SIZE)
    onnx_path = model.export(format="onnx", dynamic=True, imgsz=spec.IMAGE_SIZE, simplify=False, opset=OPSET)
    return onnx.load(str(onnx_path)), {int(k): v for k, v in model.names.items()}


def _from_onnx(weights: Path) -> tuple[onnx.ModelProto, dict[int, str]]:
    """An ONNX exported by Ultralytics elsewhere: its class names are in the metadata."""
    graph = onnx.load(str(weights))
    meta = {p.key: p.value for p in graph.metadata_props}
    if "names" not in meta:
        raise ValueError(f"{weights} has no 'names' metadata; export it with Ultralytics")
    return graph, {int(k): v for k, v in ast.literal_eval(meta["names"]).items()}


@dataclass(frozen=True)
class Exported:
    """What the export learnt about the detector, for its manifest."""

    names: dict[int, str]
    opset: int
    license: str  # as the exporter's metadata states it (Ultralytics writes one)
    exporter_tensor_names: dict[str, str]


def export(weights: Path, out: Path) -> Exported:
    """Write `out` (ONNX) from Ultralytics weights or ONNX; return what the manifest records."""
    if weights.suffix == ".onnx":
        graph, names = _from_onnx(weights)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            graph, names = _from_ultralytics(weights, Path(tmp))
    exporter_names = onnx_graph.name_tensors(graph, spec.IMAGES.name, spec.PREDICTIONS.name)
    onnx_graph.save(graph, out)
    license = next((p.value for p in graph.metadata_props if p.key == "license"), "unknown")
    return Exported(names, OPSET, license, exporter_names)

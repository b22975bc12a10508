"""The small pieces of `export/` that run without a GPU: weights, person classes, tensor renaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from export import onnx_graph, weights
from pipelines import spec

COCO_LIKE = {0: "person", 1: "bicycle", 2: "car", 3: "Person "}


@pytest.mark.parametrize(
    ("names", "choice", "expected"),
    [
        (COCO_LIKE, "auto", [0, 3]),  # matched after strip() and lower()
        ({0: "car", 5: "PERSON"}, "auto", [5]),
        ({2: "fallen", 0: "standing", 1: "sitting"}, "all", [0, 1, 2]),
        (COCO_LIKE, "0", [0]),
        (COCO_LIKE, "3,0", [0, 3]),
        (COCO_LIKE, " 2, 0,2 ,", [0, 2]),  # spaces, duplicates and a trailing comma
    ],
)
def test_person_class_ids(names: dict[int, str], choice: str, expected: list[int]) -> None:
    assert weights.person_class_ids(names, choice) == expected


def test_auto_without_a_person_class_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"no class is named 'person'.*PERSON_CLASSES=all"):
        weights.person_class_ids({0: "Normal", 1: "Fall"}, "auto")


@pytest.mark.parametrize("choice", ["7", "0,7", "-1", "", ","])
def test_unknown_or_empty_ids_name_the_model_classes(choice: str) -> None:
    with pytest.raises(ValueError, match=r"are not among the model's classes \{0: 'person'"):
        weights.person_class_ids(COCO_LIKE, choice)


def test_non_numeric_ids_are_a_value_error() -> None:
    with pytest.raises(ValueError):
        weights.person_class_ids(COCO_LIKE, "person")


def test_resolve_default_is_the_packaged_checkpoint() -> None:
    resolved = weights.resolve(weights.DEFAULT, None)
    assert resolved.path.suffix == ".pt" and resolved.path.is_file(), f"{resolved.path} is not an existing .pt"
    assert resolved.person_classes == "all", f"default person classes {resolved.person_classes!r}"
    assert weights.resolve(weights.DEFAULT, "0").person_classes == "0", "an explicit choice must win"


def test_resolve_other_detectors() -> None:
    assert weights.resolve("yolo11n.pt", None) == weights.Weights(Path("yolo11n.pt"), "auto")
    assert weights.resolve("/x/model.onnx", "1,2") == weights.Weights(Path("/x/model.onnx"), "1,2")


def _tiny_model() -> onnx.ModelProto:
    """images -> Relu -> hidden -> Add(images) -> output0, with output0 also feeding a second output."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3])
    z = helper.make_tensor_value_info("other", TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("Relu", ["images"], ["hidden"]),
        helper.make_node("Add", ["hidden", "images"], ["output0"]),
        helper.make_node("Neg", ["output0"], ["other"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y, z])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_graph.OPSET)])


def test_rename_graph_input_and_output() -> None:
    model = _tiny_model()
    onnx_graph.rename(model, "images", spec.IMAGES.name)
    onnx_graph.rename(model, "output0", spec.PREDICTIONS.name)
    onnx.checker.check_model(model, full_check=True)

    names = {n for node in model.graph.node for n in (*node.input, *node.output)}
    names |= {v.name for v in (*model.graph.input, *model.graph.output)}
    assert not names & {"images", "output0"}, f"old names left: {names & {'images', 'output0'}}"
    assert [i.name for i in model.graph.input] == [spec.IMAGES.name]
    assert [o.name for o in model.graph.output] == [spec.PREDICTIONS.name, "other"]
    assert list(model.graph.node[1].input) == ["hidden", spec.IMAGES.name], "every use of the input is renamed"
    assert list(model.graph.node[2].input) == [spec.PREDICTIONS.name], "uses of the output are renamed too"

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    (y,) = session.run([spec.PREDICTIONS.name], {spec.IMAGES.name: x})
    np.testing.assert_array_equal(y, np.maximum(x, 0) + x)


def test_rename_leaves_other_names_alone() -> None:
    model = _tiny_model()
    before = model.SerializeToString()
    onnx_graph.rename(model, "absent", "X")
    assert model.SerializeToString() == before, "renaming a name that is not there changed the graph"

"""What every exporter does to an ONNX graph: give its tensors the spec's names, then check and save it.

An exporter's own names (`images`, `input.1`, `output0`) never reach a config: they are replaced here
and kept only in the manifest (`exporter_tensor_names`), so a reader can match the two.
"""

from __future__ import annotations

from pathlib import Path

import onnx

OPSET = 17  # what Ultralytics exports the detector and a classification .pt with


def rename(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename a graph input or output everywhere it is referenced."""
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name == old:
            value.name = new


def single_input_output(model: onnx.ModelProto) -> tuple[str, str]:
    """The names of a graph's one input and one output; a ValueError for any other graph."""
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"expected one input and one output, got {inputs} -> {outputs}")
    return inputs[0], outputs[0]


def name_tensors(model: onnx.ModelProto, input_name: str, output_name: str) -> dict[str, str]:
    """Give a one-input, one-output graph the spec's tensor names; the exporter's, for the manifest."""
    old_input, old_output = single_input_output(model)
    rename(model, old_input, input_name)
    rename(model, old_output, output_name)
    return {"input": old_input, "output": old_output}


def save(model: onnx.ModelProto, out: Path) -> None:
    """Check the graph, then write it (its folder made if need be): an invalid graph never reaches a tier."""
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))

"""Turn detector weights into the artifacts Triton serves: `model.onnx` per tier, `model.plan` where TensorRT is."""

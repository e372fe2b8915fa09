"""The ONNX Runtime backend: int8 towers made once per model and machine, run without torch."""

"""ASID in other tools: spandrel (chaiNNer, ComfyUI) and ONNX."""

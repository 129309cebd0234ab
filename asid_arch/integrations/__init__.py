"""ASID in other tools: spandrel (chaiNNer, ComfyUI), ONNX (onnxruntime, OpenCV) and NCNN."""

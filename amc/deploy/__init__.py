"""The model where it runs: ONNX Runtime, OpenVINO, TensorRT and eager PyTorch, their timer, and int8 files."""

"""Export and runtimes: ONNX export verified in onnxruntime."""

"""PyTorch → ONNX export, simplification and verification against the PyTorch reference."""

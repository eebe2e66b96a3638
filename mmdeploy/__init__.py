"""mmdeploy: make trained multimodal checkpoints deployable.

Heavy libraries (torch, onnxruntime, openvino, ...) are imported lazily inside the
functions that need them so that ``mmdeploy --help`` starts fast.
"""

__version__ = "0.1.0"

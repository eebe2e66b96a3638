"""The device side: open a bundle the toolchain wrote and use it, without torch.

    import mmdeploy.runtime
    model = mmdeploy.runtime.load("out/clip")        # backend=None, threads=None
    model.classify(["cat.jpg"], ["cat", "dog"])

Only numpy, PIL, tokenizers and one inference runtime (ONNX Runtime, OpenVINO, LiteRT /
tflite-runtime, TensorRT) are imported -- never torch, transformers or onnx -- so this works in
``pip install mmdeploy`` with no extras.  See :mod:`mmdeploy.runtime.model`.
"""

from mmdeploy.runtime.model import Model, load

__all__ = ["Model", "load"]

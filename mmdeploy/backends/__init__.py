"""Backends: one module per runtime, all implementing :class:`~mmdeploy.backends.base.Backend`.

Verification, accuracy and benchmarking only talk to :class:`~mmdeploy.backends.base.Runner`
objects obtained through :func:`load_runner`, so adding a backend never touches them.
Backend modules are imported lazily: listing targets never imports torch or openvino.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from mmdeploy.errors import InputError

# target name -> "module:Class".  Aliases map user-facing target names to backends.
_REGISTRY: dict[str, str] = {
    "torch": "mmdeploy.backends.torch:TorchBackend",
    "onnxruntime": "mmdeploy.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "mmdeploy.backends.openvino:OpenVINOBackend",
    "tflite": "mmdeploy.backends.tflite:TFLiteBackend",
    "tensorrt": "mmdeploy.backends.tensorrt:TensorRTBackend",
}
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "litert": "tflite",
           "trt": "tensorrt", "jetson": "tensorrt"}

# artifact manifest "format" -> backend that loads it
FORMATS = {
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "tflite": "tflite",
    "tensorrt": "tensorrt",
    "tensorrt-bundle": "tensorrt",
}


def backend_names() -> list[str]:
    return [name for name in _REGISTRY if name != "torch"]


def get_backend(name: str):
    """The backend object for a target name (or alias); InputError listing valid names."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _REGISTRY:
        raise InputError(
            f"unknown target {name!r}",
            "valid targets: " + ", ".join(backend_names()),
        )
    module_name, class_name = _REGISTRY[key].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)()


def load_runner(artifact_dir: str | Path, **options):
    """Load a component artifact (any format) as a Runner, dispatching on its manifest."""
    from mmdeploy.artifact import read_manifest

    manifest = read_manifest(artifact_dir)
    if manifest.kind != "component":
        raise InputError(f"{artifact_dir} is a model bundle, not one component",
                         "pass one of its component directories")
    backend_name = FORMATS.get(manifest.format or "")
    if backend_name is None:
        raise InputError(f"{artifact_dir}: no backend runs format {manifest.format!r}")
    from mmdeploy.backends.base import CheckedRunner, static_runner

    runner = get_backend(backend_name).load(Path(artifact_dir), **options)
    if manifest.format in ("onnx", "openvino"):  # convert --batch N / --sequence L: feeds of any shape
        return static_runner(runner, manifest.inputs, manifest.outputs)
    return CheckedRunner(runner, manifest.inputs, manifest.outputs)

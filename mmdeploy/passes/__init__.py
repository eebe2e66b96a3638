"""Graph passes over ONNX component artifacts, registered by name so a recipe can list them.

Each pass is one module with one class and one typed (pydantic) config; running it writes a new
model file and returns a report that goes into the artifact's manifest as a PassRecord.
Modules load lazily: listing passes imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

import importlib

from mmdeploy.errors import InputError

# pass name -> "module:Class"
PASSES: dict[str, str] = {
    "optimize": "mmdeploy.passes.optimize:OptimizePass",
    "fp16": "mmdeploy.passes.fp16:Fp16Pass",
    "quantize": "mmdeploy.passes.quantize:QuantizePass",
}


def pass_names() -> list[str]:
    return list(PASSES)


def get_pass(name: str):
    """The pass object registered under ``name``; InputError listing valid names."""
    if name not in PASSES:
        raise InputError(f"unknown pass {name!r}", "valid passes: " + ", ".join(PASSES))
    module_name, class_name = PASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()

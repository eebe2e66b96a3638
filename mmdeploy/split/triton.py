"""A Triton Inference Server model repository for the cloud half.

Layout (what ``tritonserver --model-repository DIR/triton`` expects)::

    <name>/config.pbtxt
    <name>/1/model.onnx

The directory name is the model name; ``mmdeploy serve`` uses the same name, so one client talks
to either server.  ``max_batch_size: 0`` keeps the batch dimension explicit in ``dims`` (-1 where
dynamic), exactly the ONNX signature.
"""

from __future__ import annotations

import re
from pathlib import Path

# numpy dtype name -> (Triton config type, KServe v2 / Open Inference Protocol datatype)
DTYPES = {
    "float32": ("TYPE_FP32", "FP32"), "float16": ("TYPE_FP16", "FP16"), "float64": ("TYPE_FP64", "FP64"),
    "int64": ("TYPE_INT64", "INT64"), "int32": ("TYPE_INT32", "INT32"), "int16": ("TYPE_INT16", "INT16"),
    "int8": ("TYPE_INT8", "INT8"), "uint8": ("TYPE_UINT8", "UINT8"), "bool": ("TYPE_BOOL", "BOOL"),
}
V2_TO_NUMPY = {v2: np_name for np_name, (_, v2) in DTYPES.items()}


def model_name(text: str) -> str:
    """A name usable as a directory, a URL segment and a Triton model name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    return name or "model"


def _dims(shape: list) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def _tensor_block(spec: dict) -> str:
    dims = _dims(spec["shape"])
    lines = [f'    name: "{spec["name"]}"', f"    data_type: {DTYPES[spec['dtype']][0]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:  # a scalar: Triton wants a non-empty dims and a reshape to []
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_pbtxt(name: str, inputs: list[dict], outputs: list[dict], instances: int = 1) -> str:
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        "max_batch_size: 0",
        "input [\n" + ",\n".join(_tensor_block(s) for s in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(s) for s in outputs) + "\n]",
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
        "",
    ])


def write_repository(root: str | Path, name: str, onnx_file: str | Path, inputs: list[dict],
                     outputs: list[dict]) -> Path:
    """Write ``root/<name>/config.pbtxt`` and ``root/<name>/1/model.onnx``; return the model dir."""
    from mmdeploy.onnx_files import copy_model

    model_dir = Path(root) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    copy_model(onnx_file, model_dir / "1" / "model.onnx")  # with its external-data files
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, inputs, outputs))
    return model_dir

"""Export one component to ONNX and simplify it with onnxsim."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.artifact import TensorSpec
from mmdeploy.errors import CheckpointError, UnsupportedError

log = logging.getLogger("mmdeploy")
DEFAULT_OPSET = 17


def export_component(component, path: Path, opset: int = DEFAULT_OPSET, batch: int | None = None,
                     sequence: int | None = None) -> None:
    """torch.onnx.export (TorchScript exporter) with the component's names and dynamic axes.

    ``batch``/``sequence`` fix those axes to a static size instead (e.g. for runtimes that need
    static shapes); None keeps them dynamic.
    """
    import torch

    feeds = component.make_inputs(batch or 2, 0)
    if sequence:
        feeds = {k: _fit_sequence(v, sequence) if v.ndim == 2 and v.dtype == np.int64 else v
                 for k, v in feeds.items()}
    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in component.input_names)
    dynamic_axes = {}
    for name, axes in component.dynamic_axes.items():
        keep = {i: n for i, n in axes.items()
                if not (n == "batch" and batch) and not (n == "sequence" and sequence)}
        if keep:
            dynamic_axes[name] = keep
    try:
        with warnings.catch_warnings(), torch.no_grad(), component.export_context():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                component.module, args, str(path), input_names=component.input_names,
                output_names=component.output_names, dynamic_axes=dynamic_axes or None,
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - exporter errors come in many types
        from mmdeploy.artifact import place_error

        if place_error(exc, path) is not None:  # a full or read-only disk: not the opset's fault
            raise place_error(exc, path) from None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UnsupportedError(f"export of component {component.name!r} to ONNX opset {opset} failed: "
                               f"{message[:300]}", "try another --opset, or rerun with --debug") from exc


def _fit_sequence(array: np.ndarray, length: int) -> np.ndarray:
    if array.shape[1] >= length:
        return array[:, :length]
    pad = np.zeros((array.shape[0], length - array.shape[1]), dtype=array.dtype)
    return np.concatenate([array, pad], axis=1)


# onnxsim passes that would hide the transformer form ONNX Runtime's fusions match (the optimize
# pass, mmdeploy.models.attention): MatMul+Add -> Reshape/Gemm/Reshape (batched) loses the bias Add
# and the node names, a zero bias (random-init checkpoints) is dropped as a no-op Add, q/k/v merged.
# Other runtimes fuse MatMul+Add themselves.
KEEP_TRANSFORMER_FORM = ("fuse_matmul_add_bias_into_gemm", "fuse_matmul_add_bias_into_gemm_batched",
                         "fuse_qkv", "eliminate_nop_with_unit")


def simplify(path: Path) -> dict[str, Any]:
    """Run onnxsim in place; on failure keep the unsimplified graph and say why.

    onnxsim works on one in-memory protobuf: a model past 2 GB (external data) is left as exported.
    """
    import onnx

    from mmdeploy import onnx_files

    if onnx_files.has_external_data(path):
        size = onnx_files.model_bytes(path)
        nodes = len(onnx_files.load_graph(path).graph.node)
        if size > onnx_files.INLINE_LIMIT:
            reason = f"{size / 1e9:.1f} GB of weights: past onnxsim's 2 GB protobuf limit"
            log.warning("not simplified (%s); the exported graph is kept", reason)
            return {"applied": False, "skipped": reason, "nodes_before": nodes, "nodes_after": nodes}
    model = onnx.load(str(path))
    external = onnx_files.has_external_data(path)
    before = len(model.graph.node)
    try:
        from onnxsim import simplify as onnxsim_simplify

        simplified, ok = onnxsim_simplify(model, check_n=0, skipped_optimizers=list(KEEP_TRANSFORMER_FORM))
        if not ok:
            raise RuntimeError("onnxsim's check failed")
        if [i.name for i in simplified.graph.input] != [i.name for i in model.graph.input]:
            raise RuntimeError("onnxsim changed the graph inputs")
    except Exception as exc:  # noqa: BLE001 - any simplifier failure falls back
        reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        log.warning("onnxsim failed (%s); keeping the unsimplified graph", reason)
        return {"applied": False, "error": reason, "nodes_before": before, "nodes_after": before}
    old = onnx_files.data_files(path)
    onnx_files.save(simplified, path, external=external or None)
    for file in old:  # a data file the simplified graph no longer uses
        if file not in onnx_files.data_files(path) and file.is_file():
            file.unlink()
    return {"applied": True, "nodes_before": before, "nodes_after": len(simplified.graph.node)}


def load_onnx(path: Path):
    """The graph (weights left in their external-data files) after onnx.checker, as a
    CheckpointError for junk files."""
    from mmdeploy import onnx_files

    try:
        model = onnx_files.load_graph(path)
    except Exception as exc:  # noqa: BLE001 - DecodeError, ...
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        hint = "re-export it; the file may be truncated or not ONNX"
        if Path(path).is_file() and Path(path).stat().st_size > onnx_files.PROTOBUF_LIMIT:
            hint = ("a model past 2 GB must keep its weights in external data: save it with "
                    "onnx.save_model(..., save_as_external_data=True)")
        raise CheckpointError(f"{path} is not a valid ONNX model ({first})", hint) from None
    missing = [f.name for f in onnx_files.data_files(path, model) if not f.is_file()]
    if missing:
        raise CheckpointError(f"{path}: external data file {missing[0]} is missing",
                              "copy the model together with the data files beside it")
    try:
        onnx_files.check(path)
    except Exception as exc:  # noqa: BLE001 - ValidationError, ...
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise CheckpointError(f"{path} is not a valid ONNX model ({first})",
                              "re-export it; the file may be truncated or not ONNX") from None
    if not model.graph.node:
        raise CheckpointError(f"{path} is an ONNX model with an empty graph", "re-export it")
    return model


def _spec(value_info) -> TensorSpec:
    import onnx

    tensor = value_info.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name if tensor.elem_type else "unknown"
    shape: list[int | str] = []
    for dim in tensor.shape.dim:
        shape.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
    return TensorSpec(name=value_info.name, dtype=dtype, shape=shape)


def io_signature(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [_spec(v) for v in model.graph.output]


def synthesize_feeds(inputs: list[TensorSpec], batch: int, seed: int, symbolic: int = 8) -> dict[str, np.ndarray]:
    """Random feeds for an I/O signature: dim named like 'batch' → batch, other symbols → symbolic."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else symbolic)
                 for i, d in enumerate(spec.shape)]
        dtype = np.dtype(spec.dtype)
        if dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


WEIGHT_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def store_weights(path: Path, dtype: str, min_elements: int = 16) -> dict[str, Any]:
    """Store the graph's float32 weights as ``fp16`` or ``bf16`` initializers, each followed by a
    Cast to float32: the file keeps the precision the checkpoint was saved in (``convert
    --dtype``), computation stays float32 (ONNX Runtime has no bf16 kernels on CPU).  Weights
    upcast from a checkpoint saved in that dtype round-trip exactly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mmdeploy import onnx_files

    if dtype not in WEIGHT_DTYPES:
        raise UnsupportedError(f"--dtype {dtype!r} is not supported", "use fp32, fp16 or bf16")
    path = Path(path)
    model = onnx_files.load_graph(path)  # weights read tensor by tensor: no second fp32 copy
    old_files = onnx_files.data_files(path, model)
    graph = model.graph
    casts, converted, before, after = [], 0, 0, 0
    for init in graph.initializer:
        _load_inline(init, path.parent)
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims or [1])) < min_elements:
            continue
        array = numpy_helper.to_array(init).astype(np.float32)
        name = init.name
        if dtype == "fp16":
            low = numpy_helper.from_array(array.astype(np.float16), name + "__fp16")
        else:  # bfloat16: the upper 16 bits, rounded to nearest even
            bits = array.view(np.uint32)
            rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
            low = onnx.TensorProto(name=name + "__bf16", data_type=TensorProto.BFLOAT16,
                                   dims=list(array.shape), raw_data=rounded.tobytes())
        before += array.nbytes
        after += array.nbytes // 2
        del array
        init.CopyFrom(low)
        casts.append(helper.make_node("Cast", [low.name], [name], to=TensorProto.FLOAT, name=f"{name}__to_fp32"))
        converted += 1
    for tensor in onnx_files._tensors(model):  # e.g. Constant nodes' tensors
        _load_inline(tensor, path.parent)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    for file in old_files:
        file.unlink()
    onnx_files.save(model, path, external=bool(old_files) or None)  # the form it had (or > 2 GB)
    return {"weights_dtype": WEIGHT_DTYPES[dtype], "compute_dtype": "float32", "initializers": converted,
            "bytes_before": before, "bytes_after": after}


def _load_inline(tensor, base_dir: Path) -> None:
    """Read one tensor's external data into it (as onnx.load does for all of them at once)."""
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    if uses_external_data(tensor):
        load_external_data_for_tensor(tensor, str(base_dir))
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]

"""Roofline ESTIMATE of latency from an ONNX graph and a target profile's peak figures.

FLOPs are counted for MatMul / Gemm / Conv (2 x multiply-adds) from shapes given by ONNX shape
inference with the batch (and other symbolic dims) fixed; bytes are the weights plus the
graph's inputs and outputs, read once.  latency = max(FLOPs / peak, bytes / bandwidth) plus the
profile's ``launch_overhead_ms`` (what a runtime spends per inference whatever the model: kernel
launches and the stream sync of a TensorRT enqueue, an interpreter's Invoke), so a tiny model
is not estimated at a few microseconds on a GPU.
This is a lower bound for an ideal runtime, never a measurement: every record carries
``"estimate": true`` and every printed form says ESTIMATE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError

LABEL = "ESTIMATE"


def _fix_dims(model, batch: int, seq: int) -> None:
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        for i, dim in enumerate(dims):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.dim_value = batch if i == 0 else seq


def count(onnx_path: str | Path, batch: int = 1, seq: int = 16) -> dict:
    """{"flops", "weight_bytes", "io_bytes", "ops": {op_type: flops}} of one ONNX model."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path), load_external_data=False)  # shapes only: weights stay on disk
    _fix_dims(model, batch, seq)
    try:  # ORT's symbolic inference also knows its contrib ops (quantized/optimized graphs)
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - fall back to the standard inference
        inferred = None
    if inferred is None:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    itemsize: dict[str, int] = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        t = v.type.tensor_type
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if t.elem_type:
            itemsize[v.name] = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    weight_bytes = 0
    for init in g.initializer:
        dims = list(init.dims)
        shapes[init.name] = dims
        weight_bytes += int(np.prod(dims)) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    ops: dict[str, float] = {}
    unknown = 0
    for node in g.node:
        flops = None
        if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
            a_name = node.input[0]
            out = shapes.get(node.output[0])
            a = shapes.get(a_name)
            if out and a and all(out) and all(a):
                k = a[-2] if node.op_type == "Gemm" and _attr(node, "transA", 0) else a[-1]
                flops = 2.0 * float(np.prod(out)) * k
        elif node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w = shapes.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
            out = shapes.get(node.output[0])
            if out and w and all(out) and all(w):
                flops = 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
        else:
            continue
        if flops is None:
            unknown += 1
            continue
        ops[node.op_type] = ops.get(node.op_type, 0.0) + flops
    io_bytes = sum(int(np.prod([max(d, 1) for d in shapes.get(v.name, [])])) * itemsize.get(v.name, 4)
                   for v in list(g.input) + list(g.output) if v.name not in {i.name for i in g.initializer})
    return {"flops": float(sum(ops.values())), "weight_bytes": weight_bytes, "io_bytes": io_bytes,
            "ops": ops, "uncounted_nodes": unknown}


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def estimate_item(comp_dir: Path, manifest, profile, batch: int = 1) -> dict:
    """A result record shaped like a measurement, flagged ``estimate: true``."""
    if manifest.format != "onnx":
        raise InputError(f"{comp_dir}: --estimate counts FLOPs of ONNX artifacts, not {manifest.format}",
                         "pass the ONNX bundle written by `mmdeploy convert`/`quantize`")
    if not profile.peak_gflops or not profile.memory_bandwidth_gbs:
        from mmdeploy.targets import config_hint

        raise InputError(f"target {profile.name} has no peak_gflops / memory_bandwidth_gbs for --estimate",
                         f"add them to {config_hint(profile)}")
    model_file = Path(comp_dir) / manifest.metadata.get("model_file", "model.onnx")
    runtime = profile.backend or "onnxruntime"
    refuse_unrunnable(model_file, runtime, profile.name, comp_dir)
    seq = int(manifest.metadata.get("seq_len", 16))
    c = count(model_file, batch=batch, seq=seq)
    int_ops = sum(v for k, v in c["ops"].items() if "Integer" in k or k.startswith("QLinear"))
    int_peak = profile.peak_int8_gops or profile.peak_gflops
    compute_ms = ((c["flops"] - int_ops) / (profile.peak_gflops * 1e9) + int_ops / (int_peak * 1e9)) * 1e3
    memory_ms = (c["weight_bytes"] + c["io_bytes"]) / (profile.memory_bandwidth_gbs * 1e9) * 1e3
    overhead = float(profile.launch_overhead_ms or 0.0)
    latency = max(compute_ms, memory_ms) + overhead
    return {
        "estimate": True, "label": LABEL, "batch": batch,
        "gflops": c["flops"] / 1e9, "weight_mb": c["weight_bytes"] / 1e6, "io_mb": c["io_bytes"] / 1e6,
        "compute_ms": compute_ms, "memory_ms": memory_ms, "launch_overhead_ms": overhead,
        "board": profile.name, "runtime": runtime,
        "estimate_note": f"{profile.name}: assumes {runtime} runs the graph as it is",
        "bound": "compute" if compute_ms >= memory_ms else "memory",
        "p50_ms": latency, "throughput_per_s": batch / (latency / 1e3) if latency > 0 else None,
        "int8_gops": int_ops / 1e9, "peak_gflops": profile.peak_gflops, "peak_int8_gops": int_peak,
        "memory_bandwidth_gbs": profile.memory_bandwidth_gbs,
        "ops_gflops": {k: v / 1e9 for k, v in c["ops"].items()}, "uncounted_nodes": c["uncounted_nodes"],
    }


# ONNX Runtime's own int8 ops (dynamic quantization, its fused contrib ops): no other runtime has them
ORT_ONLY = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QAttention", "QGemm", "DynamicQuantizeMatMul",
            "QLinearMatMul", "QLinearConv", "QLinearAdd", "QLinearMul", "MatMulIntegerToFloat"}


def refuse_unrunnable(model_file: Path, runtime: str, board: str, comp_dir) -> None:
    """One line when the runtime the estimate assumes cannot run the graph (an ONNX Runtime-only
    int8 graph estimated for a TensorRT board would be a number for a model that never runs)."""
    if runtime == "onnxruntime":
        return
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    ops = sorted({n.op_type for n in graph.node if n.op_type in ORT_ONLY or n.domain not in ("", "ai.onnx")})
    if runtime == "tensorrt":
        from mmdeploy.backends.tensorrt import supported_ops

        table = supported_ops()["operators"]
        ops = sorted(set(ops) | {n.op_type for n in graph.node if n.domain in ("", "ai.onnx")
                                 and not (table.get(n.op_type) or {}).get("supported")})
    if ops:
        more = f" and {len(ops) - 3} more" if len(ops) > 3 else ""
        why = " (ONNX Runtime-only int8 ops)" if set(ops) & ORT_ONLY else ""
        raise InputError(f"{comp_dir}: the {board} estimate assumes {runtime}, which cannot run "
                         f"{', '.join(ops[:3])}{more}{why}",
                         f"estimate the fp32 bundle, or one made for {runtime} with "
                         "`mmdeploy quantize BUNDLE --int8 --method ort-static -o DIR` (Q/DQ)")


def estimate_boards(items, settings, profile, extra_dirs=None) -> dict:
    """``--estimate`` on a generic target (``jetson``, ``rpi``): one labelled row per board."""
    from mmdeploy.bench import harness
    from mmdeploy.targets import board_profiles

    results = []
    for board in board_profiles(profile, extra_dirs):
        for item in items:
            record = {"artifact": item.artifact, "path": str(item.path), "model": item.model,
                      "component": item.component, "format": item.manifest.format,
                      "precision": board.precision, "target": board.name}
            record.update(estimate_item(item.path, item.manifest, board, settings.batch))
            results.append(record)
    return harness.document(results, settings, profile, estimate=True, machine={})

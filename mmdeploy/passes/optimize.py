"""``optimize``: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, QuickGelu...).

Fused nodes are ONNX Runtime contrib ops (domain ``com.microsoft``): the result runs on ONNX
Runtime only, so this pass is for the ``onnxruntime`` target, never before OpenVINO/TensorRT.

ORT's fusion matches one attention formulation; adapters export attention in that form
(:mod:`mmdeploy.models.attention`), the simplifier keeps it (``export.onnx.KEEP_TRANSFORMER_FORM``),
and two graph-level details its CLIP matcher is strict about are prepared here
(:func:`prepare_for_fusion`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from mmdeploy.passes.base import Pass, PassConfig, PassContext, PassResult, op_counts, op_diff

# model family -> onnxruntime.transformers.optimizer model_type
FAMILY_MODEL_TYPES = {"clip": "clip", "siglip": "clip", "blip": "vit", "clap": "bert", "hf-encoder": "bert"}
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
             "QuickGelu", "FastGelu", "Gelu", "BiasGelu")


# ORT's CLIP attention fusion takes an additive mask only when the Add's tensor is literally
# named "attention_mask" (fusion_attention_clip.py); the name it wears while the fusion runs
_ORT_MASK_NAME = "attention_mask"
_INPUT_STANDIN = "mmdeploy::attention_mask_input"


def _rename(model, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere they appear in the main graph (node I/O, graph I/O, value_info)."""
    if not mapping:
        return
    graph = model.graph
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = mapping.get(value.name, value.name)


def _additive_masks(model) -> set[str]:
    """Computed (non-constant) tensors added to attention scores just before Softmax:
    ``Softmax(Add(Mul(MatMul(q, k), scale), mask))``, the export form of a masked attention."""
    producers = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name for i in model.graph.initializer}
    masks = set()
    for node in model.graph.node:
        add = producers.get(node.input[0]) if node.op_type == "Softmax" else None
        if add is None or add.op_type != "Add" or len(add.input) != 2:
            continue
        scores = producers.get(add.input[0])
        if scores is not None and scores.op_type == "Mul" and add.input[1] not in constants:
            masks.add(add.input[1])
    return masks


def _is_causal_padding_mask(model, mask: str, padding_input: str) -> bool:
    """Whether the additive ``mask`` (batch, 1, S, S) computes exactly "causal AND key not padded"
    from the 0/1 graph input ``padding_input`` (batch, S): probed with ONNX Runtime on two rows
    (one padded), over the rows of real (unpadded) queries, the only ones a causal tower's pooled
    output reads."""
    import copy

    import numpy as np
    import onnx
    import onnxruntime as ort

    probe = copy.deepcopy(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(mask, onnx.TensorProto.FLOAT, None))
    feeds, seq = {}, None
    for value in probe.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name == padding_input and len(dims) == 2:
            seq = dims[1].dim_value or 8  # a dynamic sequence axis: probed at 8
    if seq is None or seq < 2:
        return False
    pad = np.ones((2, seq), dtype=np.int64)
    pad[0, seq // 2:] = 0
    for value in probe.graph.input:
        dims = [d.dim_value or (2 if i == 0 else seq) for i, d in enumerate(value.type.tensor_type.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = pad.astype(dtype) if value.name == padding_input else np.zeros(dims, dtype)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run([mask], feeds)[0]
    except Exception:  # noqa: BLE001 - a probe that cannot run means: do not rewrite
        return False
    if got.shape != (2, 1, seq, seq):
        return False
    allowed = np.tril(np.ones((seq, seq), dtype=bool))[None] & pad.astype(bool)[:, None, :]
    rows = pad.astype(bool)  # real queries
    blocked = got[:, 0] < -1e4
    return bool(np.all((blocked == ~allowed)[rows]) and np.all(np.abs(got[:, 0][allowed & rows[:, :, None]]) < 1e-6))


def prepare_for_fusion(model) -> dict[str, str]:
    """Put ``model`` (in place) in the form ONNX Runtime's CLIP fusion matches; returns the renames
    to undo on the fused model.

    - ``Constant`` nodes become initializers: onnxsim folds the position-embedding lookup into a
      Constant node, which ORT's SkipLayerNormalization fusion does not see as constant and fuses
      the embedding Add with ``pre_layrnorm``; the first layer's attention then no longer matches.
    - a causal text tower's one additive (causal + padding) mask is named ``attention_mask`` while
      the fusion runs (the int64 graph input of that name gets a stand-in name), so the fusion
      matches it; :func:`mask_as_index` then states it the way ORT's kernels (and QAttention) take it.
    """
    from onnx import numpy_helper

    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if value is None or len(node.output) != 1:
            continue
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value.t), node.output[0]))
        graph.node.remove(node)
    masks = _additive_masks(model)
    if len(masks) != 1 or _ORT_MASK_NAME in masks or \
            not _is_causal_padding_mask(model, next(iter(masks)), _ORT_MASK_NAME):
        return {}  # no mask (vision), or one whose meaning is not known: its attention stays unfused
    (mask,) = masks
    _rename(model, {_ORT_MASK_NAME: _INPUT_STANDIN, mask: _ORT_MASK_NAME})
    return {_ORT_MASK_NAME: mask, _INPUT_STANDIN: _ORT_MASK_NAME}


def mask_as_index(model, mask: str) -> int:
    """Fused Attention nodes whose attention bias is ``mask`` (checked causal + padding of the graph
    input ``attention_mask``) take that input as a 2-D ``mask_index`` with ``unidirectional=1``
    instead: the same masking for every real token, and the form QAttention keeps (ORT's dynamic
    quantizer drops an Attention's attention-bias input, silently unmasking it). Returns the count."""
    import onnx

    nodes = [n for n in model.graph.node if n.op_type == "Attention" and len(n.input) > 5 and n.input[5] == mask]
    if not nodes:
        return 0
    index = "mmdeploy::attention_mask_int32"
    model.graph.node.insert(0, onnx.helper.make_node("Cast", [_ORT_MASK_NAME], [index], to=onnx.TensorProto.INT32,
                                                     name="mmdeploy_attention_mask_cast"))
    for node in nodes:
        inputs = list(node.input[:3]) + [index]
        del node.input[:]
        node.input.extend(inputs)
        node.attribute.append(onnx.helper.make_attribute("unidirectional", 1))
    return len(nodes)


class OptimizeConfig(PassConfig):
    model_type: str = "auto"  # auto (from the family), clip, vit, bert, ...
    num_heads: int = 0  # 0: detected from the graph
    hidden_size: int = 0
    opt_level: Literal[0, 1, 2, 99] = 0  # 0: python fusions only (portable across ORT builds)
    attention: bool = True  # fuse Attention (int8: QAttention); False keeps LayerNorm/GELU fusions only


class OptimizePass(Pass):
    name = "optimize"
    Config = OptimizeConfig

    def run(self, model_path: Path, output_dir: Path, config: OptimizeConfig,
            context: PassContext) -> PassResult:
        import logging

        import onnx
        from onnxruntime.transformers.optimizer import optimize_model

        model_type = config.model_type
        if model_type == "auto":
            model_type = FAMILY_MODEL_TYPES.get(context.family or "", "clip")  # pre-LN default
        before = op_counts(onnx.load(str(model_path), load_external_data=False))
        logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
        from onnxruntime.transformers.fusion_options import FusionOptions

        fusion = FusionOptions(model_type)
        fusion.enable_attention = config.attention
        model = onnx.load(str(model_path))
        undo = prepare_for_fusion(model) if model_type == "clip" else {}
        optimized = optimize_model(model, model_type=model_type, num_heads=config.num_heads,
                                   hidden_size=config.hidden_size, opt_level=config.opt_level,
                                   optimization_options=fusion)
        _rename(optimized.model, undo)
        if undo and mask_as_index(optimized.model, undo[_ORT_MASK_NAME]):
            optimized.prune_graph(allow_remove_graph_inputs=False)
        out = Path(output_dir) / "model.onnx"
        # save_model_to_file adds the com.microsoft opset import the fused nodes need
        from mmdeploy.onnx_files import INLINE_LIMIT, has_external_data

        external = has_external_data(model_path) or optimized.model.ByteSize() > INLINE_LIMIT
        optimized.save_model_to_file(str(out), use_external_data_format=external)
        after = op_counts(optimized.model)
        report = {
            "model_type": model_type,
            "fused": {op: after[op] for op in FUSED_OPS if after.get(op)},
            "changed": op_diff(before, after),
            "nodes_before": sum(before.values()),
            "nodes_after": sum(after.values()),
            "runtime": "onnxruntime only (com.microsoft contrib ops)",
        }
        return PassResult("model.onnx", "onnx", "fp32", report)

"""mmdeploy.passes: registry, the export-time attention rewrite, optimize, fp16, quantize groups."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from builders import IMAGE, build_clip, quantize_bundle  # noqa: E402

from mmdeploy.errors import InputError  # noqa: E402
from mmdeploy.passes import get_pass, pass_names  # noqa: E402
from mmdeploy.passes.base import PassContext  # noqa: E402
from mmdeploy.models.attention import fusable_attention  # noqa: E402
from mmdeploy.passes.quantize import node_group, quantizable_groups  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return quantize_bundle(tmp_path_factory.mktemp("passes") / "bundle")


def test_registry():
    assert {"optimize", "fp16", "quantize"} <= set(pass_names())
    assert get_pass("quantize").name == "quantize"
    with pytest.raises(InputError, match="unknown pass"):
        get_pass("nope")
    with pytest.raises(Exception):
        get_pass("quantize").config(method="magic")


def test_fusable_attention_same_math_and_restored():
    import torch

    model = build_clip(0)
    x = torch.randn(2, 3, IMAGE, IMAGE)
    ids = torch.randint(2, 12, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[:, 10:] = 0
    with torch.no_grad():
        img, txt = model.get_image_features(pixel_values=x).pooler_output, \
            model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        with fusable_attention(model) as count:
            assert count == 4  # 2 vision + 2 text layers
            img2 = model.get_image_features(pixel_values=x).pooler_output
            txt2 = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    np.testing.assert_allclose(img2.numpy(), img.numpy(), atol=1e-5)
    np.testing.assert_allclose(txt2.numpy(), txt.numpy(), atol=1e-5)
    assert not any("forward" in vars(m) for m in model.modules())  # instance patches removed


def test_optimize_fuses_attention(bundle, tmp_path):
    p = get_pass("optimize")
    result = p.run(bundle / "vision" / "model.onnx", tmp_path, p.config(), PassContext(family="clip"))
    assert result.report["fused"]["Attention"] == 2
    assert result.report["nodes_after"] < result.report["nodes_before"]
    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
    from mmdeploy.artifact import load_reference

    runner = OnnxRuntimeRunner(tmp_path / result.model_file)
    for feeds, ref in load_reference(bundle / "vision"):
        np.testing.assert_allclose(runner.run(feeds)["image_embeds"], ref["image_embeds"], atol=1e-4)
    record = p.record(p.config(), result)
    assert record.name == "optimize" and record.params["model_type"] == "auto"


def _padded_text_feeds(session, batch: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    seq = next(i for i in session.get_inputs() if i.name == "input_ids").shape[1]
    seq = seq if isinstance(seq, int) else 12
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[0, seq // 2:] = 0
    mask[1, 3:] = 0
    return {"input_ids": rng.integers(2, 12, size=(batch, seq)).astype(np.int64), "attention_mask": mask}


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_optimize_fuses_attention_of_converted_towers(clip_bundle, tmp_path, tower):
    """On a real `convert` output (onnxsim'd, random-init zero biases): every layer's attention
    fuses, the text tower's causal + padding mask included, with the fp32 graph's outputs."""
    import onnx
    import onnxruntime as ort

    p = get_pass("optimize")
    model = clip_bundle / tower / "model.onnx"
    result = p.run(model, tmp_path, p.config(), PassContext(family="clip"))
    assert result.report["fused"].get("Attention") == 2  # the tiny CLIP has 2 layers per tower
    fused = onnx.load(str(tmp_path / result.model_file))
    attention = [n for n in fused.graph.node if n.op_type == "Attention"]
    if tower == "text":  # the mask as ORT's kernels (and QAttention) take it: 2-D index + causal
        assert all(len(n.input) == 4 and n.input[3] for n in attention)
        assert all(any(a.name == "unidirectional" and a.i == 1 for a in n.attribute) for n in attention)
    assert [i.name for i in fused.graph.input] == [i.name for i in onnx.load(str(model)).graph.input]
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(tmp_path / result.model_file), providers=["CPUExecutionProvider"])
    if tower == "vision":
        feeds = {"pixel_values": np.random.default_rng(0).standard_normal((3, 3, IMAGE, IMAGE)).astype(np.float32)}
    else:
        feeds = _padded_text_feeds(ref)
    for a, b in zip(ref.run(None, feeds), got.run(None, feeds)):
        np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
def test_only_a_causal_padding_mask_is_fused(causal):
    """A mask becomes the fused Attention's (causal) mask only when probed to be "causal AND key
    not padded"; a padding-only (bidirectional) mask is left as it was (its attention unfused)."""
    import onnx
    from onnx import TensorProto, helper

    from mmdeploy.passes.optimize import _additive_masks, prepare_for_fusion

    def const(name, value, dtype=np.float32):
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.array(value, dtype)))

    future = np.triu(np.ones((6, 6), bool), 1)[None, None] if causal else np.zeros((1, 1, 6, 6), bool)
    nodes = [  # scores (B,1,S,S) + Where(key padded OR future key, -1e9, 0), a (B,1,S,S) additive mask
        const("axes", [1, 2], np.int64), const("zero", 0, np.int64), const("neg", -1e9), const("nil", 0.0),
        const("future", future, bool),
        helper.make_node("Unsqueeze", ["attention_mask", "axes"], ["m4"]),
        helper.make_node("Equal", ["m4", "zero"], ["pad"]),
        helper.make_node("Or", ["pad", "future"], ["blocked"]),
        helper.make_node("Where", ["blocked", "neg", "nil"], ["bias"]),
        helper.make_node("MatMul", ["q", "k"], ["qk"]), const("scale", 0.5),
        helper.make_node("Mul", ["qk", "scale"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", 6]),
        helper.make_tensor_value_info("q", TensorProto.FLOAT, ["b", 1, 6, 4]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT, ["b", 1, 4, 6])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert _additive_masks(model) == {"bias"}
    undo = prepare_for_fusion(model)
    assert not [n for n in model.graph.node if n.op_type == "Constant"]  # became initializers
    if causal:  # renamed while ORT's fusion runs; the returned map undoes it
        assert undo == {"attention_mask": "bias", "mmdeploy::attention_mask_input": "attention_mask"}
        assert _additive_masks(model) == {"attention_mask"}
    else:
        assert undo == {} and model.graph.input[0].name == "attention_mask"


def test_fp16_pass(bundle, tmp_path):
    import onnx

    p = get_pass("fp16")
    result = p.run(bundle / "vision" / "model.onnx", tmp_path, p.config(), PassContext())
    assert result.precision == "fp16" and result.report["bytes_after"] < result.report["bytes_before"]
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept


def test_groups_by_block(bundle):
    assert node_group("/m/vision_model/encoder/layers.3/self_attn/q_proj/MatMul") == \
        "m/vision_model/encoder/layers.3/self_attn"
    assert node_group("/m/vision_model/embeddings/patch_embedding/Conv") == "m/vision_model/embeddings/patch_embedding"
    # BERT-style: the feed-forward halves are one block; the attention's output projection is not in it
    assert node_group("/model/encoder/layer.2/intermediate/dense/MatMul") == "model/encoder/layer.2/ffn"
    assert node_group("/model/encoder/layer.2/output/dense/MatMul") == "model/encoder/layer.2/ffn"
    assert node_group("/model/encoder/layer.2/attention/output/dense/MatMul") == "model/encoder/layer.2/attention"
    groups = quantizable_groups(bundle / "vision" / "model.onnx")
    names = list(groups)
    assert any(n.endswith("layers.0/self_attn") for n in names) and any(n.endswith("layers.1/mlp") for n in names)
    assert sum(len(v) for v in groups.values()) >= 2 * 6 + 1  # q,k,v,out,fc1,fc2 per layer + projection


def test_groups_of_a_converted_bundle(clip_bundle):
    """After onnxsim the projections keep their module names (no Reshape/Gemm/Reshape rewrite), so
    the accuracy guard's blocks are the model's: attention and MLP of every layer."""
    groups = quantizable_groups(clip_bundle / "vision" / "model.onnx")
    for layer in (0, 1):
        assert any(k.endswith(f"layers.{layer}/self_attn") for k in groups)
        assert len(next(v for k, v in groups.items() if k.endswith(f"layers.{layer}/mlp"))) == 2  # fc1, fc2
    assert not any(k.endswith("pre_layrnorm") for k in groups)


def test_quantize_pass_excludes_nodes(bundle, tmp_path):
    import onnx

    from mmdeploy.artifact import load_reference
    from mmdeploy.passes.calibration import split_batch

    model = bundle / "vision" / "model.onnx"
    feeds = split_batch([f for f, _ in load_reference(bundle / "vision")])
    groups = quantizable_groups(model)
    keep = next(v for k, v in groups.items() if k.endswith("layers.0/mlp"))
    p = get_pass("quantize")
    config = p.config(method="ort-static", nodes_to_exclude=keep)
    result = p.run(model, tmp_path, config, PassContext(calibration=feeds, work_dir=tmp_path))
    assert result.report["nodes_excluded"] == keep
    q = onnx.load(str(tmp_path / "model.onnx"))
    dq_consumers = {i for n in q.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") for i in n.input
                    if i.endswith("_DequantizeLinear_Output")}
    excluded_inputs = {i for n in q.graph.node if n.name in keep for i in n.input}
    assert dq_consumers and not (excluded_inputs & dq_consumers)

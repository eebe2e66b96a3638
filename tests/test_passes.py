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
    groups = quantizable_groups(bundle / "vision" / "model.onnx")
    names = list(groups)
    assert any(n.endswith("layers.0/self_attn") for n in names) and any(n.endswith("layers.1/mlp") for n in names)
    assert sum(len(v) for v in groups.values()) >= 2 * 6 + 1  # q,k,v,out,fc1,fc2 per layer + projection


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

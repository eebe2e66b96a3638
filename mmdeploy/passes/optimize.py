"""``optimize``: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, QuickGelu...).

Fused nodes are ONNX Runtime contrib ops (domain ``com.microsoft``): the result runs on ONNX
Runtime only, so this pass is for the ``onnxruntime`` target, never before OpenVINO/TensorRT.

ORT's fusion matches one attention formulation; adapters export attention in that form
(:mod:`mmdeploy.models.attention`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from mmdeploy.passes.base import Pass, PassConfig, PassContext, PassResult, op_counts, op_diff

# model family -> onnxruntime.transformers.optimizer model_type
FAMILY_MODEL_TYPES = {"clip": "clip", "siglip": "clip", "blip": "vit", "clap": "bert", "hf-encoder": "bert"}
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
             "QuickGelu", "FastGelu", "Gelu", "BiasGelu")


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
        optimized = optimize_model(str(model_path), model_type=model_type, num_heads=config.num_heads,
                                   hidden_size=config.hidden_size, opt_level=config.opt_level,
                                   optimization_options=fusion)
        out = Path(output_dir) / "model.onnx"
        # save_model_to_file adds the com.microsoft opset import the fused nodes need
        optimized.save_model_to_file(str(out), use_external_data_format=optimized.model.ByteSize() > 1_900_000_000)
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

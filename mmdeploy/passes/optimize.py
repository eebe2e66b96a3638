"""``optimize``: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, QuickGelu...).

Fused nodes are ONNX Runtime contrib ops (domain ``com.microsoft``): the result runs on ONNX
Runtime only, so this pass is for the ``onnxruntime`` target, never before OpenVINO/TensorRT.

ORT's fusion matches one attention formulation.  Hugging Face's CLIP attention exports as
``Reshape → Transpose → Transpose`` for K (and SDPA variants), which matches nothing: on a plain
export ORT fuses only LayerNorms.  :func:`fusable_attention` is an export-time rewrite (for the
adapter's ``export_context``) giving the same math in the form the fusion expects::

    q = (x Wq + bq).reshape(B, N, H, D).permute(0, 2, 1, 3)
    k = (x Wk + bk).reshape(B, N, H, D).permute(0, 2, 3, 1)       # one Transpose
    v = (x Wv + bv).reshape(B, N, H, D).permute(0, 2, 1, 3)
    o = softmax(q @ k * scale [+ mask]) @ v → permute → reshape → out_proj
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path
from typing import Iterator, Literal

from mmdeploy.passes.base import Pass, PassConfig, PassContext, PassResult, op_counts, op_diff

# model family -> onnxruntime.transformers.optimizer model_type
FAMILY_MODEL_TYPES = {"clip": "clip", "siglip": "clip", "blip": "vit", "clap": "bert", "hf-encoder": "bert"}
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
             "QuickGelu", "FastGelu", "Gelu", "BiasGelu")


def _attention_forward(self, hidden_states, attention_mask=None, *args, **kwargs):
    import torch

    batch = hidden_states.shape[0]
    heads, dim = self.num_heads, self.head_dim
    q = self.q_proj(hidden_states).reshape(batch, -1, heads, dim).permute(0, 2, 1, 3)
    k = self.k_proj(hidden_states).reshape(batch, -1, heads, dim).permute(0, 2, 3, 1)
    v = self.v_proj(hidden_states).reshape(batch, -1, heads, dim).permute(0, 2, 1, 3)
    weights = torch.matmul(q, k) * self.scale
    if attention_mask is not None:
        weights = weights + attention_mask
    probs = torch.softmax(weights, dim=-1)
    out = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(batch, -1, heads * dim)
    return self.out_proj(out), None


def _is_attention(module) -> bool:
    return all(hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads",
                                            "head_dim", "scale"))


@contextlib.contextmanager
def fusable_attention(module) -> Iterator[int]:
    """Within the block, every CLIP/SigLIP-style attention of ``module`` (instances only, no
    global patch) computes in the form ONNX Runtime's attention fusion recognizes, and the
    module's configs use eager masks (a causal text mask is then an explicit additive input).
    Yields how many attention modules were rewritten; restores everything afterwards."""
    patched, configs = [], {}
    for sub in module.modules():
        if _is_attention(sub):
            patched.append((sub, sub.__dict__.get("forward")))
            sub.forward = types.MethodType(_attention_forward, sub)
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "_attn_implementation") and id(config) not in configs:
            # eager masks: an additive float mask is passed in (SDPA would pass None + is_causal)
            configs[id(config)] = (config, config._attn_implementation)
    for config, _ in configs.values():
        config._attn_implementation = "eager"
    try:
        yield len(patched)
    finally:
        for sub, previous in patched:
            if previous is None:
                del sub.forward
            else:
                sub.forward = previous
        for config, previous in configs.values():
            config._attn_implementation = previous


class OptimizeConfig(PassConfig):
    model_type: str = "auto"  # auto (from the family), clip, vit, bert, ...
    num_heads: int = 0  # 0: detected from the graph
    hidden_size: int = 0
    opt_level: Literal[0, 1, 2, 99] = 0  # 0: python fusions only (portable across ORT builds)


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
        optimized = optimize_model(str(model_path), model_type=model_type, num_heads=config.num_heads,
                                   hidden_size=config.hidden_size, opt_level=config.opt_level)
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

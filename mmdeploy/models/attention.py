"""Export-time attention rewrite: the same math in the form ONNX Runtime's attention fusion
recognizes.

Hugging Face's CLIP attention exports as ``Reshape → Transpose → Transpose`` for K (and SDPA
variants), which matches nothing in ORT's fusion: on a plain export ORT fuses only LayerNorms.
:func:`fusable_attention` rewrites attention (instances only, inside a context manager, never a
global patch) as::

    q = (x Wq + bq).reshape(B, N, H, D).permute(0, 2, 1, 3)
    k = (x Wk + bk).reshape(B, N, H, D).permute(0, 2, 3, 1)       # one Transpose
    v = (x Wv + bv).reshape(B, N, H, D).permute(0, 2, 1, 3)
    o = softmax(q @ k * scale [+ mask]) @ v → permute → reshape → out_proj

Adapters apply it around export (their ``export_context``).
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator


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


def restore_forwards(patched: list) -> None:
    """Undo instance-level ``forward`` rewrites: ``patched`` holds (module, previous forward or
    None when the class's own forward was in use)."""
    for sub, previous in patched:
        if previous is None:
            del sub.forward
        else:
            sub.forward = previous


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
        restore_forwards(patched)
        for config, previous in configs.values():
            config._attn_implementation = previous
